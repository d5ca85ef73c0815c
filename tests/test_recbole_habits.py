"""What a RecBole user reaches for: loading a saved model (RecBole's ``load_data_and_model``), the
device keys (``use_gpu``, ``nproc``), and the notice for a model too large for the CPU."""

import logging
import re
import time
from types import SimpleNamespace

import pytest
import torch

from recbole_fmrl.config import PROPERTIES_DIR, Config
from recbole_fmrl.deploy.trained import load_data_and_model
from recbole_fmrl.errors import ConfigError
from recbole_fmrl.model.layers import count_parameters
from recbole_fmrl.runner import build, run
from recbole_fmrl.trainer import get_trainer, notice as trainer_notice


def test_load_data_and_model_gives_recboles_six_values_and_the_trained_model(tiny_config, tmp_path):
    result = run("fMRLRec", "tiny", config_dict={**tiny_config, "modalities": ["id"], "epochs": 1})
    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(result["checkpoint"])
    assert (config["model"], config["hidden_size"], model.training) == ("fMRLRec", 16, False)
    rows = [line.split("\t") for line in (tmp_path / "tiny" / "tiny.inter").read_text().splitlines()[1:]]
    assert sorted(dataset.field2id_token["user_id"][1:]) == sorted({row[0] for row in rows})  # every user: the whole dataset
    assert train_data.dataset.field2id_token == dataset.field2id_token
    stored = torch.load(result["checkpoint"], weights_only=True)["state_dict"]
    assert all(torch.equal(value, stored[name]) for name, value in model.state_dict().items())
    tested = get_trainer(config["MODEL_TYPE"], config["model"])(config, model).evaluate(test_data, load_best_model=False)
    assert dict(tested) == pytest.approx(result["test_result"])


def test_use_gpu_false_trains_on_the_cpu_and_nproc_as_a_config_key_is_refused(tiny_config):
    assert Config("LRURec", "tiny", config_dict={**tiny_config, "use_gpu": False})["device"] == torch.device("cpu")
    with pytest.raises(ConfigError) as caught:
        Config("LRURec", "tiny", config_dict={**tiny_config, "nproc": 2})
    assert str(caught.value) == (
        "nproc=2: a run's processes are started by run_recbole_fmrl.py --nproc=2 or by torchrun (README: Several GPUs "
        "and machines), not by a config key")


NOTICE = re.compile(
    r"fMRLRec with hidden_size=16 is large for a CPU: one epoch \((\d+) batches\) takes about (\d+) s here "
    r"\((\d+\.\d\d) s per batch over the first 5 steps\), for up to 2 epochs \(early stopping after 10 without "
    r"improvement\)\. On a CPU use --config_files=(\S+) \(D = 64\) or --hidden_size=64; on a GPU, --gpu_id=0 "
    r"\(README: GPU\)\.")


def test_a_model_large_for_the_cpu_is_announced_once_with_its_measured_epoch_time(tiny_config, caplog, monkeypatch):
    monkeypatch.setattr(trainer_notice, "LARGE_FOR_CPU", 16)
    settings = {**tiny_config, "modalities": ["id"], "train_batch_size": 4, "n_layers": 1}
    with caplog.at_level(logging.WARNING):
        run("fMRLRec", "tiny", config_dict=settings, saved=False)
    notices = [m for m in caplog.messages if "large for a CPU" in m]
    assert len(notices) == 1, notices  # once, not once per epoch
    batches, seconds, per_batch, demo = NOTICE.fullmatch(notices[0]).groups()
    assert int(batches) == 10  # 40 users in rows of 4
    assert int(seconds) == max(1, round(float(per_batch) * 10))
    assert (PROPERTIES_DIR / "demo.yaml").samefile(demo)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run("fMRLRec", "tiny", config_dict={**settings, "hidden_size": 8, "epochs": 1}, saved=False)
    assert not [m for m in caplog.messages if "large for a CPU" in m]


@pytest.mark.parametrize("seconds, shown", [(0.2, "1 s"), (40, "40 s"), (89, "89 s"), (90, "2 min"), (840, "14 min"),
                                            (3540, "59 min"), (3600, "1 h 00 min"), (7500, "2 h 05 min")])
