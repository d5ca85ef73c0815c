"""The plugin's trainer, by role: :mod:`.checkpoints` (plain-dict checkpoints, exact resume),
:mod:`.run_names` (distinct run file names in one second), :mod:`.recipe` (the authors' optimiser,
warm-up and decay, per-entry rates), :mod:`.notice` (a model too large for a CPU), combined in
:class:`PluginTrainer` (:mod:`.plugin_trainer`)."""

from recbole_fmrl.trainer.plugin_trainer import PluginTrainer, get_trainer, plugin_trainer

__all__ = ["PluginTrainer", "get_trainer", "plugin_trainer"]
