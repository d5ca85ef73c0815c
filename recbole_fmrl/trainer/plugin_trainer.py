"""The plugin's trainer: RecBole's training loop with the plugin's checkpoints (:mod:`.checkpoints`),
optimiser recipe and per-entry rates (:mod:`.recipe`), the large-model notice (:mod:`.notice`) and
data parallelism (:mod:`.data_parallel`), combined in one class with one ``fit``."""

import time

from recbole.trainer import Trainer
from recbole.utils import get_trainer as recbole_get_trainer
from torch import optim

from recbole_fmrl import distributed
from recbole_fmrl.config import plugin_model_names
from recbole_fmrl.model.protocol import learning_rate_multipliers
from recbole_fmrl.trainer import notice, recipe
from recbole_fmrl.trainer.checkpoints import Checkpoints
from recbole_fmrl.trainer.data_parallel import DataParallel, DiscardedWriter, GatheringCollector


class PluginTrainer(Checkpoints, Trainer):
    """RecBole's trainer with, on top:

    * checkpoints as plain dicts, a ``-last.pth`` after every epoch, exact resume (:class:`Checkpoints`);
    * the recipe keys ``adam_epsilon``, ``decay_bias_and_norm``, ``warmup_steps``, ``lr_schedule``
      (``constant`` | ``cosine`` over ``epochs`` × batches per epoch, stepped after every optimiser
      step) and the model's ``learning_rate_multipliers()`` (:func:`~.recipe.scale_updates`);
      RecBole's own ``clip_grad_norm`` clips gradients;
    * one warning when a model of ``hidden_size`` >= ``notice.LARGE_FOR_CPU`` trains on a CPU;
    * in a data-parallel run (:mod:`recbole_fmrl.distributed`), the optimiser steps and metrics of one
      process (:class:`~.data_parallel.DataParallel`, :class:`~.data_parallel.GatheringCollector`),
      and files written by rank 0 only (the others' TensorBoard writer discards).
    """

    def __init__(self, config, model):
        schedule, warmup_steps = recipe.check_schedule(config)
        with distributed.writes_discarded():
            super().__init__(config, model)
            if not distributed.is_main():
                self.tensorboard.close()
                self.tensorboard = DiscardedWriter()
        self.data_parallel = DataParallel(model, self.device) if distributed.is_distributed() else None
        if self.data_parallel:
            self.eval_collector = GatheringCollector(config)
        self.init_checkpoints()
        self.total_steps = self.epochs  # set to epochs x batches per epoch when training starts
        self.lr_scheduler = optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: recipe.warmup_then(schedule, warmup_steps, self.total_steps)(step)
        )

    def _build_optimizer(self, **kwargs):
        optimizer = None if kwargs else recipe.adam_optimizer(self.model, self.config, self.weight_decay,
                                                               self.learning_rate)
        return optimizer or super()._build_optimizer(**kwargs)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        """RecBole's epoch; in a data-parallel run through :meth:`DataParallel.loss_function
        <.data_parallel.DataParallel.loss_function>`, the loss reported the mean over processes (the
        global batches' loss)."""
        if self.data_parallel is None:
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        loss_func = self.data_parallel.loss_function(loss_func or self.model.calculate_loss)
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        return distributed.mean_over_ranks(loss, self.device)

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's ``evaluate``; the best model (or ``model_file``) is read by rank 0 and sent to
        every process (no process reads a file another is writing)."""
        if load_best_model and eval_data:
            self.load_model_file(model_file or self.saved_model_file)
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self.train_data = train_data
        self.restore_rng_state()
        self.total_steps = self.epochs * len(train_data)
        hooks = [self.optimizer.register_step_post_hook(lambda *_: self.lr_scheduler.step())]
        multipliers = learning_rate_multipliers(self.model)
        if multipliers:
            hooks += recipe.scale_updates(self.optimizer, multipliers)
        hidden_size = self.config["hidden_size"]
        if notice.is_large_for(self.device, hidden_size):
            batches = len(train_data)
            hooks.append(notice.time_first_steps(self.optimizer, batches, lambda step, steps: self.logger.warning(
                notice.large_model_notice(self.config, self.epochs, hidden_size, batches, step, steps))))
        epoch_started = [time.monotonic()]

        def after_epoch(epoch_idx, valid_score):
            self.valid_history.append([epoch_idx, float(valid_score), round(time.monotonic() - epoch_started[0], 3)])
            if saved:
                self._write_checkpoint(epoch_idx, self.last_model_file)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)
            epoch_started[0] = time.monotonic()

        try:
            return super().fit(train_data, valid_data, verbose, saved, show_progress, after_epoch)
        finally:
            for hook in hooks:
                hook.remove()


def plugin_trainer(trainer_class):
    """:class:`PluginTrainer` over ``trainer_class`` (any RecBole trainer; its name kept)."""
    if trainer_class is Trainer:
        return PluginTrainer
    return type(trainer_class.__name__, (PluginTrainer, trainer_class), {})


def get_trainer(model_type, model_name):
    """The trainer for ``model_name``: :class:`PluginTrainer` for the plugin's models, else over
    RecBole's trainer for the model (by name or model type)."""
    if model_name in plugin_model_names():
        return PluginTrainer
    return plugin_trainer(recbole_get_trainer(model_type, model_name))
