"""Checkpoints that load under ``torch.load(weights_only=True)`` and resume after interruption,
replacing RecBole's, which pickle the whole Config object.

Two files per run: the best model (``saved_model_file``, as in RecBole) and ``<name>-last.pth``
written after every epoch, from which ``resume_checkpoint`` continues. Both are plain dicts of tensors
and Python values, with the run's ``identity`` (set by the runner:
:func:`~recbole_fmrl.checkpoint.run_identity`) and every random state of every process. In a
data-parallel run rank 0 names the run and writes its files (:mod:`recbole_fmrl.distributed`)."""

import os
import uuid

from recbole.utils import set_color

from recbole_fmrl import distributed
from recbole_fmrl.checkpoint import check_resume, rank_rng_state, read_checkpoint, rng_state, set_rng_state
from recbole_fmrl.config import to_primitive
from recbole_fmrl.files import copy_atomic, torch_save_atomic
from recbole_fmrl.trainer.run_names import release_claim, unused_model_file


class Checkpoints:
    """The checkpoint role of :class:`~recbole_fmrl.trainer.PluginTrainer` (a RecBole trainer's
    ``_save_checkpoint`` and ``resume_checkpoint``, and what they record)."""

    # Attributes whose ``state_dict()`` a checkpoint stores under their name and ``--resume`` restores.
    resumable_states = ("optimizer", "lr_scheduler")

    def init_checkpoints(self):
        self.valid_history = []  # [epoch, validation score, seconds since the previous one] per validated epoch
        self.identity = None  # what the run is trained on (checkpoint.run_identity), set by the runner
        self.train_data = None
        self.resumed_rng_state = None  # restored when training starts (fit)
        # rank 0 names the run: run_id tells this run's files from another run's of the same name
        self.saved_model_file, self.run_id = distributed.broadcast(
            (unused_model_file(self.saved_model_file), uuid.uuid4().hex) if distributed.is_main() else None)

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
            "identity": self.identity,
            "run_id": self.run_id,
            "world_size": distributed.world_size(),
            "rng_state": distributed.gather(rng_state(self._generators())),  # one per process, in rank order
            **{name: getattr(self, name).state_dict() for name in self.resumable_states},
        }

    def _generators(self):
        """The random generators of the training data (its shuffling), saved with the global ones."""
        generator = getattr(self.train_data, "generator", None)
        return [generator] if generator is not None else []

    def restore_rng_state(self):
        """The random state the interrupted run had at the epoch it continues from (once)."""
        if self.resumed_rng_state is not None:
            set_rng_state(self.resumed_rng_state, self._generators())
            self.resumed_rng_state = None

    @property
    def best_epoch(self):
        """The epoch whose checkpoint is the best one (None before any validation): the last epoch with
        the best validation score, as RecBole's ``early_stopping`` saves again on a tie."""
        sign = 1 if self.valid_metric_bigger else -1
        return max(self.valid_history, key=lambda row: (sign * row[1], row[0]), default=[None])[0]

    @property
    def seconds_per_epoch(self):
        """Mean wall time of an epoch, training and validation (None before any validation)."""
        seconds = [row[2] for row in self.valid_history if len(row) > 2]
        return round(sum(seconds) / len(seconds), 2) if seconds else None

    @property
    def last_model_file(self):
        return self.saved_model_file[: -len(".pth")] + "-last.pth"

    def _write_checkpoint(self, epoch, path):
        state = self._checkpoint_state(epoch)  # on every process: each sends its random state
        with distributed.main_first():  # the others go on once the file is there
            if distributed.is_main():
                torch_save_atomic(state, path)
                release_claim(self.saved_model_file)  # a file of the run now holds its name

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        self._write_checkpoint(epoch, saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def load_model_file(self, path):
        """The weights of the checkpoint ``path`` in the model, on every process (rank 0 reads the file)."""
        checkpoint = read_checkpoint(path) if distributed.is_main() else {}
        if distributed.is_main():
            self.model.load_state_dict(checkpoint["state_dict"])
        distributed.broadcast_module(self.model)
        self.model.load_other_parameter(distributed.broadcast(checkpoint.get("other_parameter")))
        self.logger.info(f"Loading model structure and parameters from {path}")

    def resume_checkpoint(self, resume_file, checkpoint=None):
        """Continue the run of a ``-last.pth`` (or best) checkpoint exactly where it stopped: weights,
        ``resumable_states``, epoch, early-stopping state and every random state (each process its own).

        Refused with one line (before anything is written) when the checkpoint is not of this model,
        dataset, shape and number of processes (:func:`~recbole_fmrl.checkpoint.check_resume`). The
        run goes on in this run's ``checkpoint_dir`` under the checkpoint's file names; the best
        checkpoint so far is read from beside ``resume_file`` (the folder may have moved) and copied
        there if elsewhere. ``checkpoint``: the file's content if already read. In a data-parallel run
        every process reads the file (shared storage, or the same path on every machine).
        """
        if distributed.is_main():
            release_claim(self.saved_model_file)  # a resumed run goes on under the checkpoint's name
        checkpoint = checkpoint or read_checkpoint(resume_file)
        best_source = check_resume(checkpoint, resume_file, self)
        name = os.path.basename(checkpoint["best_model_file"])
        self.saved_model_file = os.path.join(self.checkpoint_dir, name)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        for state in self.resumable_states:
            getattr(self, state).load_state_dict(checkpoint[state])
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint["best_valid_result"] or None
        self.valid_history = checkpoint["valid_history"]
        self.run_id = checkpoint["run_id"]
        self.resumed_rng_state = rank_rng_state(checkpoint["rng_state"], distributed.rank())
        if distributed.is_main() and (not os.path.exists(self.saved_model_file)
                                      or not os.path.samefile(best_source, self.saved_model_file)):
            copy_atomic(best_source, self.saved_model_file)
        self.logger.info(f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}")
