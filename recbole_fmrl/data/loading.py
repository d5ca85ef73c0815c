"""A run's dataset: its folder made ready (an embedded dataset materialised with the feature files
the model reads, the interactions checked), then the dataset class every sequential model shares."""

import os

from recbole.utils import ModelType

from recbole_fmrl.config import get_model
from recbole_fmrl.data.embedded import EMBEDDED, ensure_embedded_dataset
from recbole_fmrl.errors import PluginError
from recbole_fmrl.inputs import check_inter_file
from recbole_fmrl.model.protocol import item_feature_modalities


def feature_modalities(config):
    """The modalities whose feature files the configured model reads (its ``item_feature_modalities``;
    RecBole's models and ID models read none)."""
    return item_feature_modalities(get_model(config["model"]), config)


def prepare_dataset_folder(config):
    """Make the dataset folder of ``config`` ready and return it: an embedded dataset is written there
    on first use, with only the feature files the model reads (:func:`feature_modalities`); any
    dataset fails with one line if its folder or ``.inter`` file is missing or the interactions are
    unusable (:func:`~recbole_fmrl.inputs.check_inter_file`)."""
    name, folder = config["dataset"], config["data_path"]
    if name in EMBEDDED:
        ensure_embedded_dataset(name, os.path.dirname(os.path.normpath(folder)), feature_modalities(config))
    inter_file = os.path.join(folder, f"{name}.inter")
    if not os.path.isdir(folder):
        raise PluginError(
            f"unknown dataset '{name}': no folder {folder} (embedded datasets: {', '.join(sorted(EMBEDDED))})"
        )
    if not os.path.isfile(inter_file):
        raise PluginError(f"dataset '{name}': interaction file {inter_file} not found")
    check_inter_file(inter_file, config)
    return folder


def create_dataset(config):
    """RecBole's dataset for ``config``; sequential models all use the multimodal dataset class,
    so plugin models and RecBole's baselines share the same splits."""
    from recbole.data import create_dataset as recbole_create_dataset

    from recbole_fmrl.data.dataset import MultimodalSequentialDataset

    prepare_dataset_folder(config)
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        return MultimodalSequentialDataset(config)
    return recbole_create_dataset(config)
