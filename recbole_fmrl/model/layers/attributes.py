"""Learned embeddings of an item's categorical fields (RecBole ``token`` / ``token_seq`` fields such as
brand and categories), the ``attributes`` input of fMRLRec's item encoder (eq. 7)."""

import torch
import torch.nn.functional as F
from torch import nn


class ItemAttributeEmbedding(nn.Module):
    """One learned table per field; an item's field vector is its token's row (``token``) or the mean
    of its tokens' rows (``token_seq``; zeros for none), and the fields are concatenated:
    ``[n_items, n_fields · dim]``. Every field's rows are read at every size m of fMRLRec: they are
    inputs of its item projection, not outputs, so a size-m export keeps them whole.

    ``field_ids``: one LongTensor ``[n_items, L]`` per field (token ids, 0 = padding);
    ``vocab_sizes``: the number of token ids of each field (padding included).
    """

    def __init__(self, field_ids, vocab_sizes, dim):
        super().__init__()
        self.dim = dim
        self.tables = nn.ModuleList(nn.Embedding(n, dim, padding_idx=0) for n in vocab_sizes)
        for i, (ids, table) in enumerate(zip(field_ids, self.tables)):
            self.register_buffer(f"ids_{i}", ids.long(), persistent=False)  # from the dataset, not saved
            nn.init.trunc_normal_(table.weight, std=0.02, a=-0.04, b=0.04)  # as fMRLRec's ID embedding
            with torch.no_grad():
                table.weight[0].zero_()

    @property
    def out_dim(self):
        return self.dim * len(self.tables)

    def forward(self, items=None):
        """Attribute vectors of ``items`` (any shape of item ids) or, if None, of every item."""
        vectors = []
        for i, table in enumerate(self.tables):
            ids = getattr(self, f"ids_{i}")
            ids = ids if items is None else ids[items]
            flat = F.embedding_bag(ids.reshape(-1, ids.size(-1)), table.weight, mode="mean", padding_idx=0)
            vectors.append(flat.reshape(*ids.shape[:-1], self.dim))
        return torch.cat(vectors, dim=-1)

    def sliced_parameters(self, index):
        """Every size keeps the whole tables (they feed the projection, whose rows are sliced)."""
        return {f"tables.{i}.weight": table.weight for i, table in enumerate(self.tables)}
