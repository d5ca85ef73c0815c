"""tune: Ray Tune search on tiny data (2 trials x 1 epoch), its CSV and best-config YAML, and the
search-space format."""

import math
import os
from pathlib import Path

import pytest
import yaml

from recbole_fmrl.config import PROPERTIES_DIR, Config
from recbole_fmrl.errors import PluginError
from recbole_fmrl.experiments import tune as tuning
from recbole_fmrl.runner import run

from conftest import read_csv

SPACE = """
hidden_size: {choice: [8, 16]}
_dropout: {uniform: [0.1, 0.8]}
r_min: {uniform: [0.0, 0.5]}
derived:
  hidden_dropout_prob: {from: _dropout}
  attn_dropout_prob: {from: _dropout}
  r_max: {from: r_min, add: 0.1}
  mrl_hidden_sizes: {doubling: hidden_size, smallest: 4}
"""


def test_two_trials_give_sorted_csv_and_a_usable_best_yaml(tiny_config, tmp_path):
    import ray

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    base = {k: v for k, v in tiny_config.items() if k != "hidden_size"}  # tuned: must not be overridden
    overrides = {**base, "modalities": ["id"], "n_layers": 1, "state": "warning"}
    rows = tuning.tune_model("fMRLRec", "tiny", str(space), num_samples=2, epochs=1, overrides=overrides,
                             out=str(tmp_path / "results"))
    assert not ray.is_initialized()  # Ray was shut down

    table = read_csv(tmp_path / "results" / "tiny" / "tune_fMRLRec.csv")
    assert len(table) == 2 and [r["trial_id"] for r in table] == [r["trial_id"] for r in rows]
    scores = [float(r["ndcg@10"]) for r in table]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    for row in table:
        assert row["epochs"] == "1" and row["error"] == "" and row["status"] == "done"
        assert row["last_ndcg@10"] == row["ndcg@10"]  # one epoch: best = last
        assert float(row["r_max"]) == pytest.approx(float(row["r_min"]) + 0.1, abs=1e-9)
        assert row["hidden_dropout_prob"] == row["attn_dropout_prob"]
        assert float(row["hidden_dropout_prob"]) == pytest.approx(float(row["_dropout"]), abs=1e-9)
        assert 0.1 <= float(row["_dropout"]) <= 0.8 and 0.0 <= float(row["r_min"]) <= 0.5
        sizes = [int(s) for s in row["mrl_hidden_sizes"].split()]
        assert sizes[0] == 4 and sizes[-1] == int(row["hidden_size"]) in (8, 16)

    best_file = tmp_path / "results" / "tiny" / "tune_best_fMRLRec.yaml"
    assert "partial" not in best_file.read_text().lower()
    best = yaml.safe_load(best_file.read_text())
    assert set(best) == {"hidden_size", "r_min", "r_max", "hidden_dropout_prob", "attn_dropout_prob", "mrl_hidden_sizes"}
    top = table[0]
    assert best["hidden_size"] == int(top["hidden_size"]) and best["r_max"] == pytest.approx(float(top["r_max"]))
    assert best["mrl_hidden_sizes"] == [int(s) for s in top["mrl_hidden_sizes"].split()]
    config = Config(model="fMRLRec", dataset="tiny", config_file_list=[str(best_file)], config_dict=dict(base))
    assert config["r_max"] == best["r_max"] and config["hidden_size"] == best["hidden_size"]

    # --resume continues the newest search of the model: a finished one keeps every trial, none runs again
    again_rows = tuning.tune_model("fMRLRec", "tiny", str(space), num_samples=2, epochs=1, overrides=overrides,
                                   out=str(tmp_path / "results"), resume=True)
    assert [(r["trial_id"], r["ndcg@10"], r["time_total_s"]) for r in again_rows] == \
        [(r["trial_id"], r["ndcg@10"], r["time_total_s"]) for r in rows]
    assert len(list((tmp_path / "results" / "tiny" / "ray_tune").glob("fMRLRec-*"))) == 1
    with pytest.raises(PluginError, match="no fMRLRec search to continue in .*elsewhere"):
        tuning.tune_model("fMRLRec", "tiny", str(space), num_samples=1, epochs=1, overrides=overrides,
                          out=str(tmp_path / "results"), storage=str(tmp_path / "elsewhere"), resume=True)

    # the best trial's validation score is reproduced by a plain run with the best YAML
    again = run("fMRLRec", "tiny", [str(best_file)], {**overrides, "epochs": 1}, saved=False)  # 1 thread, as the trial
    assert again["best_valid_score"] == pytest.approx(float(top["ndcg@10"]), abs=1e-4)


