"""The plugin's training loop additions: the authors' optimiser recipe (Adam epsilon, warm-up and
decay schedule, no decay on biases and norms) and checkpoints that load under
``torch.load(weights_only=True)`` and resume after interruption."""

import atexit
import math
import os
import time
import uuid
from pathlib import Path

import torch
from recbole.trainer import Trainer
from recbole.utils import get_trainer as recbole_get_trainer
from recbole.utils import set_color
from torch import nn, optim

from recbole_fmrl.checkpoint import check_resume, read_checkpoint, rng_state, set_rng_state
from recbole_fmrl.config import PROPERTIES_DIR, plugin_model_names, to_primitive
from recbole_fmrl.errors import ConfigError
from recbole_fmrl.files import copy_atomic, torch_save_atomic
from recbole_fmrl.model.layers import NestedLayerNorm
from recbole_fmrl.model.protocol import learning_rate_multipliers

RUN_FILE_SUFFIXES = (".pth", "-last.pth", ".results.json")  # the files of one run, after its stem


class SafeCheckpointMixin:
    """Replaces RecBole's checkpoints, which pickle the whole Config object.

    Two files per run: the best model (``saved_model_file``, as in RecBole) and
    ``<name>-last.pth`` written after every epoch, from which ``resume_checkpoint`` continues.
    Both are plain dicts of tensors and Python values, with the run's ``identity`` (set by the
    runner: :func:`~recbole_fmrl.checkpoint.run_identity`) and every random state.
    """

    # Attributes whose ``state_dict()`` a checkpoint stores under their name and ``--resume`` restores.
    resumable_states = ("optimizer", "lr_scheduler")

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
            "rng_state": rng_state(self._generators()),
            **{name: getattr(self, name).state_dict() for name in self.resumable_states},
        }

    def __init__(self, config, model):
        super().__init__(config, model)
        self.valid_history = []  # [epoch, validation score, seconds since the previous one] per validated epoch
        self.identity = None  # what the run is trained on (checkpoint.run_identity), set by the runner
        self.run_id = uuid.uuid4().hex  # tells this run's files from another run's of the same name
        self.train_data = None
        self.resumed_rng_state = None  # restored when training starts (fit)
        self.saved_model_file = unused_model_file(self.saved_model_file)

    def _generators(self):
        """The random generators of the training data (its shuffling), saved with the global ones."""
        generator = getattr(self.train_data, "generator", None)
        return [generator] if generator is not None else []

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
        torch_save_atomic(self._checkpoint_state(epoch), path)
        release_claim(self.saved_model_file)  # a file of the run now holds its name

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        self._write_checkpoint(epoch, saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self.train_data = train_data
        if self.resumed_rng_state is not None:  # the random state the interrupted run had at this epoch
            set_rng_state(self.resumed_rng_state, self._generators())
            self.resumed_rng_state = None

        epoch_started = [time.monotonic()]

        def after_epoch(epoch_idx, valid_score):
            self.valid_history.append([epoch_idx, float(valid_score), round(time.monotonic() - epoch_started[0], 3)])
            if saved:
                self._write_checkpoint(epoch_idx, self.last_model_file)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)
            epoch_started[0] = time.monotonic()

        return super().fit(train_data, valid_data, verbose, saved, show_progress, after_epoch)

    def resume_checkpoint(self, resume_file, checkpoint=None):
        """Continue the run of a ``-last.pth`` (or best) checkpoint exactly where it stopped: weights,
        ``resumable_states``, epoch, early-stopping state and every random state.

        Refused with one line (before anything is written) when the checkpoint is not of this model,
        dataset and shape (:func:`~recbole_fmrl.checkpoint.check_resume`). The run goes on in this
        run's ``checkpoint_dir`` under the checkpoint's file names; the best checkpoint so far is
        read from beside ``resume_file`` (the folder may have moved) and copied there if elsewhere.
        ``checkpoint``: the file's content if already read.
        """
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
        self.resumed_rng_state = checkpoint["rng_state"]
        if not os.path.exists(self.saved_model_file) or not os.path.samefile(best_source, self.saved_model_file):
            copy_atomic(best_source, self.saved_model_file)
        self.logger.info(f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}")


