"""The plugin trainer's rules to the letter: which trainer a model gets, the optimiser its recipe keys
build, their refusals, the warm-up/decay multipliers at their edges, run file names in one second,
and what ``fit`` logs, draws and reports."""

import logging
import os
import subprocess
import sys

import pytest
import torch
from recbole.trainer import S3RecTrainer, TraditionalTrainer, Trainer
from recbole.utils import ModelType, early_stopping

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.model.layers import FMRLLinear, NestedLayerNorm, first_size_index
from recbole_fmrl.runner import build
from recbole_fmrl.trainer import PluginTrainer, get_trainer
from recbole_fmrl.trainer.checkpoints import Checkpoints
from recbole_fmrl.trainer.recipe import warmup_then
from recbole_fmrl.trainer.run_names import unused_model_file

FMRL = {"modalities": ["id"], "mrl_hidden_sizes": [8, 16], "n_layers": 1, "epochs": 2}


def trainer_for(tiny_config, **overrides):
    config, model, _, (train_data, valid_data, _) = build("fMRLRec", "tiny", config_dict={**tiny_config, **FMRL, **overrides})
    return PluginTrainer(config, model), train_data, valid_data


def test_each_model_gets_recboles_trainer_for_it_with_the_plugins_keys():
    assert get_trainer(ModelType.SEQUENTIAL, "fMRLRec") is PluginTrainer
    assert get_trainer(ModelType.SEQUENTIAL, "SASRec") is PluginTrainer  # RecBole's Trainer
    assert PluginTrainer.__mro__[1:3] == (Checkpoints, Trainer)
    s3rec = get_trainer(ModelType.SEQUENTIAL, "S3Rec")  # RecBole names a trainer of its own for S3Rec
    assert s3rec.__name__ == "S3RecTrainer" and s3rec.__mro__[1:4] == (PluginTrainer, Checkpoints, S3RecTrainer)
    pop = get_trainer(ModelType.TRADITIONAL, "Pop")  # no trainer named for Pop: RecBole's by model type
    assert pop.__name__ == "TraditionalTrainer" and pop.__mro__[3] is TraditionalTrainer


@pytest.mark.parametrize("learner, decay_bias_and_norm, expected", [
    ("adamw", False, (torch.optim.AdamW, [0.05, 0.0])),
    ("AdamW", True, (torch.optim.AdamW, [0.05])),
    ("adam", False, (torch.optim.Adam, [0.05, 0.0])),
    ("sgd", False, (torch.optim.SGD, [0.05])),  # RecBole's own optimiser: one group
])
def test_the_optimiser_follows_learner_and_decay_keys(tiny_config, learner, decay_bias_and_norm, expected):
    trainer, _, _ = trainer_for(tiny_config, learner=learner, decay_bias_and_norm=decay_bias_and_norm,
                                weight_decay=0.05, adam_epsilon=1e-7)
    optimizer_class, decays = expected
    assert type(trainer.optimizer) is optimizer_class
    assert [group["weight_decay"] for group in trainer.optimizer.param_groups] == decays
    if optimizer_class is not torch.optim.SGD:
        assert trainer.optimizer.defaults["eps"] == 1e-7
    assert sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(list(trainer.model.parameters()))


@pytest.mark.parametrize("overrides, message", [
    ({"lr_schedule": "linear"}, "lr_schedule must be one of ['constant', 'cosine'], got 'linear'"),
    ({"warmup_steps": -1}, "warmup_steps must be a non-negative integer, got -1"),
    ({"warmup_steps": 2.5}, "warmup_steps must be a non-negative integer, got 2.5"),
    ({"warmup_steps": True}, "warmup_steps must be a non-negative integer, got True"),
])
def test_recipe_keys_are_refused_with_their_whole_message(tiny_config, overrides, message):
    config, model, _, _ = build("fMRLRec", "tiny", config_dict={**tiny_config, **FMRL})
    for key, value in overrides.items():
        config[key] = value
    with pytest.raises(ConfigError) as error:
        PluginTrainer(config, model)
    assert str(error.value) == message


def test_warmup_multipliers_at_their_edges():
    assert [warmup_then("cosine", 3, 4)(s) for s in (3, 4, 5)] == [1.0, 0.0, 0.0]  # one decay step
    assert [warmup_then("cosine", 0, 0)(s) for s in (0, 1)] == [1.0, 0.0]
    assert [warmup_then("constant", 0, 10)(s) for s in (0, 10, 99)] == [1.0, 1.0, 1.0]


def test_a_constant_schedule_keeps_the_rate_after_warm_up(tiny_config):
    trainer, train_data, valid_data = trainer_for(tiny_config, lr_schedule="constant", warmup_steps=2,
                                                  learning_rate=0.01, train_batch_size=8)
    rates = []
    trainer.optimizer.register_step_post_hook(lambda optimizer, *_: rates.append(optimizer.param_groups[0]["lr"]))
    trainer.fit(train_data, valid_data, saved=False)
    assert len(rates) > 4 and rates[:3] == pytest.approx([0.0, 0.005, 0.01]) and rates[3:] == pytest.approx([0.01] * (len(rates) - 3))


def test_runs_started_in_the_same_second_are_numbered(tmp_path):
    first = str(tmp_path / "fMRLRec-Nov-23-2026_10-00-00.pth")
    assert unused_model_file(first) == first
    (tmp_path / "fMRLRec-Nov-23-2026_10-00-00.results.json").write_text("{}")  # any file of the run's stem
    assert unused_model_file(first) == first[: -len(".pth")] + "-2.pth"
    (tmp_path / "fMRLRec-Nov-23-2026_10-00-00-2-last.pth").write_bytes(b"")
    assert unused_model_file(first) == first[: -len(".pth")] + "-3.pth"


