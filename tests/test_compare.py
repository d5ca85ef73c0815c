"""compare: Table 2 / Table 3 tables from real runs, the run cache, per-size results (Figure 3)
and parameter counts of freshly built models (Figure 4)."""

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from recbole_fmrl.config import REPORTED_METRICS, Config, config_keys, get_model
from recbole_fmrl.errors import PluginError, main_guarded
from recbole_fmrl.experiments import compare, params, reports
from recbole_fmrl.files import write_json_atomic
from recbole_fmrl.model import fMRLRec
from recbole_fmrl.model.layers import FMRLLinear, count_parameters

from conftest import read_csv, write_tiny_inter

REPO = Path(__file__).resolve().parent.parent
MODELS = ["SASRec", "fMRLRec"]
FMRL = {"modalities": ["id"], "mrl_hidden_sizes": [4, 8, 16], "n_layers": 1}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One real compare on a tiny dataset: SASRec and fMRLRec (id modality), 1 epoch each."""
    root = tmp_path_factory.mktemp("compare")
    write_tiny_inter(root)
    overrides = {
        "data_path": str(root), "checkpoint_dir": str(root / "saved"), "epochs": 1, "train_batch_size": 64,
        "eval_batch_size": 64, "show_progress": False, "use_gpu": False, "hidden_size": 16,
        "MAX_ITEM_LIST_LENGTH": 10, "state": "warning", **FMRL,
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # RecBole writes log/ into the working directory
        results = compare.compare("tiny", MODELS, overrides=overrides, out=str(root / "results"))
    return {"root": root, "out": root / "results", "dir": root / "results" / "tiny", "overrides": overrides,
            "results": results}


def markdown_rows(path):
    """``{label: [cell, ...]}`` of the first markdown table in ``path``."""
    rows = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("## "):
            break
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_comparison_tables_match_the_runs_json(compared):
    folder = compared["dir"]
    records = {m: json.loads((folder / "runs" / f"{m}.json").read_text()) for m in MODELS}
    for model, record in records.items():
        assert record["model"] == model and record["epochs_run"] == 1 and record["best_epoch"] == 0
        assert record["settings"]["overrides"] == compared["overrides"]  # the same overrides for all
        assert record["git_commit"] == reports.git_commit()
    # same seed, split and evaluator for every model
    assert records["SASRec"]["config"]["data_path"] == records["fMRLRec"]["config"]["data_path"]

    rows = {row["Model"]: row for row in read_csv(folder / "comparison.csv")}
    assert list(rows) == MODELS
    for model, record in records.items():
        row = rows[model]
        for metric in REPORTED_METRICS:
            assert float(row[metric]) == record["test_result"][metric]
        assert int(row["epochs_run"]) == record["epochs_run"] == 1
        assert int(row["best_epoch"]) == record["best_epoch"]
        assert float(row["wall_time"]) == record["wall_time"]
        assert int(row["num_params"]) == record["num_params"] > 0
        assert row["git_commit"] == record["git_commit"]
        assert json.loads(row["overrides"]) == compared["overrides"]
        assert row["status"] == "ok"

    md = markdown_rows(folder / "comparison.md")
    assert md["Model"] == ["N@5", "R@5", "N@10", "R@10"]
    for column, metric in enumerate(REPORTED_METRICS):
        values = {m: records[m]["test_result"][metric] for m in MODELS}
        top = max(values.values())
        for model, value in values.items():
            cell = md[model][column]
            text = f"{value:.4f}"
            if value == top:
                assert cell == f"**{text}**"
            else:  # two models: the other one is second
                assert cell == f"<u>{text}</u>"
    details = (folder / "comparison.md").read_text()
    assert f"| SASRec | 1 | 0 | {records['SASRec']['wall_time']} | {records['SASRec']['num_params']:,} |" in details


def test_table2_has_one_row_per_run_and_protocol_with_the_command_that_trains_it(compared):
    folder = compared["dir"]
    records = {m: json.loads((folder / "runs" / f"{m}.json").read_text()) for m in MODELS}
    rows = read_csv(folder / "table2.csv")
    assert list(rows[0]) == list(reports.TABLE2_COLUMNS)
    by_key = {(row["model"], row["exclude_seen"]): row for row in rows}
    assert set(by_key) == {(label, protocol) for label in ("SASRec (prefixes, 1 block)", "fMRLRec [id] (1 block)")
                           for protocol in ("True", "False")}
    for (label, protocol), row in by_key.items():
        record = records["SASRec" if label.startswith("SASRec") else "fMRLRec"]
        test = record["test_result_by_protocol"]["seen_excluded" if protocol == "True" else "seen_ranked"]
        assert [float(row[m]) for m in REPORTED_METRICS] == [test[m] for m in REPORTED_METRICS]
        assert (row["valid_exclude_seen"], row["epochs"], row["best_epoch"], row["converged"], row["seed"]) == \
            ("False", "1", "0", "False", "2020")  # 1 epoch of epochs: 1 is an epoch cap, not early stopping
        assert float(row["seconds_per_epoch"]) > 0 and row["device"] == "cpu" and row["dataset"] == "tiny"
        assert row["command"].startswith(f"python -m recbole_fmrl.experiments.compare --dataset=tiny --models={record['label']} ")
        words = shlex.split(row["command"])
        assert "--hidden_size=16" in words and '--modalities=["id"]' in words


@pytest.mark.parametrize("overrides, label", [
    ({"train_mode": "sequence", "softmax_negatives": 256}, "SASRec (every position, sampled softmax 256)"),
    ({"train_mode": "sequence", "softmax_negatives": 8, "shared_negatives": False},
     "SASRec (every position, sampled softmax 8 per position)"),
    ({"train_mode": "sequence"}, "SASRec (every position, full CE)"),
    ({}, "SASRec (prefixes)"),
])
def test_run_labels_say_how_sasrec_was_trained(overrides, label):
    assert reports.run_label({"model": "SASRec", "config": overrides}) == label


def test_run_labels_of_the_causal_models_name_only_what_differs_from_their_defaults():
    assert reports.run_label({"model": "LRURec", "config": {}}) == "LRURec"
    assert reports.run_label({"model": "LRURec", "config": {"train_mode": "prefix"}}) == "LRURec (prefixes)"
    record = {"model": "fMRLRec", "config": {"softmax_negatives": 64}, "modalities": ["text", "id"]}
    assert reports.run_label(record) == "fMRLRec [text, id] (sampled softmax 64)"
    record["config"]["train_exclude_seen"] = True
    assert reports.run_label(record) == "fMRLRec [text, id] (sampled softmax 64, seen items out of the training softmax)"
    assert reports.run_label({"model": "UniSRec", "table_label": "UniSRec (text)", "config": {}}) == "UniSRec (text)"
    record = {"model": "fMRLRec", "config": {"encoder": "transformer", "mrl_hidden_sizes": [8]}, "modalities": ["id"]}
    assert reports.run_label(record) == "fMRLRec-Transformer [id] (one size 8, not nested)"
    record["config"] = {"encoder": "transformer", "n_layers": 1, "mrl_loss_weights": [8, 4, 2, 1], "mrl_lr_exponent": 1.5}
    assert reports.run_label(record) == "fMRLRec-Transformer [id] (1 block, loss weights [8, 4, 2, 1], rate exponent 1.5)"
    record["config"] = {"n_layers": 2, "mrl_lr_exponent": 0}
    assert reports.run_label(record) == "fMRLRec [id] (2 blocks)"
    record["config"] = {"r_min": 0.8, "r_max": 0.99}
    assert reports.run_label(record) == "fMRLRec [id] (ring r_min 0.8, r_max 0.99)"
    record["config"] = {"hidden_dropout_prob": 0.2}
    assert reports.run_label(record) == "fMRLRec [id]"
    record["config"] = {"hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5}
    assert reports.run_label(record) == "fMRLRec [id] (dropout 0.5)"
    assert reports.run_label({"model": "BERT4Rec", "config": {"train_mode": "sequence"}}) == \
        "BERT4Rec (one masked sequence per user)"
    assert reports.run_label({"model": "BERT4Rec", "config": {}}) == "BERT4Rec"


def test_rerun_skips_cached_models_and_force_runs_them_again(compared, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(compared["out"], out)
    runs = out / "tiny" / "runs"
    mtimes = {p.name: p.stat().st_mtime_ns for p in runs.iterdir()}
    csv_before = (out / "tiny" / "comparison.csv").read_text()

    def must_not_run(*args, **kwargs):
        raise AssertionError("a cached model was run again")

    results = compare.compare("tiny", MODELS, overrides=compared["overrides"], out=str(out), runner=must_not_run)
    assert {p.name: p.stat().st_mtime_ns for p in runs.iterdir()} == mtimes
    assert (out / "tiny" / "comparison.csv").read_text() == csv_before
    assert results["SASRec"]["test_result"] == compared["results"]["SASRec"]["test_result"]

    calls = []

    def fake_run(model, dataset, config_file_list=None, config_dict=None, **kwargs):
        calls.append((model, config_dict))
        value = 0.5 if model == "SASRec" else 0.25
        return {"model": model, "dataset": dataset, "test_result": {m: value for m in REPORTED_METRICS},
                "sizes": {}, "epochs_run": 7, "best_epoch": 3, "wall_time": 1.5, "num_params": 42, "config": {}}

    compare.compare("tiny", MODELS, overrides=compared["overrides"], out=str(out), force=True, runner=fake_run)
    assert [c[0] for c in calls] == MODELS and all(c[1] == compared["overrides"] for c in calls)
    assert all(p.stat().st_mtime_ns != mtimes[p.name] for p in runs.iterdir())
    rows = {row["Model"]: row for row in read_csv(out / "tiny" / "comparison.csv")}
    assert float(rows["SASRec"]["ndcg@10"]) == 0.5 and rows["fMRLRec"]["epochs_run"] == "7"
    md = markdown_rows(out / "tiny" / "comparison.md")
    assert md["SASRec"] == ["**0.5000**"] * 4 and md["fMRLRec"] == ["<u>0.2500</u>"] * 4

    # changed overrides: the cached run no longer matches, so that model runs again
    calls.clear()
    compare.compare("tiny", ["SASRec"], overrides={**compared["overrides"], "epochs": 2}, out=str(out), runner=fake_run)
    assert [c[0] for c in calls] == ["SASRec"]

    # a config file for one model only; editing it invalidates that model's cached run
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text("r_min: 0.2\n")
    files_seen = []

    def recording_run(model, dataset, config_file_list=None, config_dict=None, **kwargs):
        files_seen.append((model, config_file_list))
        return fake_run(model, dataset, config_file_list, config_dict)

    def again():
        compare.compare("tiny", MODELS, overrides={**compared["overrides"], "epochs": 2}, out=str(out), runner=recording_run,
                        model_config_files={"fMRLRec": [str(tuned)]})

    again()
    assert files_seen == [("fMRLRec", [str(tuned)])]  # SASRec ran with these settings just above: cached
    again()
    assert len(files_seen) == 1
    tuned.write_text("r_min: 0.3\n")
    again()
    assert files_seen[1:] == [("fMRLRec", [str(tuned)])]


def test_sizes_csv_comes_from_the_trained_fmrlrec_run(compared, tmp_path):
    record = json.loads((compared["dir"] / "runs" / "fMRLRec.json").read_text())
    sizes = record["sizes"]
    assert sorted(map(int, sizes)) == FMRL["mrl_hidden_sizes"]
    assert sizes["16"] == record["test_result"]  # the full size is the model's test result
    rows = read_csv(compared["dir"] / "sizes.csv")
    assert [int(r["size"]) for r in rows] == [4, 8, 16]
    for previous, row in zip([None] + rows[:-1], rows):
        for metric in REPORTED_METRICS:
            assert float(row[metric]) == sizes[row["size"]][metric]
        for metric in ("ndcg@10", "recall@10"):
            if previous is None:
                assert row[f"{metric}_drop"] == ""
            else:  # metric(m/2) / metric(m) - 1
                expected = sizes[previous["size"]][metric] / sizes[row["size"]][metric] - 1
                assert float(row[f"{metric}_drop"]) == pytest.approx(expected, rel=1e-12)
                assert int(previous["size"]) * 2 == int(row["size"])
    png = (compared["dir"] / "sizes.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # --sizes-from writes the same table from the run file
    compare.main(["--sizes-from", str(compared["dir"] / "runs" / "fMRLRec.json"), "--out", str(tmp_path)])
    assert (tmp_path / "tiny" / "sizes.csv").read_text() == (compared["dir"] / "sizes.csv").read_text()
    with pytest.raises(PluginError, match="no per-size results"):
        compare.main(["--sizes-from", str(compared["dir"] / "runs" / "SASRec.json"), "--out", str(tmp_path)])


def test_ablation_table_and_unavailable_modalities(compared):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(compared["root"])
        results = compare.ablation("tiny", compare.parse_modality_sets("id;text,image"),
                                   overrides=compared["overrides"], out=str(compared["out"]))
    record = results["id"]
    # modalities=[id] is what the comparison's fMRLRec used: that run is reused, not repeated
    assert record == json.loads((compared["dir"] / "runs" / "fMRLRec.json").read_text())
    assert not (compared["dir"] / "runs" / "fMRLRec-id.json").exists()
    assert results["text+image"].startswith("not available: no feature file for modality 'text'")
    assert not (compared["dir"] / "runs" / "fMRLRec-text+image.json").exists()  # failures are not cached
    md = markdown_rows(compared["dir"] / "ablation.md")
    assert md["Modalities"] == ["N@5", "R@5", "N@10", "R@10"]
    assert md["id"] == [f"**{record['test_result'][m]:.4f}**" for m in REPORTED_METRICS]
    assert md["text+image"][0].startswith("not available: no feature file for modality 'text'")
    assert "&lt;file.npy&gt;" in md["text+image"][0]  # no raw HTML in the md
    rows = {r["Modalities"]: r for r in read_csv(compared["dir"] / "ablation.csv")}
    assert rows["text+image"]["status"] == results["text+image"] and rows["text+image"]["ndcg@10"] == ""
    assert float(rows["id"]["recall@10"]) == record["test_result"]["recall@10"]

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(compared["root"])
        forced = compare.ablation("tiny", [["id"]], overrides=compared["overrides"], out=str(compared["root"] / "forced"), force=True)
    # run again for real: same seed and data, same numbers
    assert forced["id"]["test_result"] == compared["results"]["fMRLRec"]["test_result"]
    assert forced["id"]["settings"]["overrides"]["modalities"] == ["id"] and forced["id"]["modalities"] == ["id"]


class Items:
    """Stand-in dataset written for this test (not the one in reports)."""

    def __init__(self, n, dims):
        self.n, self.dims = n, dims

    def num(self, field):
        return self.n

    def item_features(self, modality):
        return torch.zeros(self.n, self.dims[modality])


def fresh_counts(sizes, overrides):
    config = Config(model="fMRLRec", dataset="tiny", config_dict={
        **overrides, "hidden_size": sizes[-1], "mrl_hidden_sizes": sizes, "eval_size": sizes[-1], "use_gpu": False})
    model = fMRLRec(config, Items(31, {"text": 12}))
    dense = sum(p.numel() for p in model.parameters() if p.requires_grad)
    zeros = sum(int(layer.zero_mask.sum()) for layer in model.modules() if isinstance(layer, FMRLLinear))
    encoder = sum(p.numel() for name, p in model.named_parameters() if name.startswith("encoder."))
    assert count_parameters(model) == dense - zeros > 0
    return dense - zeros, dense, encoder


def test_params_csv_equals_counts_of_freshly_built_models(tmp_path):
    compare.main(["--dataset", "tiny", "--params", "--params-sizes", "8,16,32", "--feature-dims", "text=12",
                  "--item-num", "30", "--out", str(tmp_path), "--modalities=[text,id]", "--n_layers=1"])
    rows = read_csv(tmp_path / "tiny" / "params.csv")
    overrides = {"modalities": ["text", "id"], "n_layers": 1}
    fresh = {D: fresh_counts([s for s in (8, 16, 32) if s <= D], overrides) for D in (8, 16, 32)}
    assert [int(r["D"]) for r in rows] == [8, 16, 32]
    for row in rows:
        D = int(row["D"])
        series, dense, encoder = fresh[D]
        assert int(row["series"]) == series and int(row["series_dense"]) == dense
        assert int(row["series_encoder_dense"]) == encoder
        smaller = [fresh[d] for d in fresh if d <= D]  # independent size-m models, M = [8 ... m]
        assert int(row["independent"]) == sum(c[0] for c in smaller)
        assert int(row["independent_dense"]) == sum(c[1] for c in smaller)
        assert int(row["independent_encoder_dense"]) == sum(c[2] for c in smaller)
        assert float(row["saving_rate"]) == pytest.approx(1 - series / sum(c[0] for c in smaller), abs=1e-15)
        assert float(row["saving_rate_dense"]) == pytest.approx(1 - dense / sum(c[1] for c in smaller), abs=1e-15)
        assert float(row["paper_saving"]) == pytest.approx(sum(c[2] for c in smaller) / encoder - 1, abs=1e-15)
        assert row["paper_figure4"] == ""  # the paper's numbers are for M starting at 128
    assert float(rows[0]["saving_rate"]) == 0.0  # a series of one size saves nothing
    assert 0 < float(rows[1]["saving_rate"]) < float(rows[2]["saving_rate"]) < 1
    assert fresh[32][0] < fresh[32][1]  # masked fMRL entries are not counted
    assert (tmp_path / "tiny" / "params.png").read_bytes()[:4] == b"\x89PNG"

    # single: each independent model is a plain size-m model (M = [m], no structural zeros)
    single = params.parameter_rows("tiny", [8, 16, 32], 30, {"text": 12}, config_dict=overrides, independent="single")
    plain = [fresh_counts([m], overrides)[0] for m in (8, 16, 32)]
    assert [r["independent"] for r in single] == [plain[0], plain[0] + plain[1], sum(plain)]
    assert [r["series"] for r in single] == [int(r["series"]) for r in rows]


def test_paper_figure4_saving_rates_are_reproduced():
    """M = [2^7 ... D]: the paper's rates are (independent − series) / series of the dense
    sequence-encoder parameters; our real models give them to within 0.05 point."""
    rows = params.parameter_rows("beauty", item_num=10, config_dict={"modalities": ["id"], "n_layers": 1})
    printed = {128: 0.0, 256: 25.16, 512: 31.39, 1024: 32.90, 2048: 33.25}  # the paper's Figure 4, in %
    assert {r["D"]: r["paper_figure4"] for r in rows} == printed
    for row in rows:
        assert abs(100 * row["paper_saving"] - printed[row["D"]]) < 0.05
        assert row["saving_rate"] == 1 - row["series"] / row["independent"]
    # the plain rate 1 − series/Σ independent (structural zeros not counted) does not follow the paper
    assert abs(100 * rows[-1]["saving_rate"] - 33.25) > 1


def test_best_and_second_marks_with_ties_and_missing_values():
    assert reports.rank_marks([0.3, 0.5, 0.5, 0.1, None, float("nan")]) == [
        "second", "best", "best", None, None, None]
    md = reports.metric_table_markdown(
        [("a", {"ndcg@5": 0.1}), ("b", {"ndcg@5": 0.2}), ("c", "not available: x <y> | z")], "Model", ["ndcg@5"])
    assert "| a | <u>0.1000</u> |" in md and "| b | **0.2000** |" in md
    assert "| c | not available: x &lt;y&gt; \\| z |" in md


def test_bad_input_gives_one_line(tmp_path, capsys):
    argv = ["--dataset", "tiny", "--models", "SASRec,NoSuchModel", f"--data_path={tmp_path}", "--out", str(tmp_path / "results")]
    with pytest.raises(SystemExit) as exit_info:
        main_guarded(lambda: compare.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()]  # one line
    assert err.startswith("error: unknown model 'NoSuchModel'")
    assert not (tmp_path / "results").exists()  # nothing ran
    with pytest.raises(PluginError, match="unknown modality 'audio'"):
        compare.parse_modality_sets("text;audio")
    with pytest.raises(PluginError, match="--params_sizes"):
        compare.parse_sizes("128,64", "--params_sizes")
    with pytest.raises(SystemExit):
        compare.build_parser().parse_args(["--dataset=tiny", "--epochs"])
    assert capsys.readouterr().err.splitlines() == ["error: --epochs needs a value: --epochs=VALUE"]
    args = compare.build_parser().parse_args(["--dataset=tiny", "--modalities=[text,image]", "--epochs=3", "--learning_rate=1e-4"])
    assert args.overrides == {"modalities": ["text", "image"], "epochs": 3, "learning_rate": "1e-4"}


def test_model_entries_carry_their_own_settings_and_rows_follow_the_papers_groups(tmp_path):
    calls = []

    def fake_run(model, dataset, config_file_list=None, config_dict=None, **kwargs):
        calls.append((model, config_dict))
        value = {"SASRec": 0.4, "UniSRec": 0.3, "VQRec": 0.2, "fMRLRec": 0.1}[model]
        labels = {"UniSRec": f"UniSRec ({config_dict.get('train_stage')})", "VQRec": "VQRec, no pre-training"}
        record = {"model": model, "dataset": dataset, "test_result": {m: value for m in REPORTED_METRICS},
                  "sizes": {}, "epochs_run": 1, "best_epoch": 0, "wall_time": 1.0, "num_params": 5, "config": {}}
        return {**record, "table_label": labels[model]} if model in labels else record

    models = ["fMRLRec", "UniSRec@train_stage=inductive_ft", "SASRec", "VQRec", "UniSRec@train_stage=transductive_ft"]
    results = compare.compare("tiny", models, overrides={"epochs": 3}, out=str(tmp_path), runner=fake_run)
    assert list(results) == models
    assert calls[1] == ("UniSRec", {"epochs": 3, "train_stage": "inductive_ft"})
    assert [c[1] for c in calls if c[0] != "UniSRec"] == [{"epochs": 3}] * 3  # settings stay with their entry
    assert (tmp_path / "tiny" / "runs" / "UniSRec@train_stage=transductive_ft.json").is_file()

    rows = read_csv(tmp_path / "tiny" / "comparison.csv")
    assert [(r["Model"], r["group"]) for r in rows] == [
        ("SASRec", "ID-based"), ("UniSRec (inductive_ft)", "text-based"), ("VQRec, no pre-training", "text-based"),
        ("UniSRec (transductive_ft)", "text-based"), ("fMRLRec", "multimodal")]
    md = [line.split("|")[1].strip() for line in (tmp_path / "tiny" / "comparison.md").read_text().splitlines()
          if line.startswith("| ") and not line.startswith("| Model |")]
    assert md[:8] == ["**ID-based**", "SASRec", "**text-based**", "UniSRec (inductive_ft)", "VQRec, no pre-training",
                      "UniSRec (transductive_ft)", "**multimodal**", "fMRLRec"]
    assert md[8:] == [row["Model"] for row in rows]  # the runs table: no group rows
    assert compare.parse_model_entry("VQRec@code_cap=64@seed=3") == ("VQRec", {"code_cap": 64, "seed": 3})
    with pytest.raises(PluginError, match="expected MODEL or MODEL@key=value"):
        compare.parse_model_entry("UniSRec@train_stage")


def test_an_interrupted_run_is_resumed_by_the_next_compare_and_equals_an_uninterrupted_one(compared, tmp_path, monkeypatch):
    monkeypatch.chdir(compared["root"])
    overrides = {**compared["overrides"], "epochs": 3, "checkpoint_dir": str(tmp_path / "saved")}
    from recbole_fmrl.runner import run

    def interrupted_after_epoch_1(*args, **kwargs):
        def stop(epoch, score):
            if epoch == 1:
                raise KeyboardInterrupt
        return run(*args, callback=stop, **kwargs)

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        compare.compare("tiny", ["SASRec"], overrides=overrides, out=str(out), runner=interrupted_after_epoch_1)
    partial = reports.read_json(out / "tiny" / "runs" / "SASRec.partial.json")
    assert Path(partial["checkpoint"]).is_file() and not (out / "tiny" / "runs" / "SASRec.json").exists()

    trained_before = Path(partial["checkpoint"]).stat().st_mtime - partial["started"]
    calls, own_times = [], []

    def recording_run(*args, **kwargs):
        calls.append(kwargs["resume"])
        result = run(*args, **kwargs)
        own_times.append(result["wall_time"])
        return result

    resumed = compare.compare("tiny", ["SASRec"], overrides=overrides, out=str(out), runner=recording_run)["SASRec"]
    assert calls == [partial["checkpoint"]] and resumed["resumed_from"] == partial["checkpoint"]
    assert not (out / "tiny" / "runs" / "SASRec.partial.json").exists()
    uninterrupted = compare.compare("tiny", ["SASRec"], overrides={**overrides, "checkpoint_dir": str(tmp_path / "s2")},
                                    out=str(tmp_path / "straight"))["SASRec"]
    assert resumed["epochs_run"] == uninterrupted["epochs_run"] == 3
    assert resumed["test_result"] == uninterrupted["test_result"]
    assert resumed["wall_time"] == pytest.approx(own_times[0] + trained_before, abs=0.02) and trained_before > 0

    # --force starts over instead of resuming a recorded interruption
    write_json_atomic(out / "tiny" / "runs" / "SASRec.partial.json", partial)
    calls.clear()
    compare.compare("tiny", ["SASRec"], overrides=overrides, out=str(out), force=True, runner=recording_run)
    assert calls == [None]


def test_the_table2_script_queues_valid_compare_runs_of_every_model_on_every_dataset():
    done = subprocess.run(["bash", "scripts/table2_runs.sh"], cwd=REPO, env={**os.environ, "DRY_RUN": "1"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    runs, logs = set(), []
    for line in done.stdout.splitlines():
        command, log = line.split(" >> ")
        argv = shlex.split(command)
        assert argv[1:3] == ["-m", "recbole_fmrl.experiments.compare"]
        args = compare.build_parser().parse_args(argv[3:])
        assert set(args.overrides) <= config_keys() and args.overrides["exclude_seen"] is True
        assert args.overrides["torch_num_threads"] == 1 and args.out == "results/table2"
        model = compare.parse_model_entry(args.models)[0]
        get_model(model)
        runs.add((args.dataset, model, args.models))
        assert log.startswith(f"results/table2/logs/{args.dataset}-") and log.endswith(".log 2>&1")
        logs.append(log)
    for dataset in ("beauty", "sports", "toys", "clothing"):
        assert {model for d, model, _ in runs if d == dataset} >= {"SASRec", "BERT4Rec", "FMLPRec", "LRURec", "fMRLRec"}
    assert {model for d, model, _ in runs if d == "beauty"} == {"SASRec", "BERT4Rec", "FMLPRec", "LRURec", "fMRLRec",
                                                                "UniSRec", "VQRec"}
    assert len(set(logs)) == len(logs) == len(runs) == 50  # one log per run (46 of the table, 4 of the hypotheses on Beauty)


def test_the_table2_script_runs_every_queued_command_and_fails_when_one_fails(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "table2_runs.sh", tmp_path / "scripts")
    (tmp_path / "--modalities=t").touch()  # a file a flag could glob to
    stub = tmp_path / "python"
    stub.write_text('#!/bin/bash\ncase "$*" in *BERT4Rec*) exit 3;; esac\necho "$@"\n')
    stub.chmod(0o755)
    done = subprocess.run(["bash", "scripts/table2_runs.sh", "3"], cwd=tmp_path, env={**os.environ, "PYTHON": str(stub)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stdout.count("table2_runs: failed") == 4  # BERT4Rec on each dataset
    logs = tmp_path / "results" / "table2" / "logs"
    assert len(list(logs.iterdir())) == 50
    assert "--modalities=[id] --mrl_lr_exponent=1.5 --mrl_loss_weights=[8,4,2,1]" in (logs / "toys-fMRLRec.log").read_text()
    subprocess.run(["bash", "scripts/table2_runs.sh"], cwd=tmp_path, env={**os.environ, "PYTHON": str(stub)},
                   capture_output=True, timeout=120)
    assert len((logs / "toys-fMRLRec.log").read_text().splitlines()) == 2  # a rerun appends to each log