def test_a_stopped_search_is_marked_partial(tmp_path):
    from types import SimpleNamespace as Result

    def result(trial, score, done, error=None):
        metrics = {"trial_id": trial, "ndcg@10": score, "best_ndcg@10": score, "training_iteration": 3}
        return Result(metrics={**metrics, **({"done": True} if done else {})}, error=error, config={"n_layers": 1},
                      path=str(tmp_path / trial))

    grid = [result("a", 0.02, done=True), result("b", 0.05, done=False), result("c", None, False, RuntimeError("x"))]
    rows = tuning.trial_rows(grid, "ndcg@10", "max", {})
    assert [(r["trial_id"], r["status"]) for r in rows] == [("b", "unfinished"), ("a", "done"), ("c", "error")]
    space = {"n_layers": {"grid": [1, 2]}, "lr": {"choice": [1, 2, 3]}, "epochs": 5}
    assert tuning.trials_planned(space, 4) == 8 and tuning.trials_planned({"lr": {"choice": [1]}}, 4) == 4
    note = tuning.unfinished_note(rows, planned=4)  # a, c ended; b stopped; one never started
    assert note == "partial search: 2 of 4 trials ended, 1 unfinished (status column); --resume continues it"
    assert tuning.unfinished_note([r for r in rows if r["status"] != "unfinished"], planned=2) == ""
    best = tmp_path / "best.yaml"
    tuning.write_best_yaml(best, {"n_layers": 1}, "LRURec", "beauty", "ndcg@10", 0.05, "b", note)
    assert "# Partial search: 2 of 4 trials ended" in best.read_text() and yaml.safe_load(best.read_text()) == {"n_layers": 1}


def test_default_spaces_load_and_only_set_keys_their_model_uses():
    spaces = [(m, m) for m in ("fMRLRec", "LRURec", "SASRec", "BERT4Rec", "FMLPRec")]
    spaces += [(m, f"table2_{m}") for m in ("SASRec", "BERT4Rec", "FMLPRec", "LRURec", "fMRLRec")]  # Table 2's one protocol
    for model, name in spaces:
        space, derived = tuning.load_space(PROPERTIES_DIR / "tune" / f"{name}.yaml")
        keys = [k for k in space if not k.startswith("_")] + list(derived)
        known = tuning.model_keys(model, "tiny")
        assert keys and all(k in known for k in keys), (model, [k for k in keys if k not in known])
    space, derived = tuning.load_space(PROPERTIES_DIR / "tune" / "fMRLRec.yaml")
    assert space["hidden_size"] == {"choice": [64, 128, 256, 512, 1024, 2048]}  # the paper's grid
    assert space["n_layers"] == {"choice": [1, 2, 4, 8]}
    assert space["_dropout"] == {"uniform": [0.1, 0.8]} and space["r_min"] == {"uniform": [0.0, 0.5]}
    assert space["weight_decay"] == {"choice": [1e-6, 1e-4, 1e-2]}
    resolved = tuning.resolve({"hidden_size": 64, "n_layers": 2, "_dropout": 0.3, "weight_decay": 1e-4, "r_min": 0.25}, derived)
    assert resolved == {"hidden_size": 64, "n_layers": 2, "weight_decay": 1e-4, "r_min": 0.25, "r_max": 0.35,
                        "hidden_dropout_prob": 0.3, "attn_dropout_prob": 0.3, "mrl_hidden_sizes": [8, 16, 32, 64]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("hidden_size: {normal: [1, 2]}", "must be one of"),
        ("r_min: {uniform: [0.5, 0.1]}", "uniform takes"),
        ("r_min: {uniform: [0.1]}", "uniform takes"),
        ("hidden_size: {choice: []}", "choice takes"),
        ("r_min: {uniform: [0, 1]}\nderived:\n  r_max: {from: r_mn, add: 0.1}", "reads 'r_mn'"),
        ("r_min: {uniform: [0, 1]}\nderived:\n  r_max: {plus: r_min}", "derived r_max must be"),
        ("- a list", "must be a mapping"),
        ("a: [unclosed", "not valid YAML"),
    ],
)
def test_bad_search_space_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(PluginError, match=message):
        tuning.load_space(path)