def test_runs_choosing_a_name_at_once_get_different_files_and_leave_no_claims(tmp_path):
    """Two runs started in the same second choose before either has written a file (it happened:
    two compare runs shared one checkpoint and both tested the same model)."""
    path = str(tmp_path / "fMRLRec-Nov-23-2026_10-00-00.pth")
    script = ("import sys; from recbole_fmrl.trainer.run_names import unused_model_file; "
              "print(unused_model_file(sys.argv[1])); sys.stdin.read()")
    runs = [subprocess.Popen([sys.executable, "-c", script, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True) for _ in range(3)]
    chosen = [run.stdout.readline().strip() for run in runs]  # all three alive, none has saved anything
    assert set(chosen) == {path, path[: -len(".pth")] + "-2.pth", path[: -len(".pth")] + "-3.pth"}
    for run in runs:
        run.communicate("")
    assert list(tmp_path.iterdir()) == []  # the claims went with their processes


def test_a_checkpoint_goes_to_the_file_it_is_given(tiny_config, tmp_path):
    trainer, _, _ = trainer_for(tiny_config)
    trainer._save_checkpoint(0, verbose=False, saved_model_file=str(tmp_path / "elsewhere.pth"))
    assert (tmp_path / "elsewhere.pth").is_file() and not os.path.exists(trainer.saved_model_file)


@pytest.mark.parametrize("bigger", [True, False])
def test_best_epoch_is_the_epoch_whose_checkpoint_recbole_saved_last(tiny_config, bigger):
    trainer, _, _ = trainer_for(tiny_config)
    assert trainer.best_epoch is None  # before any validation
    trainer.valid_metric_bigger = bigger
    scores = [0.1, 0.3, 0.2, 0.3, 0.25] if bigger else [0.5, 0.2, 0.3, 0.2, 0.4]  # a tie for best at epochs 1, 3
    trainer.valid_history = [[epoch, score] for epoch, score in enumerate(scores)]
    best, step, saved = (float("-inf") if bigger else float("inf")), 0, None
    for epoch, score in enumerate(scores):
        best, step, _, update = early_stopping(score, best, step, max_step=10, bigger=bigger)
        saved = epoch if update else saved
    assert trainer.best_epoch == saved == 3


def test_fit_logs_draws_and_reports_as_asked(tiny_config, caplog, capfd):
    trainer, train_data, valid_data = trainer_for(tiny_config)
    scores = []
    with caplog.at_level(logging.INFO):
        trainer.fit(train_data, valid_data, callback_fn=lambda epoch, score: scores.append((epoch, score)))
    assert any("Saving current" in r.getMessage() for r in caplog.records)  # verbose by default, and saved
    assert os.path.isfile(trainer.saved_model_file) and os.path.isfile(trainer.last_model_file)
    assert "Train" not in capfd.readouterr().err  # no progress bar by default
    assert scores == [(epoch, score) for epoch, score, _ in trainer.valid_history] and len(scores) == 2
    assert all(seconds > 0 for *_, seconds in trainer.valid_history) and trainer.seconds_per_epoch > 0

    trainer, train_data, valid_data = trainer_for(tiny_config)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        trainer.fit(train_data, valid_data, verbose=False, saved=False, show_progress=True)
    assert not any("Saving current" in r.getMessage() for r in caplog.records)
    assert not os.path.exists(trainer.last_model_file)
    assert "Train" in capfd.readouterr().err  # RecBole's progress bars


def test_mrl_lr_exponent_multiplies_each_entrys_update_by_d_over_the_first_size_using_it(tiny_config):
    """One AdamW step (weight decay included) from the same start: the change of every entry with
    mrl_lr_exponent a is (D / m)^a times its change at a = 0, m the smallest size whose model has it."""
    changes = {}
    for exponent in (0, 1.5):
        trainer, train_data, _ = trainer_for(tiny_config, mrl_hidden_sizes=[4, 8, 16], hidden_size=16, epochs=1,
                                             train_batch_size=4096, lr_schedule="constant", warmup_steps=0,
                                             weight_decay=0.1, mrl_lr_exponent=exponent)
        start = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
        steps = []
        trainer.optimizer.register_step_post_hook(lambda *_: steps.append(1))
        trainer.fit(train_data, saved=False)
        assert len(steps) == 1
        changes[exponent] = {name: p.detach() - start[name] for name, p in trainer.model.named_parameters()}
    sizes = first_size_index(trainer.model, 3)
    assert torch.equal(sizes["item_encoder.id_embedding.weight"][1], torch.tensor([0] * 4 + [1] * 4 + [2] * 8))
    for name, change in changes[1.5].items():
        expected = changes[0][name] * torch.tensor([4.0, 2.0, 1.0])[sizes[name]] ** 1.5
        assert torch.allclose(change, expected, rtol=1e-4, atol=1e-7), name
    assert (changes[1.5]["item_encoder.id_embedding.weight"][:, :4].abs().sum()
            > 7 * changes[0]["item_encoder.id_embedding.weight"][:, :4].abs().sum())


def test_first_size_index_reads_the_slicing_rules_and_leaves_the_weights_alone():
    layer, norm = FMRLLinear([2, 4], [3, 6]), NestedLayerNorm([2, 4])
    weight = layer.weight.clone()
    assert first_size_index(layer, 2)["weight"].tolist() == [[0, 0, 1, 1]] * 3 + [[1, 1, 1, 1]] * 3
    assert first_size_index(layer, 2)["bias"].tolist() == [0, 0, 0, 1, 1, 1]
    assert first_size_index(norm, 2)["weight"].tolist() == [0, 0, 1, 1]
    assert torch.equal(layer.weight, weight)
