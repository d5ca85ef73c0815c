"""Checkpointing that loads under ``torch.load(weights_only=True)`` and resumes after interruption."""

import os

import torch
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_fmrl.config import to_primitive


class SafeCheckpointMixin:
    """Replaces RecBole's checkpoints, which pickle the whole Config object.

    Two files per run: the best model (``saved_model_file``, as in RecBole) and
    ``<name>-last.pth`` written after every epoch, from which ``resume_checkpoint`` continues.
    Both are plain dicts of tensors and Python values.
    """

    def _checkpoint_state(self, epoch):
        return {
            "config": self.config.to_dict(),
            "overrides": self.config.overrides(),
            "model": self.config["model"],
            "dataset": self.config["dataset"],
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "best_model_file": self.saved_model_file,
            "best_valid_result": to_primitive(dict(self.best_valid_result or {})),
            "valid_history": list(self.valid_history),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }

    def __init__(self, config, model):
        super().__init__(config, model)
        self.valid_history = []  # [epoch, validation score] per validated epoch

    @property
    def best_epoch(self):
        """The epoch whose validation score was best (None before any validation)."""
        if not self.valid_history:
            return None
        pick = max if self.valid_metric_bigger else min
        return pick(self.valid_history, key=lambda row: row[1])[0]

    @property
    def last_model_file(self):
        return self.saved_model_file[: -len(".pth")] + "-last.pth"

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        atomic_save(self._checkpoint_state(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        def after_epoch(epoch_idx, valid_score):
            self.valid_history.append([epoch_idx, float(valid_score)])
            if saved:
                atomic_save(self._checkpoint_state(epoch_idx), self.last_model_file)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        return super().fit(train_data, valid_data, verbose, saved, show_progress, after_epoch)

    def resume_checkpoint(self, resume_file):
        """Continue from a ``-last.pth`` (or best) checkpoint: model, optimizer, epoch, best score."""
        checkpoint = torch.load(resume_file, map_location=self.device, weights_only=True)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint["best_valid_result"] or None
        self.valid_history = checkpoint["valid_history"]
        self.saved_model_file = checkpoint["best_model_file"]
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}")


def atomic_save(obj, path):
    """``torch.save`` to a temp file, then rename: an interrupted save never corrupts ``path``."""
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def with_safe_checkpoints(trainer_class):
    """``trainer_class`` (any RecBole trainer) with the plugin's checkpoints."""
    return type(trainer_class.__name__, (SafeCheckpointMixin, trainer_class), {})


SafeTrainer = with_safe_checkpoints(Trainer)