def test_cli_rejects_unknown_keys_and_missing_space_before_starting_ray(tiny_config, tmp_path, monkeypatch):
    import ray

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    space = tmp_path / "space.yaml"
    space.write_text("hidden_size: {choice: [8]}\nnot_a_key: {choice: [1, 2]}\n")
    with pytest.raises(PluginError, match="sets keys fMRLRec does not use: not_a_key"):
        tuning.main(["--model", "fMRLRec", "--dataset", "tiny", "--space", str(space), f"--data_path={tmp_path}"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"  # RecBole's Config set it to gpu_id; a local Ray must see all GPUs
    space.write_text("hidden_size: {choice: [8]}\n")
    with pytest.raises(PluginError) as caught:
        tuning.main(["--model=fMRLRec", "--dataset=tiny", f"--space={space}", f"--data_path={tmp_path}", "--gpus_per_trial=2"])
    assert str(caught.value) == ("--gpus_per_trial=2: a trial is one process on one GPU (a fraction shares one); "
                                 "docs/tuning.md, Ray cluster")
    with pytest.raises(PluginError, match="search space not found"):
        tuning.main(["--model", "fMRLRec", "--dataset", "tiny", "--space", str(tmp_path / "none.yaml")])
    assert not ray.is_initialized()
    assert not Path(tmp_path / "results").exists()


def test_trial_resources_and_concurrency_come_from_the_cluster_nodes():
    small = [{"CPU": 1.0, "GPU": 0.0}, {"CPU": 1.0}]  # e.g. the 2-node cluster of test_tune_cluster
    assert tuning.trial_resources(small, use_gpu=True) == (1.0, 0.0, 2)
    nodes = [{"CPU": 16.0, "GPU": 4.0}, {"CPU": 8.0, "GPU": 2.0}, {"CPU": 2.0}]  # two GPU workers, a CPU-only head
    assert tuning.trial_resources(nodes, use_gpu=True) == (2.0, 1.0, 4 + 2 + 0)  # a trial runs on one node
    assert tuning.trial_resources(nodes, use_gpu=False) == (2.0, 0.0, 8 + 4 + 1)
    assert tuning.trial_resources(nodes, True, gpus_per_trial=0.5) == (2.0, 0.5, 8 + 4 + 0)
    assert tuning.trial_resources(nodes, True, cpus_per_trial=4, gpus_per_trial=0.5) == (4.0, 0.5, 4 + 2 + 0)
    assert tuning.trial_resources(nodes, True, max_concurrent=3) == (2.0, 1.0, 3)
    with pytest.raises(PluginError) as caught:
        tuning.trial_resources(nodes, True, cpus_per_trial=32, gpus_per_trial=0)
    assert str(caught.value) == ("no node of the Ray cluster (16 CPU/4 GPU, 8 CPU/2 GPU, 2 CPU/0 GPU) has 32 CPU and 0 GPU "
                                 "for one trial; lower --cpus_per_trial or --gpus_per_trial")
    out = Path("/data/results/beauty")
    assert tuning.storage_location(None, out) == "/data/results/beauty/ray_tune"
    assert tuning.storage_location("s3://bucket/sweeps", out) == "s3://bucket/sweeps"  # a URI reaches Ray as given
    assert tuning.storage_location("shared", out) == str(Path("shared").resolve())


RECBOLE_HYPER_FILE = """# RecBole's run_hyper.py format
learning_rate loguniform -8,0
hidden_size choice [8,16]
hidden_dropout_prob uniform 0.1,0.5
"""


def test_a_recbole_hyper_file_reads_as_recbole_reads_it(tmp_path):
    path = tmp_path / "hyper.test"
    path.write_text(RECBOLE_HYPER_FILE + "n_layers quniform 1,3,1\nmrl_hidden_sizes choice ['[4,8]','[8]']\n")
    space, derived = tuning.load_space(path)
    assert derived == {} and space == {
        "learning_rate": {"loguniform": [pytest.approx(math.exp(-8)), 1.0]},  # bounds are e^low, e^high
        "hidden_size": {"choice": [8, 16]}, "hidden_dropout_prob": {"uniform": [0.1, 0.5]},
        "n_layers": {"quniform": [1.0, 3.0, 1.0]}, "mrl_hidden_sizes": {"choice": ["[4,8]", "[8]"]}}
    path.write_text("learning_rate loguniform -8\nhidden_size choice [8,16]\n")
    with pytest.raises(PluginError) as caught:
        tuning.load_space(path)
    assert str(caught.value) == f"search space {path}, line 1: learning_rate loguniform takes low,high (exponents of e), got '-8'"
    path.write_text("hidden_size choice __import__('os')\n")  # read as a literal, never run
    with pytest.raises(PluginError, match=r"line 1: hidden_size choice takes \[v1,v2,\.\.\.\], got"):
        tuning.load_space(path)


def test_a_recbole_hyper_file_runs_a_two_trial_sweep(tiny_config, tmp_path, capsys):
    hyper = tmp_path / "hyper.test"
    hyper.write_text(RECBOLE_HYPER_FILE)
    flags = {**{k: v for k, v in tiny_config.items() if k not in ("hidden_size", "epochs")}, "modalities": "[id]", "n_layers": 1,
             "state": "warning"}
    assert tuning.main(["--model=fMRLRec", "--dataset=tiny", f"--space={hyper}", "--num_samples=2", "--epochs=1",
                        "--max_concurrent=1", f"--out={tmp_path / 'results'}", *(f"--{k}={v}" for k, v in flags.items())]) == 0
    table = read_csv(tmp_path / "results" / "tiny" / "tune_fMRLRec.csv")
    assert len(table) == 2 and all(row["epochs"] == "1" and row["error"] == "" for row in table)
    for row in table:
        assert math.exp(-8) <= float(row["learning_rate"]) <= 1.0 and 0.1 <= float(row["hidden_dropout_prob"]) <= 0.5
        assert row["hidden_size"] in ("8", "16") and 0 <= float(row["ndcg@10"]) <= 1
    best = yaml.safe_load((tmp_path / "results" / "tiny" / "tune_best_fMRLRec.yaml").read_text())
    assert best == {"learning_rate": pytest.approx(float(table[0]["learning_rate"])),
                    "hidden_size": int(table[0]["hidden_size"]),
                    "hidden_dropout_prob": pytest.approx(float(table[0]["hidden_dropout_prob"]))}
