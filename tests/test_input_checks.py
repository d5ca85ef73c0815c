"""Bad input gives one ``error:`` line naming the file and line or the config key, never a traceback or
a silently wrong result: interaction files, config values, unknown keys, dataset names."""

import logging
import os
from pathlib import Path

import pytest

import run_recbole_fmrl
from recbole_fmrl.config import Config
from recbole_fmrl.data.loading import create_dataset
from recbole_fmrl.errors import ConfigError, InputFileError, main_guarded
from recbole_fmrl.experiments import compare, tune
from recbole_fmrl.flags import parse_value
from recbole_fmrl.inputs import (boolean, choice, non_negative_int, non_negative_number, positive_int, positive_number,
                                 probability)
from recbole_fmrl.runner import build

HEADER = "user_id:token\titem_id:token\ttimestamp:float"


def write_inter(folder, lines, name="bad"):
    path = folder / name / f"{name}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def valid_rows(n_users=8, n_items=6):
    return [f"u{u}\ti{(u + k) % n_items + 1}\t{1000 + k}" for u in range(n_users) for k in range(5)]


def cli(argv, capsys, main=run_recbole_fmrl.main):
    """A command's ``main`` in this process: (exit status, stderr lines)."""
    with pytest.raises(SystemExit) as done:
        main_guarded(lambda: main(argv))
    return done.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("case, lines, message", [
    ("empty", [], "the file is empty (expected a header such as user_id:token, item_id:token, timestamp:float)"),
    ("header only", [HEADER], "no interactions: the file has a header only"),
    ("missing column", ["user_id:token\titem_id:token", "u0\ti1"],
     "line 1: no column 'timestamp' (the run loads user_id, item_id, timestamp); the header has user_id:token, item_id:token"),
    ("non-numeric time", [HEADER, *valid_rows()[:7], "u1\ti3\tyesterday"], "line 9: timestamp:float is 'yesterday', not a number"),
    ("duplicates", [HEADER, *valid_rows(), *valid_rows()[:3], valid_rows()[10]],
     "4 interaction rows repeat an earlier row exactly (the first at line 42); repeats inflate the metrics: "
     "remove them, or set keep_duplicate_interactions: True to keep them"),
])
def test_bad_interaction_files_are_one_line_naming_file_and_line(tmp_path, monkeypatch, capsys, case, lines, message):
    monkeypatch.chdir(tmp_path)
    path = write_inter(tmp_path, lines)
    status, err = cli(["--model=SASRec", "--dataset=bad", f"--data_path={tmp_path}", "--use_gpu=False"], capsys)
    where = f"{path}, " if message.startswith("line") else f"{path}: "
    assert (status, err) == (2, [f"error: {where}{message}"])


def test_duplicates_are_kept_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = valid_rows()
    write_inter(tmp_path, [HEADER, *rows, *rows])
    settings = {"data_path": str(tmp_path), "use_gpu": False}
    with pytest.raises(InputFileError, match="40 interaction rows repeat an earlier row exactly"):
        create_dataset(Config("SASRec", "bad", config_dict=settings))
    kept = create_dataset(Config("SASRec", "bad", config_dict={**settings, "keep_duplicate_interactions": True}))
    assert kept.inter_num == 2 * len(rows)  # RecBole's behaviour: every row loaded


@pytest.mark.parametrize("key, value, expected, shown", [
    ("hidden_dropout_prob", "1.0", "a probability in [0, 1)", "1.0"),
    ("attn_dropout_prob", "-0.1", "a probability in [0, 1)", "-0.1"),
    ("learning_rate", "-0.001", "a positive number", "-0.001"),
    ("learning_rate", "fast", "a positive number", "'fast'"),
    ("weight_decay", "-1e-4", "a number >= 0", "-0.0001"),
    ("weight_decay", "none", "a number >= 0", "'none'"),
    ("epochs", "0", "a positive integer", "0"),
    ("epochs", "-3", "a positive integer", "-3"),
    ("epochs", "ten", "a positive integer", "'ten'"),
    ("epochs", "2.5", "a positive integer", "2.5"),
    ("teacher", "os.system('x')", "a model name", '"os.system(\'x\')"'),  # KD_DAGFM eval()s it
])
def test_bad_config_values_are_one_line_naming_the_key(key, value, expected, shown):
    with pytest.raises(ConfigError) as caught:
        Config("fMRLRec", "tiny", config_dict={"use_gpu": False, key: parse_value(value)})
    assert str(caught.value) == f"config key '{key}' must be {expected}, got {shown}"


