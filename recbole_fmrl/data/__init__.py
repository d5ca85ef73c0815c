"""Datasets and training loaders of the plugin (a run's dataset is made by :mod:`recbole_fmrl.data.loading`,
which resolves the model: kept out of this package's import so models may import data modules)."""

from recbole_fmrl.data.dataloader import LengthGroupedTrainDataLoader, SeenExcludingEvalDataLoader, data_preparation
from recbole_fmrl.data.dataset import MultimodalSequentialDataset, read_feature_file, sequence_window_rows

__all__ = [
    "LengthGroupedTrainDataLoader",
    "MultimodalSequentialDataset",
    "SeenExcludingEvalDataLoader",
    "data_preparation",
    "read_feature_file",
    "sequence_window_rows",
]
