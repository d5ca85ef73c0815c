"""Checkpoints from elsewhere: loading runs no code, a checkpoint fits only its own run's data, resume
is exact, refuses foreign checkpoints and writes only under the current run's checkpoint_dir."""

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import recbole.config
import torch

import run_recbole_fmrl
from recbole_fmrl.checkpoint import read_checkpoint
from recbole_fmrl.config import Config
from recbole_fmrl.deploy.evaluate import evaluate
from recbole_fmrl.deploy.export import export
from recbole_fmrl.deploy.serving import Recommender
from recbole_fmrl.errors import PluginError, main_guarded
from recbole_fmrl.files import torch_save_atomic
from recbole_fmrl.runner import run

from conftest import write_tiny_inter

PAYLOAD = "__import__('os').system('touch MARKER')"


@pytest.fixture
def fmrl_config(tiny_config):
    """fMRLRec on ``tiny`` (ID modality: no feature files), 3 epochs, D = 16, M = [8, 16]."""
    return {**tiny_config, "epochs": 3, "mrl_hidden_sizes": [8, 16], "modalities": ["id"], "n_layers": 1}


def stop_after_epoch(stop_epoch):
    """A run callback that interrupts training (as Ctrl-C would) once ``stop_epoch`` is saved."""

    def callback(epoch, valid_score):
        if epoch == stop_epoch:
            raise KeyboardInterrupt

    return callback


def interrupted_run(config, folder, model="fMRLRec"):
    """The ``-last.pth`` of a run of ``model`` interrupted after epoch 0, its files under ``folder``."""
    with pytest.raises(KeyboardInterrupt):
        run(model, "tiny", config_dict={**config, "checkpoint_dir": str(folder)}, callback=stop_after_epoch(0))
    return next(Path(folder).glob("*-last.pth"))