def test_unknown_config_key_warns_with_the_closest_known_key(tiny_config, caplog):
    config = Config("SASRec", "tiny", config_dict={**tiny_config, "learning_rat": 0.01, "zzz": 1})
    assert config.warnings == [
        "unknown config key 'learning_rat' (not read by SASRec or RecBole): did you mean 'learning_rate'?",
        "unknown config key 'zzz' (not read by SASRec or RecBole): no known key is close to it",
    ]
    assert Config("SASRec", "tiny", config_dict=tiny_config).warnings == []
    with caplog.at_level(logging.WARNING):
        build("SASRec", "tiny", config_dict={**tiny_config, "n_layer": 1})
    assert "unknown config key 'n_layer' (not read by SASRec or RecBole): did you mean 'n_layers'?" in caplog.messages


NOT_A_NAME = "error: dataset {!r} is not a dataset name: use letters, digits, '.', '_' and '-' only (a name, not a path; set data_path for the folder that holds it)"


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", "..", ""])
def test_dataset_names_are_names_for_runner_compare_and_tune(tmp_path, monkeypatch, capsys, name):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = work / "out"
    commands = [
        (run_recbole_fmrl.main, [f"--dataset={name}", "--model=SASRec", f"--data_path={work}"]),
        (compare.main, ["--dataset", name, "--models", "SASRec", "--out", str(out)]),
        (compare.main, ["--dataset", name, "--params", "--out", str(out)]),
        (tune.main, ["--model", "SASRec", "--dataset", name, "--out", str(out)]),
    ]
    for main, argv in commands:
        assert cli(argv, capsys, main) == (2, [NOT_A_NAME.format(name)])
    assert sorted(os.listdir(tmp_path)) == ["work"]  # nothing written outside --out
    assert not out.exists()


def test_compare_sizes_from_a_run_naming_a_path_writes_nothing(tmp_path, capsys):
    run_file = tmp_path / "run.json"
    run_file.write_text('{"dataset": "../escaped", "sizes": {"8": {"ndcg@10": 0.1}}}')
    assert cli(["--sizes-from", str(run_file), "--out", str(tmp_path / "out")], capsys, compare.main) == (
        2, [NOT_A_NAME.format("../escaped")])
    assert sorted(os.listdir(tmp_path)) == ["run.json"]
    assert not Path(tmp_path / "escaped").exists()


@pytest.mark.parametrize("read, args, message", [
    (positive_int, ("n_layers", 0), "n_layers must be a positive integer, got 0"),
    (positive_int, ("n_layers", True), "n_layers must be a positive integer, got True"),
    (non_negative_int, ("warmup_steps", 2.5), "warmup_steps must be a non-negative integer, got 2.5"),
    (positive_number, ("temperature", float("inf")), "temperature must be a positive number, got inf"),
    (non_negative_number, ("mrl_lr_exponent", -1), "mrl_lr_exponent must be a number >= 0, got -1"),
    (probability, ("dropout", 1), "dropout must be a probability in [0, 1), got 1"),
    (boolean, ("exclude_seen", 1), "exclude_seen must be True or False, got 1"),
    (choice, ("encoder", "gru", ("lru", "transformer")), "encoder must be one of ['lru', 'transformer'], got 'gru'"),
    (choice, ("encoder", ["lru"], ("lru",), " (a note)"), "encoder must be one of ['lru'] (a note), got ['lru']"),
])
def test_every_typed_config_reader_has_one_wording(read, args, message):
    with pytest.raises(ConfigError) as error:
        read(*args)
    assert str(error.value) == message
    assert [positive_int("n", 3), non_negative_int("n", 0), probability("p", 0.0), boolean("b", False),
            choice("c", "lru", ("lru",))] == [3, 0, 0.0, False, "lru"]
