"""Model, dataset and trainer lookup for the plugin (RecBole's own helpers only know RecBole)."""

import os

from recbole.utils import ModelType
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_fmrl.config import get_model
from recbole_fmrl.errors import PluginError
from recbole_fmrl.inputs import check_inter_file
from recbole_fmrl.trainer import SafeTrainer, with_safe_checkpoints

__all__ = ["get_model", "get_trainer", "check_dataset_files", "create_dataset"]


def get_trainer(model_type, model_name):
    """The trainer for ``model_name`` with the plugin's ``weights_only``-safe checkpoints."""
    from recbole_fmrl.config import plugin_model_names

    if model_name in plugin_model_names():
        return SafeTrainer
    return with_safe_checkpoints(recbole_get_trainer(model_type, model_name))


def check_dataset_files(config):
    """Prepare an embedded dataset on first use; else fail with one line if files are missing or the
    interactions are unusable (:func:`~recbole_fmrl.inputs.check_inter_file`)."""
    from dataset_prep.embedded import EMBEDDED, ensure_embedded_dataset

    name, folder = config["dataset"], config["data_path"]
    if name in EMBEDDED:
        ensure_embedded_dataset(name, os.path.dirname(os.path.normpath(folder)))
    inter_file = os.path.join(folder, f"{name}.inter")
    if not os.path.isdir(folder):
        raise PluginError(
            f"unknown dataset '{name}': no folder {folder} (embedded datasets: {', '.join(sorted(EMBEDDED))})"
        )
    if not os.path.isfile(inter_file):
        raise PluginError(f"dataset '{name}': interaction file {inter_file} not found")
    check_inter_file(inter_file, config)


def create_dataset(config):
    """RecBole's dataset for ``config``; sequential models all use the multimodal dataset class,
    so plugin models and RecBole's baselines share the same splits."""
    from recbole.data import create_dataset as recbole_create_dataset

    from recbole_fmrl.data.dataset import MultimodalSequentialDataset

    check_dataset_files(config)
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        return MultimodalSequentialDataset(config)
    return recbole_create_dataset(config)
