"""LRURec: Yue, Wang, He, Zeng, McAuley, Wang, "Linear Recurrent Units for Sequential
Recommendation" (WSDM 2024, arXiv 2310.02367), as published with the authors' code."""

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from torch import nn

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.inputs import positive_ints
from recbole_fmrl.model.layers import LRUEncoder, PostNormLRUBlock
from recbole_fmrl.model.next_item_training import NextItemTraining, trim_padding


class LRURec(NextItemTraining, SequentialRecommender):
    r"""ID-based LRU recommender: item embedding -> dropout -> LayerNorm, ``n_layers`` post-LN
    blocks (LRU with 2D complex state units, dropout, residual, LayerNorm; then a D -> 4D -> D GELU
    feed-forward with dropout, residual, LayerNorm), scores ``h · Eᵀ + b`` with a per-item bias b
    and the shared item embedding E, CE loss over every position (``train_mode: sequence``).

    Initialisation as in the authors' code: every parameter except the LayerNorms and the LRU's
    ``params_log`` (ring-initialised, ``r_min <= |λ| <= r_max``) is drawn from a normal with
    std 0.02 truncated to ±0.04.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        positive_ints(hidden_size=self.hidden_size, n_layers=config["n_layers"])
        if config["loss_type"] != "CE":
            raise ConfigError(f"LRURec is trained with the CE loss, got loss_type={config['loss_type']!r}")
        self.init_next_item_training(config)
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size)
        self.embedding_dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.embedding_norm = nn.LayerNorm(self.hidden_size)
        self.encoder = LRUEncoder(
            PostNormLRUBlock(
                self.hidden_size,
                hidden_dropout=config["hidden_dropout_prob"],
                lru_dropout=config["attn_dropout_prob"],
                r_min=config["r_min"],
                r_max=config["r_max"],
            )
            for _ in range(config["n_layers"])
        )
        self.item_bias = nn.Parameter(torch.zeros(self.n_items))
        self._truncated_normal_init()

    def _truncated_normal_init(self, std=0.02):
        norms = {id(p) for m in self.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
        with torch.no_grad():
            for name, param in self.named_parameters():
                if id(param) not in norms and not name.endswith("params_log"):
                    nn.init.trunc_normal_(param, std=std, a=-2 * std, b=2 * std)

    def encode(self, item_seq):
        """Hidden states of every position, [B, L, D]; position t only reads items <= t."""
        embedded = self.embedding_norm(self.embedding_dropout(self.item_embedding(item_seq)))
        return self.encoder(embedded, item_seq != 0)

    def forward(self, item_seq, item_seq_len):
        return self.gather_indexes(self.encode(trim_padding(item_seq, item_seq_len)), item_seq_len - 1)  # [B, D]

    def calculate_loss(self, interaction):
        return self.next_item_loss(self.training_pairs(interaction), self.item_embedding.weight, bias=self.item_bias)

    def predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        items = interaction[self.ITEM_ID]
        return (seq_output * self.item_embedding(items)).sum(dim=1) + self.item_bias[items]  # [B]

    def full_sort_predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return torch.addmm(self.item_bias, seq_output, self.item_embedding.weight.T)  # [B, n_items]