LR_SCHEDULES = ("constant", "cosine")


def warmup_then(schedule, warmup_steps, total_steps):
    """LR multiplier of step s: ``s / warmup_steps`` during warm-up, then 1 (``constant``) or a
    half cosine from 1 to 0 at ``total_steps`` (``cosine``), as the authors' trainer uses."""

    def multiplier(step):
        if step < warmup_steps:
            return step / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))

    return multiplier


def parameter_groups(model, weight_decay, decay_bias_and_norm):
    """Optimiser groups: with ``decay_bias_and_norm`` False, biases and LayerNorm parameters get no
    weight decay (the fMRLRec and LRURec authors' optimiser)."""
    if decay_bias_and_norm:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, (nn.LayerNorm, NestedLayerNorm)) for p in m.parameters()
    }
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            exempt = id(param) in norm_params or name.split(".")[-1].endswith("bias")
            (no_decay if exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TrainingRecipeMixin:
    """Config keys on top of RecBole's trainer (defaults keep RecBole's behaviour):
    ``adam_epsilon``, ``decay_bias_and_norm``, ``warmup_steps`` and ``lr_schedule``
    (``constant`` | ``cosine`` over ``epochs`` × batches per epoch), stepped after every optimiser
    step, and the model's ``learning_rate_multipliers()`` where it has them (:func:`scale_updates`).
    RecBole's own ``clip_grad_norm`` clips gradients.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        schedule, warmup_steps = config["lr_schedule"], config["warmup_steps"]
        if schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {schedule!r}")
        if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        self.total_steps = self.epochs  # set to epochs x batches per epoch when training starts
        self.lr_scheduler = optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_then(schedule, warmup_steps, self.total_steps)(step)
        )

    def _build_optimizer(self, **kwargs):
        learner = self.config["learner"].lower()
        if kwargs or learner not in ("adam", "adamw"):
            return super()._build_optimizer(**kwargs)
        groups = parameter_groups(self.model, self.weight_decay, self.config["decay_bias_and_norm"])
        optimizer_class = optim.AdamW if learner == "adamw" else optim.Adam
        return optimizer_class(groups, lr=self.learning_rate, eps=self.config["adam_epsilon"])

    def fit(self, train_data, *args, **kwargs):
        self.total_steps = self.epochs * len(train_data)
        hooks = [self.optimizer.register_step_post_hook(lambda *_: self.lr_scheduler.step())]
        multipliers = learning_rate_multipliers(self.model)
        if multipliers:
            hooks += scale_updates(self.optimizer, multipliers)
        try:
            return super().fit(train_data, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()


def scale_updates(optimizer, multipliers):
    """Per-entry learning rates: every step's change of parameter p (Adam's update and the decoupled
    weight decay, both linear in the rate) is multiplied by ``multipliers[p]``. Returns the hooks."""
    before = {p: torch.empty_like(p) for p in multipliers}  # reused every step: no allocation per step

    @torch.no_grad()
    def remember(*_):
        for p, copy in before.items():
            copy.copy_(p)

    @torch.no_grad()
    def scale(*_):
        for p, factor in multipliers.items():
            p.sub_(before[p]).mul_(factor).add_(before[p])

    return [optimizer.register_step_pre_hook(remember), optimizer.register_step_post_hook(scale)]


LARGE_FOR_CPU = 512  # hidden sizes from which a model is large for a CPU (the paper's D = 1024: hours per epoch)
TIMED_STEPS = 5  # training steps timed, after the first, for the epoch estimate


def duration(seconds):
    """``"2 h 05 min"``, ``"14 min"``, ``"40 s"``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{round(seconds / 60)} min" if seconds >= 90 else f"{max(1, round(seconds))} s"


