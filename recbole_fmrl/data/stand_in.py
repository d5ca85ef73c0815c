"""A stand-in for a RecBole dataset where only a model's size matters (parameter counts, benchmarks):
the little a model's constructor reads, ``num(item field)`` and ``item_features(modality)`` (no
item attributes)."""

import torch

from recbole_fmrl.errors import FeatureFileError


class StandInDataset:
    """``item_num`` items (row 0 is RecBole's padding) with feature matrices of the given widths:
    zeros, or with ``seed`` standard-normal draws (row 0 zeros), so a real model can be built at any
    scale without data."""

    def __init__(self, item_num, feature_dims, seed=None):
        self.item_num = int(item_num)
        self.feature_dims = dict(feature_dims)
        self.features = {}
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        for modality, dim in self.feature_dims.items():
            if generator is None:
                self.features[modality] = torch.zeros(self.item_num, dim)
            else:
                table = torch.randn(self.item_num, dim, generator=generator)
                table[0] = 0.0
                self.features[modality] = table

    def num(self, field):
        return self.item_num

    def item_features(self, modality):
        if modality not in self.features:
            raise FeatureFileError(f"no feature width given for modality '{modality}'")
        return self.features[modality]

    def item_attributes(self, field):
        raise FeatureFileError(
            f"a stand-in dataset has no item attributes (field '{field}'): leave out the attributes modality")
