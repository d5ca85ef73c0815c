"""Building blocks: the fMRL operator, nested LayerNorm, the LRU block and SASRec's initialisation."""

from recbole_fmrl.model.layers.fmrl import (
    FMRLLinear,
    NestedLayerNorm,
    check_nested_sizes,
    count_parameters,
    doubling_sizes,
    sliced_state_dict,
)
from recbole_fmrl.model.layers.initialization import init_sasrec_weights
from recbole_fmrl.model.layers.lru import GatedFeedForward, LRUBlock, LRUEncoder, LRULayer, linear_scan

__all__ = [
    "FMRLLinear",
    "GatedFeedForward",
    "LRUBlock",
    "LRUEncoder",
    "LRULayer",
    "NestedLayerNorm",
    "check_nested_sizes",
    "count_parameters",
    "doubling_sizes",
    "init_sasrec_weights",
    "linear_scan",
    "sliced_state_dict",
]
