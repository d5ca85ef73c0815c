"""Data-parallel runs on 2 gloo processes of this CPU, meeting at 127.0.0.1 only: the optimiser steps,
metrics and files of one process, an exact resume on every process, and refusals in one line. Each
test starts its processes once and leaves none behind."""

import json
import multiprocessing
from pathlib import Path

import pytest
import torch

import run_recbole_fmrl
from recbole_fmrl import distributed
from recbole_fmrl.checkpoint import read_checkpoint
from recbole_fmrl.config import Config
from recbole_fmrl.errors import ConfigError, PluginError
from recbole_fmrl.runner import build, run
from recbole_fmrl.trainer import get_trainer

from conftest import free_ports
from test_checkpoints import assert_same_weights, run_cli, stop_after_epoch

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}
FMRL = {"modalities": ["id"], "mrl_hidden_sizes": [8, 16], "n_layers": 1}
# name: (model, settings). fMRLRec's batches of about 2 rows include batches of one row: rank 1 then has
# no row and still takes the step. The sampled softmax draws every item (the same negatives on every
# process, so that one process can be compared), through the sampled loss and its weighting.
CASES = {
    "fMRLRec": ("fMRLRec", {**FMRL, "train_batch_size": 2}),
    "LRURec": ("LRURec", {"n_layers": 1, "train_batch_size": 8}),
    "SASRec": ("SASRec", {"n_layers": 1, "train_mode": "sequence", "train_batch_size": 8}),
    "SASRec-prefix": ("SASRec", {"n_layers": 1, "train_batch_size": 16}),
    "LRURec-sampled": ("LRURec", {"n_layers": 1, "train_batch_size": 8, "softmax_negatives": 5}),
}


@pytest.fixture
def two_processes(tiny_config, monkeypatch):
    """``spawn(fn, *args)`` on 2 processes of this machine; no process is left when the test ends."""
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # gloo's connections on the loopback only
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def spawn(fn, *args):
        return distributed.spawn(fn, args, nproc=2, ip="127.0.0.1", port=free_ports(1)[0])

    yield spawn
    leftover = multiprocessing.active_children()
    for process in leftover:
        process.kill()
    assert leftover == []


def every_item(model):
    return lambda n_rows, device: torch.arange(1, model.n_items, device=device)


def train_cases(config, folder):
    """Every case of CASES trained in float64 for ``config['epochs']`` epoch(s), its weights saved by rank 0."""
    Path(folder).mkdir(exist_ok=True)
    for name, (model_name, settings) in CASES.items():
        config_, model, _, (train_data, _, _) = build(model_name, "tiny", config_dict={**config, **settings})
        model.double()
        if model.softmax_negatives:
            model.sample_negatives = every_item(model)
        trainer = get_trainer(config_["MODEL_TYPE"], model_name)(config_, model)
        trainer.fit(train_data, saved=False)
        if distributed.is_main():
            torch.save(model.state_dict(), Path(folder) / f"{name}.pt")


def test_two_processes_take_the_optimiser_steps_of_one_process(tiny_config, two_processes, tmp_path):
    config = {**tiny_config, **NO_DROPOUT, "epochs": 1}
    two_processes(train_cases, config, str(tmp_path / "two"))
    train_cases(config, str(tmp_path / "one"))
    for name in CASES:
        one, two = (torch.load(tmp_path / folder / f"{name}.pt", weights_only=True) for folder in ("one", "two"))
        assert one.keys() == two.keys()
        assert max(float((one[key] - two[key]).abs().max()) for key in one if one[key].is_floating_point()) < 1e-9, name
    # what the comparison covers: several steps, parts of uneven positions, and a rank without rows
    _, _, _, (train_data, _, _) = build("fMRLRec", "tiny", config_dict={**config, **CASES["fMRLRec"][1]})
    lengths = train_data.lengths
    positions = [(int(lengths[batch[0::2]].sum()), int(lengths[batch[1::2]].sum())) for batch in train_data.batches()]
    assert len(positions) > 5 and any(a != b and b for a, b in positions) and any(b == 0 for _, b in positions)


def run_flags(settings):
    return [f"--{key}={json.dumps(value)}" for key, value in settings.items()]


