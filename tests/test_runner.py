"""The plugin's runner on RecBole's own models: config, training, safe checkpoints, resume, errors."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recbole_fmrl.config import Config, get_model
from recbole_fmrl.runner import run

REPO = Path(__file__).resolve().parent.parent


def test_recbole_models_resolve_to_recbole_and_config_is_numpy2_safe(tiny_config):
    from recbole.model.sequential_recommender import BERT4Rec, SASRec

    from recbole_fmrl.model import BERT4Rec as PluginBERT4Rec
    from recbole_fmrl.model import SASRec as PluginSASRec

    config = Config(model="BERT4Rec", dataset="tiny", config_dict=tiny_config)
    assert config.model_class is PluginBERT4Rec and issubclass(PluginBERT4Rec, BERT4Rec)  # RecBole's, trainable masked
    assert config["mask_ratio"] == 0.2 and config["transform"] == "mask_itemseq"
    config = Config(model="SASRec", dataset="tiny", config_dict=tiny_config)
    assert config.model_class is PluginSASRec and issubclass(PluginSASRec, SASRec)  # RecBole's, trainable per position
    assert config["valid_metric"] == "NDCG@10" and config["topk"] == [5, 10]
    assert config["train_neg_sample_args"]["distribution"] == "none"  # CE: no negative sampling


def test_importing_the_plugin_models_leaves_autograd_anomaly_detection_off():
    """RecBole's sine.py switches anomaly detection on when its sequential models are imported; the
    plugin's models (which import them) switch it off, so plugin models train and benchmark without it."""
    code = ("import torch, recbole_fmrl.model, recbole.model.sequential_recommender; "
            "from recbole_fmrl.benchmarks.common import build_model; print(torch.is_anomaly_enabled())")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False"]


@pytest.mark.parametrize("model,train_mode", [("SASRec", "prefix"), ("BERT4Rec", "prefix"), ("BERT4Rec", "sequence")])
def test_recbole_model_trains_and_checkpoint_loads_weights_only(tiny_config, model, train_mode):
    result = run(model, "tiny", config_dict={**tiny_config, "train_mode": train_mode})
    assert not torch.is_anomaly_enabled()  # RecBole's sine.py switches it on at import time
    test = result["test_result"]
    assert set(test) == {"ndcg@5", "ndcg@10", "recall@5", "recall@10"}
    assert all(0.0 <= v <= 1.0 for v in test.values())
    assert test["recall@10"] >= test["recall@5"]
    assert result["epochs_run"] == 2 and result["best_epoch"] in (0, 1)
    for path in (result["checkpoint"], result["checkpoint"].replace(".pth", "-last.pth")):
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["model"] == model and checkpoint["config"]["dataset"] == "tiny"
        assert checkpoint["config"]["MODEL_TYPE"] == "SEQUENTIAL"


def test_resume_continues_from_last_checkpoint(tiny_config):
    first = run("SASRec", "tiny", config_dict={**tiny_config, "epochs": 1})
    last = first["checkpoint"].replace(".pth", "-last.pth")
    resumed = run("SASRec", "tiny", config_dict={**tiny_config, "epochs": 3}, resume=last)
    assert resumed["epochs_run"] == 3  # one epoch before the resume, two after
    assert resumed["checkpoint"] == first["checkpoint"]  # the best file of the same run
    assert torch.load(last, weights_only=True)["epoch"] == 2


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, str(REPO / "run_recbole_fmrl.py"), *args], cwd=cwd, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model=NoSuchModel", "--dataset=tiny"], "error: unknown model 'NoSuchModel'"),
        (["--model=SASRec", "--dataset=nowhere"], "error: unknown dataset 'nowhere'"),
        (["--model=SASRec", "--dataset=empty"], "empty.inter not found"),
        (["--model=SASRec", "--dataset=tiny", "--config_files=missing.yaml"], "config file not found: missing.yaml"),
    ],
)
def test_bad_input_gives_one_line(tiny_config, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    done = run_cli(*args, f"--data_path={tmp_path}", cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_get_model_unknown_name_is_clear():
    from recbole_fmrl.errors import PluginError

    with pytest.raises(PluginError, match="unknown model 'lightgbm_please'"):
        get_model("lightgbm_please")