def file_digests(folder):
    """``{relative path: sha256}`` of every file under ``folder``."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(Path(folder).rglob("*")) if path.is_file()
    }


def assert_same_weights(file_a, file_b):
    a, b = torch.load(file_a, weights_only=True)["state_dict"], torch.load(file_b, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def run_cli(argv, capsys):
    """``run_recbole_fmrl.py`` in this process: (exit status, stderr)."""
    with pytest.raises(SystemExit) as done:
        main_guarded(lambda: run_recbole_fmrl.main(argv))
    return done.value.code, capsys.readouterr().err


def assert_same_training_state(file_a, file_b):
    """Same weights, optimiser state (Adam moments, step counts) and LR schedule position."""
    assert_same_weights(file_a, file_b)
    a, b = torch.load(file_a, weights_only=True), torch.load(file_b, weights_only=True)
    assert a["lr_scheduler"] == b["lr_scheduler"] and a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key, state in a["optimizer"]["state"].items():
        assert state.keys() == b["optimizer"]["state"][key].keys()
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][key][name]), (key, name)


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(fmrl_config, tmp_path):
    # several optimiser steps per epoch and a warm-up spanning the interruption: epoch 0 moves the
    # weights (a resume that kept the fresh initialisation would differ) and the schedule's position matters
    fmrl_config = {**fmrl_config, "train_batch_size": 8, "warmup_steps": 7}
    whole = run("fMRLRec", "tiny", config_dict={**fmrl_config, "checkpoint_dir": str(tmp_path / "whole")})
    last = interrupted_run(fmrl_config, tmp_path / "first")
    interrupted = torch.load(last, weights_only=True)
    assert 0 < interrupted["lr_scheduler"]["last_epoch"] < 7 and interrupted["epoch"] == 0
    moved = tmp_path / "moved"
    (tmp_path / "first").rename(moved)  # the checkpoint folder moves before the resume
    before = file_digests(moved)

    resumed = run("fMRLRec", "tiny", config_dict={**fmrl_config, "checkpoint_dir": str(tmp_path / "resumed")},
                  resume=str(moved / last.name))

    assert resumed["test_result"] == whole["test_result"] and resumed["sizes"] == whole["sizes"]
    assert resumed["best_valid_result"] == whole["best_valid_result"]
    assert resumed["epochs_run"] == whole["epochs_run"] == 3 and resumed["best_epoch"] == whole["best_epoch"]
    assert_same_training_state(resumed["checkpoint"], whole["checkpoint"])
    assert_same_training_state(resumed["checkpoint"].replace(".pth", "-last.pth"), whole["checkpoint"].replace(".pth", "-last.pth"))
    assert file_digests(moved) == before  # the resumed run wrote only under its own checkpoint_dir
    stem = last.name[: -len("-last.pth")]
    assert sorted(file_digests(tmp_path / "resumed")) == [f"{stem}-last.pth", f"{stem}.pth", f"{stem}.results.json"]


def test_resume_refuses_another_model_dataset_or_shape_and_leaves_the_run_files_alone(fmrl_config, tmp_path, capsys):
    saved = tmp_path / "saved"
    last = interrupted_run(fmrl_config, saved)
    write_tiny_inter(tmp_path, name="other", seed=1)
    before = file_digests(saved)
    common = [f"--{key}={value}" for key, value in fmrl_config.items()]
    refusals = [
        (["--dataset=other"], re.escape(f"error: {last}: was trained on dataset 'tiny', not 'other'")),
        (["--model=LRURec"], re.escape(f"error: {last}: holds a fMRLRec model, not LRURec")),
        (["--hidden_size=32", "--mrl_hidden_sizes=[8,16,32]"],
         re.escape(f"error: {last}: weights do not fit fMRLRec: '") + r"[\w.]+' is \((16|32)(, \d+)*,?\) in the file, "
         r"\((32|64)(, \d+)*,?\) in the model its settings build"),
    ]
    for options, message in refusals:
        argv = ["--model=fMRLRec", "--dataset=tiny", *common, f"--checkpoint_dir={saved}", f"--resume={last}", *options]
        status, err = run_cli(argv, capsys)
        assert status == 2 and len(err.strip().splitlines()) == 1 and re.fullmatch(message, err.strip()), err
        assert file_digests(saved) == before


def test_resume_never_overwrites_another_runs_file(fmrl_config, tmp_path):
    last = interrupted_run(fmrl_config, tmp_path / "a")
    other = tmp_path / "b"
    other.mkdir()
    foreign = interrupted_run(fmrl_config, tmp_path / "c")
    shutil.copyfile(foreign.with_name(foreign.name.replace("-last", "")), other / last.name.replace("-last", ""))
    before = file_digests(other)
    with pytest.raises(PluginError, match=r"resuming it would overwrite .*, a file of another run: pass another --checkpoint_dir"):
        run("fMRLRec", "tiny", config_dict={**fmrl_config, "checkpoint_dir": str(other)}, resume=str(last))
    assert file_digests(other) == before


def test_two_runs_in_the_same_second_get_their_own_files(fmrl_config, tmp_path):
    config = {**fmrl_config, "epochs": 1, "checkpoint_dir": str(tmp_path / "saved")}
    first, second = run("fMRLRec", "tiny", config_dict=config), run("fMRLRec", "tiny", config_dict=config)
    assert first["checkpoint"] != second["checkpoint"]
    assert len(file_digests(tmp_path / "saved")) == 6  # best, last and results of each


@pytest.fixture
def trained(fmrl_config, tmp_path):
    """A finished fMRLRec run on ``tiny`` (2 epochs) and its size-8 export."""
    result = run("fMRLRec", "tiny", config_dict={**fmrl_config, "epochs": 2})
    export(result["checkpoint"], 8, str(tmp_path / "small.pth"))
    return result["checkpoint"], str(tmp_path / "small.pth")


def test_a_checkpoint_never_runs_code_from_its_settings(trained, tmp_path):
    checkpoint_file, _ = trained
    checkpoint = torch.load(checkpoint_file, weights_only=True)
    checkpoint["overrides"]["note"] = PAYLOAD
    booby_trapped = tmp_path / "trapped.pth"
    torch_save_atomic(checkpoint, str(booby_trapped))

    metrics = evaluate(str(booby_trapped))["test_result"]
    export(str(booby_trapped), 8, str(tmp_path / "trapped-8.pth"))
    rec = Recommender.load(str(booby_trapped))
    assert not (tmp_path / "MARKER").exists()
    assert metrics == evaluate(checkpoint_file)["test_result"]
    assert Config("fMRLRec", "tiny", config_dict=checkpoint["overrides"])["note"] == PAYLOAD  # kept as a string
    recbole.config.Config._convert_config_dict(None, {"note": PAYLOAD})
    assert (tmp_path / "MARKER").exists()  # RecBole's own Config reading would have run it


def test_a_command_line_value_is_never_run(tiny_config, tmp_path, capsys):
    status, err = run_cli(["--model=SASRec", "--dataset=tiny", f"--data_path={tmp_path}", f"--learning_rate={PAYLOAD}"], capsys)
    assert (status, err.strip().splitlines()) == (2, [f"error: config key 'learning_rate' must be a positive number, got {PAYLOAD!r}"])
    assert not (tmp_path / "MARKER").exists()


def rebuild_tiny(tmp_path, change):
    """Rewrite ``tiny.inter`` so that the dataset has one more item, or the same items in another id order."""
    inter = tmp_path / "tiny" / "tiny.inter"
    header, *rows = inter.read_text().splitlines()
    if change == "item count":
        rows.append("u0\ti999\t2000")
    else:  # RecBole numbers items in order of first appearance: reversed users, other ids
        users = {}
        for row in rows:
            users.setdefault(row.split("\t")[0], []).append(row)
        rows = [row for user in reversed(list(users)) for row in users[user]]
    inter.write_text("\n".join([header, *rows]) + "\n")


@pytest.mark.parametrize("change, message", [
    ("item count", "was trained on 31 item ids of 'tiny'; the dataset now has 32"),
    ("item order", "was trained on another item order of 'tiny' (the dataset was rebuilt): its scores would belong to other items"),
])
def test_checkpoints_and_exports_refuse_a_rebuilt_dataset(trained, tmp_path, change, message):
    rebuild_tiny(tmp_path, change)
    for path in trained:
        for use in (evaluate, Recommender.load, lambda p: export(p, 8, str(tmp_path / "again.pth"))):
            with pytest.raises(PluginError) as refused:
                use(path)
            assert str(refused.value) == f"{path}: {message}"
    assert not (tmp_path / "again.pth").exists()


def damaged_files(folder, good):
    """Files that are not usable checkpoints: empty, truncated, not a checkpoint, pickled code."""
    data = Path(good).read_bytes()
    files = {"empty": b"", "truncated": data[: len(data) // 2], "text": b"not a checkpoint\n"}
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name}.pth"
        paths[name].write_bytes(content)
    paths["object"] = folder / "object.pth"
    torch.save({"model": "fMRLRec", "overrides": {}, "payload": Path(".")}, paths["object"])
    paths["no identity"] = folder / "old.pth"
    checkpoint = torch.load(good, weights_only=True)
    del checkpoint["identity"]
    torch.save(checkpoint, paths["no identity"])
    return paths


EXPECTED_DAMAGE = {
    "empty": "the file is empty, not a checkpoint",
    "truncated": "not a readable checkpoint (truncated, damaged, or holding more than tensors and plain values)",
    "text": "not a readable checkpoint (truncated, damaged, or holding more than tensors and plain values)",
    "object": "not a readable checkpoint (truncated, damaged, or holding more than tensors and plain values)",
    "no identity": "not a checkpoint of this plugin, or one written before run identities: no identity",
}


def test_damaged_checkpoints_are_one_error_line_for_every_command(trained, tmp_path, capsys, monkeypatch):
    from recbole_fmrl.deploy import evaluate as evaluate_module
    from recbole_fmrl.deploy import export as export_module

    commands = {
        "resume": lambda path: run_recbole_fmrl.main(["--model=fMRLRec", "--dataset=tiny", f"--data_path={tmp_path}",
                                                      "--hidden_size=16", f"--resume={path}"]),
        "evaluate": lambda path: (monkeypatch.setattr("sys.argv", ["evaluate", str(path)]), evaluate_module.main()),
        "export": lambda path: (monkeypatch.setattr("sys.argv", ["export", str(path), "--size=8", "--out=x.pth"]),
                                export_module.main()),
    }
    for name, path in damaged_files(tmp_path, trained[0]).items():
        for command, call in commands.items():
            with pytest.raises(SystemExit) as done:
                main_guarded(lambda: call(path))
            lines = capsys.readouterr().err.strip().splitlines()
            assert done.value.code == 2 and len(lines) == 1, (name, command, lines)
            assert lines[0].startswith(f"error: {path}: {EXPECTED_DAMAGE[name]}"), (name, command, lines)
    assert not (tmp_path / "x.pth").exists()


def test_an_export_or_finished_run_is_not_resumable(trained, fmrl_config):
    checkpoint_file, small = trained
    with pytest.raises(PluginError, match="not a training checkpoint \\(an export\\?\\): no epoch, cur_step"):
        run("fMRLRec", "tiny", config_dict={**fmrl_config, "hidden_size": 8, "mrl_hidden_sizes": [8]}, resume=small)
    finished = checkpoint_file.replace(".pth", "-last.pth")
    with pytest.raises(PluginError, match=r"its run already trained 2 epochs \(epochs=2\): nothing to resume"):
        run("fMRLRec", "tiny", config_dict={**fmrl_config, "epochs": 2}, resume=finished)
    assert read_checkpoint(finished)["epoch"] == 1


def test_a_checkpoint_keeps_the_other_parameters_recbole_reloads(tiny_config):
    """RecBole reloads ``other_parameter`` with the weights (Pop's counts are not parameters): the
    plugin's checkpoint keeps them."""
    settings = {key: value for key, value in tiny_config.items() if key != "hidden_size"}
    result = run("Pop", "tiny", config_dict={**settings, "epochs": 1})
    stored = torch.load(result["checkpoint"], weights_only=True)["other_parameter"]
    assert stored["item_cnt"].shape == (31, 1) and stored["item_cnt"][0] == 0 and stored["item_cnt"].sum() > 0
    assert stored["max_cnt"] == int(stored["item_cnt"].max())