def test_a_run_on_two_processes_writes_one_run_with_the_metrics_of_one_process(tiny_config, two_processes, tmp_path, capsys):
    settings = {**tiny_config, **NO_DROPOUT, **FMRL, "epochs": 3, "train_batch_size": 8}
    run_recbole_fmrl.main(["--model=fMRLRec", "--dataset=tiny", "--nproc=2", "--ip=127.0.0.1", f"--port={free_ports(1)[0]}",
                           *run_flags({**settings, "dist_backend": "gloo"})])
    saved = tmp_path / "saved"
    stem = next(saved.glob("*.results.json")).name[: -len(".results.json")]
    assert {path.name for path in saved.iterdir()} == {f"{stem}.pth", f"{stem}-last.pth", f"{stem}.results.json"}  # no claim left
    assert len(list((tmp_path / "log" / "fMRLRec").iterdir())) == 1 and len(list((tmp_path / "log_tensorboard").iterdir())) == 1
    two = json.loads((saved / f"{stem}.results.json").read_text())
    one = run("fMRLRec", "tiny", config_dict={**settings, "checkpoint_dir": str(tmp_path / "one")})
    for key in ("best_valid_result", "test_result_by_protocol", "sizes", "best_epoch", "epochs_run"):
        assert two[key] == one[key], key
    checkpoint = read_checkpoint(str(saved / f"{stem}-last.pth"))
    assert checkpoint["world_size"] == 2 and "dist_backend" not in checkpoint["overrides"] and "dist_backend" not in two["config"]
    assert not torch.equal(checkpoint["rng_state"][0]["torch"], checkpoint["rng_state"][1]["torch"])  # each process's own

    one_process_last = Path(one["checkpoint"][: -len(".pth")] + "-last.pth")
    status, err = run_cli(["--model=fMRLRec", "--dataset=tiny", "--nproc=2", f"--resume={one_process_last}",
                           *run_flags(settings)], capsys)
    assert (status, err.splitlines()) == (2, [f"error: {one_process_last}: its run trained on 1 process: it resumes on "
                                              "as many, not on 2"])


def interrupted_and_resumed(config, one_process_last):
    """On each process: a run, the same run interrupted after epoch 0 and resumed (rank 0 records both
    results), then the resume of a one-process run (refused)."""
    uninterrupted = run("fMRLRec", "tiny", config_dict=config)
    last = []
    try:
        run("fMRLRec", "tiny", config_dict=config, callback=stop_after_epoch(0), on_start=last.append)
    except KeyboardInterrupt:
        pass
    resumed = run("fMRLRec", "tiny", config_dict=config, resume=last[0])
    if distributed.is_main():
        Path(config["checkpoint_dir"], "runs.json").write_text(json.dumps([uninterrupted, resumed]))
    run("fMRLRec", "tiny", config_dict=config, resume=one_process_last)


def test_a_two_process_run_resumed_after_an_interruption_ends_as_the_uninterrupted_one(tiny_config, two_processes, tmp_path):
    config = {**tiny_config, **FMRL, "epochs": 3, "train_batch_size": 8}  # dropout on: every process's masks
    one_process = run("fMRLRec", "tiny", config_dict={**config, "epochs": 1, "checkpoint_dir": str(tmp_path / "one")})
    one_process_last = one_process["checkpoint"][: -len(".pth")] + "-last.pth"
    with pytest.raises(PluginError) as refused:  # raised once, after both processes stopped
        two_processes(interrupted_and_resumed, config, one_process_last)
    assert str(refused.value) == f"{one_process_last}: its run trained on 1 process: it resumes on as many, not on 2"
    uninterrupted, resumed = json.loads((tmp_path / "saved" / "runs.json").read_text())
    assert resumed["checkpoint"] != uninterrupted["checkpoint"]
    assert_same_weights(uninterrupted["checkpoint"], resumed["checkpoint"])
    for key in ("best_valid_result", "test_result_by_protocol", "sizes", "best_epoch", "epochs_run"):
        assert resumed[key] == uninterrupted[key], key


def test_a_launched_process_reads_its_place_from_torchruns_variables(tiny_config, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched() is None and Config("LRURec", "tiny", config_dict=tiny_config)["local_rank"] == 0
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launched() == (3, 1, 4)
    config = Config("LRURec", "tiny", config_dict={**tiny_config, "dist_backend": "gloo"})
    assert (config["local_rank"], config["device"], config["single_spec"]) == (1, torch.device("cpu"), True)
    assert "dist_backend" not in config.overrides()


def test_the_backend_follows_the_device_unless_the_config_names_one():
    assert distributed.backend(None, torch.device("cpu")) == "gloo"
    assert distributed.backend(None, torch.device("cuda", 1)) == "nccl"
    assert distributed.backend("gloo", torch.device("cuda", 0)) == "gloo"
    with pytest.raises(ConfigError) as caught:
        distributed.backend("tcp", torch.device("cpu"))
    assert str(caught.value) == "dist_backend must be one of ['gloo', 'nccl', 'mpi', 'ucc'], got 'tcp'"
