"""Building blocks: the fMRL operator, nested LayerNorm, LRU blocks, nested-attention blocks, the
nested loss (eq. 14), item attribute embeddings and SASRec's initialisation."""

from recbole_fmrl.model.layers.attention import AttentionBlock, AttentionEncoder, AttentionState, NestedAttention
from recbole_fmrl.model.layers.attributes import ItemAttributeEmbedding
from recbole_fmrl.model.layers.fmrl import (
    FMRLLinear,
    NestedLayerNorm,
    check_size,
    count_parameters,
    doubling_sizes,
    first_size_index,
    sliced_state_dict,
)
from recbole_fmrl.model.layers.initialization import init_sasrec_weights
from recbole_fmrl.model.layers.nested_loss import nested_cross_entropy, sampled_cross_entropy
from recbole_fmrl.model.layers.lru import (
    GatedFeedForward,
    LRUBlock,
    LRUEncoder,
    LRULayer,
    PostNormLRUBlock,
    linear_scan,
)

__all__ = [
    "AttentionBlock",
    "AttentionEncoder",
    "AttentionState",
    "FMRLLinear",
    "GatedFeedForward",
    "ItemAttributeEmbedding",
    "LRUBlock",
    "LRUEncoder",
    "LRULayer",
    "NestedAttention",
    "NestedLayerNorm",
    "PostNormLRUBlock",
    "check_size",
    "count_parameters",
    "doubling_sizes",
    "first_size_index",
    "init_sasrec_weights",
    "linear_scan",
    "nested_cross_entropy",
    "sampled_cross_entropy",
    "sliced_state_dict",
]
