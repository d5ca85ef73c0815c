"""The benchmark runner works end to end on tiny sizes (its numbers are not checked: not a benchmark)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def test_quick_tiny_run_writes_every_case_with_numeric_ratios(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "recbole_fmrl.benchmarks.run", "--quick", "--tiny", "--no-profile", "--threads", "1",
         "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["preset"] == "tiny"
    for key in ("torch", "device_name", "threads", "date", "git_commit"):
        assert key in result["machine"], key
    assert list(result["cases"]) == ["nested_train_step", "fmrl_layer", "independent_models", "sliced_top10", "lru_serving",
                                     "train_memory", "epoch_train_modes", "transformer_encoder", "sasrec_epoch",
                                     "sampled_softmax"]  # every case but funnel_retrieval (no --checkpoint), in order
    for case, rows in result["cases"].items():
        assert rows, case
        for row in rows:
            assert isinstance(row["ratio"], float) and math.isfinite(row["ratio"]) and row["ratio"] > 0, row
            assert row["status"] in ("PASS", "MISS", "INFO")
    goals = {case: [r for r in rows if r["goal"]] for case, rows in result["cases"].items()}
    assert all(goals[case] for case in ("nested_train_step", "fmrl_layer", "sliced_top10", "lru_serving",
                                        "epoch_train_modes", "transformer_encoder", "sasrec_epoch"))  # each goal judged
    assert len(result["cases"]["epoch_train_modes"]) == 3  # sequence / prefix for fMRLRec and LRURec, fMRLRec / LRURec
    assert len(result["cases"]["sliced_top10"]) == 4  # one row per nested size m in M = [8, 16, 32, 64]
    # SASRec sequence / prefix, then sampled / full CE for SASRec and fMRLRec at two catalogue sizes
    assert [r["label"].split(",")[0] for r in result["cases"]["sasrec_epoch"]] == [
        "epoch SASRec train_mode sequence / prefix"]
    assert [r["label"].split(",")[0] for r in result["cases"]["sampled_softmax"]] == [
        "train step SASRec sampled softmax 16 / full CE", "train step fMRLRec sampled softmax 16 / full CE"] * 2
    assert [r.get("n_items") for r in result["cases"]["sampled_softmax"]] == [500, 500, 2000, 2000]
    assert "PASS" in done.stdout or "MISS" in done.stdout  # the table is printed


def test_transformer_case_on_tiny_sizes():
    """transformer_encoder: the Transformer's nesting price in a train step and its cache update against re-encoding,
    each ratio the quotient of the times it reports, the cached and re-encoded users alike."""
    from recbole_fmrl.benchmarks.run import PRESETS, Bench

    bench = Bench(PRESETS["tiny"], torch.device("cpu"), profile_misses=False, log=lambda line: None)
    bench.transformer_encoder()
    train, lru, *serving = bench.rows
    assert {r["case"] for r in bench.rows} == {"transformer_encoder"} and [r["goal"] for r in bench.rows] == ["<= 1.15", None, ">= 5", ">= 5"]
    assert train["label"] == "train step fMRLRec-Transformer M=[8..64] / M=[64], D=64"
    for r in bench.rows:  # judged on one clock: CPU seconds with one thread on a CPU, else wall
        assert r["clock"] == ("cpu_median_s" if torch.get_num_threads() == 1 else "median_s") and r["wall_ratio"] > 0
    for r in (train, lru):
        assert r["ratio"] == pytest.approx(r["nested_ms"] / r["single_size_ms"], rel=1e-2)
    assert [r["users"] for r in serving] == [1, 4]
    for r in serving:
        assert r["ratio"] == pytest.approx(r["reencode_ms"] / r["update_ms"], rel=1e-2)
        assert r["same_representation"] is True and "re-encode 10 items" in r["label"]


@pytest.mark.parametrize("cases, unknown", [("fmrl_layer,az", "['az']"), ("a", "['a']"), (",", "[',']")])
def test_cli_rejects_unknown_cases(tmp_path, capsys, cases, unknown):
    from recbole_fmrl.benchmarks.run import main
    from recbole_fmrl.errors import main_guarded

    capsys.readouterr()  # what importing torch's extensions may print
    with pytest.raises(SystemExit) as exit_info:
        main_guarded(lambda: main(["--tiny", "--cases", cases, "--out", str(tmp_path / "x.json")]))
    assert exit_info.value.code == 2 and not (tmp_path / "x.json").exists()
    assert capsys.readouterr().err.splitlines() == [
        f"error: unknown cases {unknown} in --cases; choose among nested_train_step, fmrl_layer, independent_models, "
        "sliced_top10, lru_serving, train_memory, epoch_train_modes, transformer_encoder, sasrec_epoch, "
        "sampled_softmax, funnel_retrieval"]


def test_funnel_case_on_a_tiny_trained_checkpoint(tmp_path, monkeypatch):
    """funnel_retrieval end to end on a tiny trained fMRLRec with text + image features: a quality row per
    (m, K, index), the large-catalogue rows with their goals, each ratio the quotient of the
    measurements it reports."""
    from recbole_fmrl.benchmarks.funnel import funnel_case
    from recbole_fmrl.benchmarks.run import PRESETS, Bench, row
    from conftest import write_multimodal_tiny
    from recbole_fmrl.runner import run

    monkeypatch.chdir(tmp_path)
    data_path = write_multimodal_tiny(tmp_path, n_items=40)
    trained = run("fMRLRec", "tiny", config_dict={
        "data_path": data_path, "checkpoint_dir": str(tmp_path / "saved"), "epochs": 1, "hidden_size": 16,
        "mrl_hidden_sizes": [4, 8, 16], "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 10, "use_gpu": False,
        "show_progress": False, "modalities": ["text", "image"],
        "feature_files": {"text": "tiny.text.npy", "image": "tiny.image.npy"}})
    bench = Bench(PRESETS["tiny"], torch.device("cpu"), log=lambda line: None)
    funnel_case(bench, trained["checkpoint"], "tiny", row)
    rows = bench.rows
    assert {r["case"] for r in rows} == {"funnel_retrieval"}
    quality = [r for r in rows if "NDCG@10 funnel" in r["label"]]
    assert [(r["m"], r["K"], r["index"]) for r in quality] == [(4, 10, "flat"), (8, 10, "hnsw")]
    for r in quality:
        assert 0 <= r["ndcg10_funnel"] <= 1 and 0 < r["ndcg10_exact"] <= 1
        assert r["ratio"] == pytest.approx(r["ndcg10_funnel"] / r["ndcg10_exact"])
    large = [r for r in rows if r["label"].startswith("5,000 items")]
    others = [(r["K"], r["index"]) for r in rows if r["label"].startswith("  5,000 items")]
    # the other index (share found, speed-up), the exact-search ceiling, then the other K
    assert others == [(50, "ivf"), (50, "ivf"), (50, "flat"), (20, "ivfpq")]
    assert [(r["goal"], r["index"]) for r in large] == [(">= 0.95", "ivfpq"), (">= 5", "ivfpq")]
    assert 0 <= large[0]["top10_found"] <= 1 and large[0]["ratio"] == large[0]["top10_found"]
    assert large[1]["ratio"] == pytest.approx(large[1]["exact_ms"] / large[1]["funnel_ms"], rel=1e-2)
