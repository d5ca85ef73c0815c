"""FMLP-Rec: Zhou, Yu, Zhao, Wen, "Filter-enhanced MLP is All You Need for Sequential
Recommendation" (WWW 2022)."""

from functools import partial

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import FeedForward
from torch import nn

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.model.protocol import PluginModel
from recbole_fmrl.model.layers import init_sasrec_weights


class FilterLayer(nn.Module):
    """Learnable filter over the sequence axis: ``irfft(rfft(x) ⊙ W)``, dropout, residual LayerNorm."""

    def __init__(self, max_seq_length, hidden_size, hidden_dropout_prob, layer_norm_eps):
        super().__init__()
        self.max_seq_length = max_seq_length
        self.complex_weight = nn.Parameter(torch.randn(max_seq_length // 2 + 1, hidden_size, 2) * 0.02)
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(self, x):
        spectrum = torch.fft.rfft(x, n=self.max_seq_length, dim=1, norm="ortho")
        spectrum = spectrum * torch.view_as_complex(self.complex_weight)
        filtered = torch.fft.irfft(spectrum, n=self.max_seq_length, dim=1, norm="ortho")
        return self.LayerNorm(self.dropout(filtered) + x)


class FMLPRec(PluginModel, SequentialRecommender):
    r"""FMLP-Rec: item + position embedding, LayerNorm, dropout, then ``n_layers`` x (filter layer,
    feed-forward Linear-GELU-Linear with dropout and residual LayerNorm); last position · item table.

    NOTE:
        As in the original code, sequences are left-aligned (padding first, last item at position
        L-1) before the (circular) FFT filter; RecBole gives them right-padded. Trained with CE.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        self.initializer_range = config["initializer_range"]
        if config["loss_type"] != "CE":
            raise ConfigError(f"FMLPRec is trained with the CE loss, got loss_type={config['loss_type']!r}")
        layer_norm_eps = config["layer_norm_eps"]
        dropout = config["hidden_dropout_prob"]

        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList()
        for _ in range(config["n_layers"]):
            self.layers.append(FilterLayer(self.max_seq_length, self.hidden_size, dropout, layer_norm_eps))
            self.layers.append(
                FeedForward(self.hidden_size, config["inner_size"], dropout, config["hidden_act"], layer_norm_eps)
            )
        self.apply(partial(init_sasrec_weights, std=self.initializer_range))

    @staticmethod
    def left_align(item_seq, item_seq_len):
        """Right-padded [B, L] -> left-padded: the last real item moves to position L-1."""
        length = item_seq.size(1)
        positions = torch.arange(length, device=item_seq.device)
        return item_seq.gather(1, (positions[None, :] + item_seq_len[:, None]) % length)

    def forward(self, item_seq, item_seq_len):
        item_seq = self.left_align(item_seq, item_seq_len)
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        hidden = self.item_embedding(item_seq) + self.position_embedding(positions)[None]
        hidden = self.dropout(self.LayerNorm(hidden))
        for layer in self.layers:
            hidden = layer(hidden)
        return hidden[:, -1]  # [B, D]

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
