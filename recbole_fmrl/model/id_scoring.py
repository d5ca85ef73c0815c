"""Scoring shared by the plugin's ID-based sequential models (LRURec, FMLP-Rec)."""

import torch
from torch import nn


class ItemEmbeddingScoring:
    """CE loss and scores of ``forward(item_seq, item_seq_len)`` [B, D] against ``item_embedding``,
    the ID table that also embeds the input sequence (shared input/output embeddings)."""

    def calculate_loss(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        logits = seq_output @ self.item_embedding.weight.T
        return nn.functional.cross_entropy(logits, interaction[self.POS_ITEM_ID])

    def predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        test_item_emb = self.item_embedding(interaction[self.ITEM_ID])
        return torch.mul(seq_output, test_item_emb).sum(dim=1)  # [B]

    def full_sort_predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return seq_output @ self.item_embedding.weight.T  # [B, n_items]