def test_durations_read_as_a_person_would_say_them(seconds, shown):
    assert trainer_notice.duration(seconds) == shown


def notice(batches, epoch, per_batch, steps, epochs, demo):
    return (f"fMRLRec with hidden_size=16 is large for a CPU: one epoch ({batches} batches) takes about {epoch} here "
            f"({per_batch} s per batch over the first {steps}), for up to {epochs} (early stopping after 10 without "
            f"improvement). On a CPU use --config_files={demo} (D = 64) or --hidden_size=64; on a GPU, --gpu_id=0 "
            "(README: GPU).")


@pytest.mark.parametrize("batch_size, epochs, expected", [
    (64, 1, ("1", "10 s", "10.00", "1 step", "1 epoch")),  # one batch: the first step is all there is
    (16, 2, ("3", "12 s", "4.00", "2 steps", "2 epochs")),  # steps 2-3: (118 - 110) / 2
    (4, 2, ("10", "50 s", "5.00", "5 steps", "2 epochs")),  # steps 2-6: (135 - 110) / 5
])
def test_the_notice_times_the_steps_after_the_first(tiny_config, caplog, monkeypatch, batch_size, epochs, expected):
    """A clock ticking 100 (fit starts), then 110, 113, 118, 122, 128, 135, ... after each training step."""
    ticks = iter([100, 110, 113, 118, 122, 128, 135])
    later = iter(range(1000, 10**6))
    monkeypatch.setattr(trainer_notice, "time", SimpleNamespace(perf_counter=lambda: next(ticks, None) or next(later),
                                                         monotonic=time.monotonic))  # the epoch's clock
    monkeypatch.setattr(trainer_notice, "LARGE_FOR_CPU", 16)
    settings = {**tiny_config, "modalities": ["id"], "train_batch_size": batch_size, "n_layers": 1, "epochs": epochs}
    with caplog.at_level(logging.WARNING):
        result = run("fMRLRec", "tiny", config_dict=settings, saved=False)
    assert [m for m in caplog.messages if "large for a CPU" in m] == [notice(*expected, PROPERTIES_DIR / "demo.yaml")]
    assert result["epochs_run"] == epochs and set(result["best_valid_result"]) == set(result["test_result"])


def test_the_notice_names_the_demo_config_relative_to_the_working_folder_inside_the_checkout(tmp_path, monkeypatch):
    run_settings = SimpleNamespace(config={"model": "fMRLRec", "stopping_step": 10}, epochs=1)
    message = lambda: trainer_notice.large_model_notice(run_settings.config, run_settings.epochs, 16, 12345, 0.5, 1)  # noqa: E731
    monkeypatch.chdir(PROPERTIES_DIR.parent)
    assert message() == notice("12,345", "1 h 42 min", "0.50", "1 step", "1 epoch", "properties/demo.yaml")
    monkeypatch.chdir(tmp_path)  # outside the checkout: the whole path
    assert message() == notice("12,345", "1 h 42 min", "0.50", "1 step", "1 epoch", PROPERTIES_DIR / "demo.yaml")


def test_a_recbole_model_without_hidden_size_trains_through_the_plugins_trainer(tiny_config, caplog):
    with caplog.at_level(logging.WARNING):
        settings = {key: value for key, value in tiny_config.items() if key != "hidden_size"}
        result = run("BPR", "tiny", config_dict={**settings, "epochs": 1, "train_neg_sample_args": {
            "distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False, "candidate_num": 0}}, saved=False)
    assert result["epochs_run"] == 1 and "ndcg@10" in result["test_result"]
    assert not [m for m in caplog.messages if "large for a CPU" in m]


def test_the_log_shows_one_parameter_count_the_plugins(tiny_config, caplog):
    """RecBole's ``str(model)`` ends in its own count, which includes the fMRL weights' structural zeros."""
    with caplog.at_level(logging.INFO):
        _, model, _, _ = build("fMRLRec", "tiny", config_dict={**tiny_config, "modalities": ["id"], "n_layers": 1})
    counts = [re.sub(r"\x1b\[[0-9;]*m", "", m) for m in caplog.messages if "trainable parameters" in m.lower()]
    assert counts == [f"trainable parameters: {count_parameters(model):,}"]
