"""Train once, deploy anywhere: every size-m export evaluates exactly like the size-m row of training."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recbole_fmrl.deploy.evaluate import evaluate
from recbole_fmrl.deploy.export import export
from recbole_fmrl.errors import PluginError
from recbole_fmrl.runner import run

REPO = Path(__file__).resolve().parent.parent
SIZES = [4, 8, 16]


@pytest.fixture
def trained(tiny_config):
    config = {**tiny_config, "hidden_size": 16, "mrl_hidden_sizes": SIZES, "modalities": ["id"], "n_layers": 1}
    return run("fMRLRec", "tiny", config_dict=config)


def test_each_size_export_equals_its_training_row(trained, tmp_path):
    assert list(trained["sizes"]) == [str(m) for m in SIZES]
    assert trained["sizes"]["16"] == trained["test_result"]
    param_counts = []
    for size in SIZES:
        out = tmp_path / f"fMRLRec-{size}.pth"
        param_counts.append(export(trained["checkpoint"], size, str(out)))
        exported = torch.load(out, weights_only=True)
        assert exported["overrides"]["hidden_size"] == size
        assert exported["overrides"]["mrl_hidden_sizes"] == SIZES[: SIZES.index(size) + 1]
        measured = evaluate(str(out), dataset="tiny")["test_result"]
        for metric, value in trained["sizes"][str(size)].items():
            assert measured[metric] == pytest.approx(value, abs=1e-6), (size, metric)
    assert param_counts == sorted(param_counts) and len(set(param_counts)) == len(SIZES)


def test_export_rejects_size_outside_m(trained, tmp_path):
    with pytest.raises(PluginError, match="not one of the model's sizes"):
        export(trained["checkpoint"], 12, str(tmp_path / "x.pth"))


def test_evaluate_cli_prints_json_last(trained, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "recbole_fmrl.deploy.evaluate", trained["checkpoint"], "--size=8"],
        cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics["size"] == 8
    for metric, value in trained["sizes"]["8"].items():
        assert metrics["test_result"][metric] == pytest.approx(value, abs=1e-6)


def test_each_size_export_of_a_transformer_equals_its_training_row_and_serves_like_the_full_model(tiny_config, tmp_path):
    """``encoder: transformer``: the same export, evaluation, funnel, budget and serving as the LRU's."""
    from recbole_fmrl.deploy.budget import measure
    from recbole_fmrl.deploy.serving import Recommender

    config = {**tiny_config, "hidden_size": 16, "mrl_hidden_sizes": SIZES, "modalities": ["id"], "n_layers": 1,
              "encoder": "transformer", "attention_head_size": 4}
    trained = run("fMRLRec", "tiny", config_dict=config)
    full = Recommender.load(trained["checkpoint"])
    history = [3, 9, 4, 12, 7]
    for size in SIZES:
        out = tmp_path / f"fMRLRec-{size}.pth"
        export(trained["checkpoint"], size, str(out))
        measured = evaluate(str(out), dataset="tiny")["test_result"]
        for metric, value in trained["sizes"][str(size)].items():
            assert measured[metric] == pytest.approx(value, abs=1e-6), (size, metric)
        small = Recommender.load(str(out))
        assert small.model.encoder.positions.shape == (10, size)
        state, reference = small.update(small.start(history[:-1]), history[-1]), full.start(history)
        torch.testing.assert_close(small.scores(state), reference.hidden[0, :size] @ full.item_table_t[:size],
                                   atol=1e-5, rtol=0)
    whole_catalogue = evaluate(trained["checkpoint"], size=8, funnel=(4, full.n_items), index="flat")["test_result"]
    assert whole_catalogue == evaluate(trained["checkpoint"], size=8)["test_result"]
    rows, _ = measure(trained["checkpoint"], users=3, funnel_k=5, index="flat", warmup=0, repeats=1)
    assert [(r["mode"], r["size"]) for r in rows] == [("exact", m) for m in SIZES] + [("funnel", 4), ("funnel", 8)]