class LargeModelNoticeMixin:
    """A model of ``hidden_size`` >= :data:`LARGE_FOR_CPU` trained on a CPU gets one warning when
    training starts: one epoch's time estimated from its first training steps, the epochs the config
    allows, and the CPU-sized config (``properties/demo.yaml``)."""

    def fit(self, train_data, *args, **kwargs):
        hidden_size = self.config["hidden_size"]
        if self.device.type != "cpu" or not isinstance(hidden_size, int) or hidden_size < LARGE_FOR_CPU:
            return super().fit(train_data, *args, **kwargs)
        batches, times = len(train_data), [time.perf_counter()]

        def after_step(*_):
            times.append(time.perf_counter())
            if len(times) == min(TIMED_STEPS + 2, batches + 1):  # the first step is warm-up when others follow
                timed = len(times) - 2
                step = (times[-1] - times[1]) / timed if timed else times[1] - times[0]
                self.logger.warning(self.large_model_notice(hidden_size, batches, step, max(timed, 1)))

        hook = self.optimizer.register_step_post_hook(after_step)
        try:
            return super().fit(train_data, *args, **kwargs)
        finally:
            hook.remove()

    def large_model_notice(self, hidden_size, batches, step_seconds, steps):
        demo = os.path.relpath(PROPERTIES_DIR / "demo.yaml")
        demo = demo if not demo.startswith("..") else str(PROPERTIES_DIR / "demo.yaml")
        return (
            f"{self.config['model']} with hidden_size={hidden_size} is large for a CPU: one epoch ({batches:,} batches) "
            f"takes about {duration(step_seconds * batches)} here ({step_seconds:.2f} s per batch over the first "
            f"{steps} step{'s' * (steps > 1)}), for up to {self.epochs} epoch{'s' * (self.epochs > 1)} (early stopping "
            f"after {self.config['stopping_step']} without improvement). On a CPU use --config_files={demo} (D = 64) "
            "or --hidden_size=64; "
            "on a GPU, --gpu_id=0 (README: GPU)."
        )


def unused_model_file(path):
    """``path`` (``<stem>.pth``), or ``<stem>-2.pth``, ... when a run started in the same second
    already owns that stem (RecBole names runs by model and time to the second).

    A stem is owned by any file of a run (``RUN_FILE_SUFFIXES``) or by its claim, which this function
    creates exclusively (``O_EXCL``): two processes choosing at once never get the same name. The
    claim goes once the run has saved a file (:func:`release_claim`) or its process exits."""
    base = path[: -len(".pth")]
    stem, n = base, 1
    while True:
        if not any(os.path.exists(stem + suffix) for suffix in RUN_FILE_SUFFIXES):
            try:
                os.close(os.open(claim_file(stem + ".pth"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                atexit.register(release_claim, stem + ".pth")
                return stem + ".pth"
        n += 1
        stem = f"{base}-{n}"


def claim_file(model_file):
    folder, name = os.path.split(model_file[: -len(".pth")])
    return os.path.join(folder, f".{name}.claim")


def release_claim(model_file):
    Path(claim_file(model_file)).unlink(missing_ok=True)


def with_safe_checkpoints(trainer_class):
    """``trainer_class`` (any RecBole trainer) with the plugin's recipe keys and checkpoints, and the
    notice for a model too large for a CPU."""
    return type(trainer_class.__name__, (SafeCheckpointMixin, LargeModelNoticeMixin, TrainingRecipeMixin, trainer_class), {})


SafeTrainer = with_safe_checkpoints(Trainer)


def get_trainer(model_type, model_name):
    """The trainer for ``model_name``: RecBole's for its model type, with the plugin's recipe keys and
    ``weights_only``-safe checkpoints (:func:`with_safe_checkpoints`)."""
    if model_name in plugin_model_names():
        return SafeTrainer
    return with_safe_checkpoints(recbole_get_trainer(model_type, model_name))
