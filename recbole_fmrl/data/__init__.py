"""Datasets of the plugin."""

from recbole_fmrl.data.dataset import MultimodalSequentialDataset, read_feature_file

__all__ = ["MultimodalSequentialDataset", "read_feature_file"]
