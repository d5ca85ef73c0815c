"""What ``resume_checkpoint`` restores, read off the trainer: every training counter of the
interrupted run, the best checkpoint left as it is when the run resumes in its own folder."""

import os

import torch

from recbole_fmrl.checkpoint import read_checkpoint, run_identity
from recbole_fmrl.runner import build
from recbole_fmrl.trainer import get_trainer

from test_checkpoints import fmrl_config, interrupted_run  # noqa: F401 (fmrl_config: fixture)


def resumed_trainer(config, last, **resume):
    config, model, _, (train_data, _, _) = build("fMRLRec", "tiny", config_dict={**config, "checkpoint_dir": os.path.dirname(last)})
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.identity = run_identity(train_data._dataset, model)
    trainer.resume_checkpoint(str(last), **resume)
    return trainer


def test_resume_restores_every_counter_and_keeps_the_best_file_in_place(fmrl_config, tmp_path):
    config = {**fmrl_config, "epochs": 4}
    last = interrupted_run(config, tmp_path / "saved")
    checkpoint = read_checkpoint(str(last))
    checkpoint["cur_step"] = 1  # as after an epoch that did not improve (early stopping counts it)
    torch.save(checkpoint, last)
    best = tmp_path / "saved" / os.path.basename(checkpoint["best_model_file"])
    written = best.stat().st_mtime_ns

    trainer = resumed_trainer(config, last)  # read from the file: no checkpoint given
    assert (trainer.start_epoch, trainer.cur_step, trainer.run_id) == (1, 1, checkpoint["run_id"])
    assert trainer.best_valid_score == checkpoint["best_valid_score"] and trainer.valid_history == checkpoint["valid_history"]
    assert trainer.best_valid_result == checkpoint["best_valid_result"] and trainer.best_valid_result
    assert trainer.saved_model_file == str(best) and best.stat().st_mtime_ns == written  # not copied onto itself
    for name, tensor in checkpoint["state_dict"].items():
        assert torch.equal(trainer.model.state_dict()[name], tensor), name
    assert trainer.optimizer.state_dict()["state"].keys() == checkpoint["optimizer"]["state"].keys() != set()
    assert trainer.lr_scheduler.state_dict()["last_epoch"] == checkpoint["lr_scheduler"]["last_epoch"] > 0
