"""LRURec: Yue, Wang, He, Zeng, McAuley, Wang, "Linear Recurrent Units for Sequential
Recommendation" (WSDM 2024, arXiv 2310.02367)."""

from recbole.model.abstract_recommender import SequentialRecommender
from torch import nn

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.model.id_scoring import ItemEmbeddingScoring
from recbole_fmrl.model.layers import LRUEncoder


class LRURec(ItemEmbeddingScoring, SequentialRecommender):
    r"""ID-based LRU recommender: item embedding -> dropout -> LayerNorm -> LRU blocks, scored
    against the item embedding table with the CE loss.

    NOTE:
        The blocks are fMRLRec's LRU blocks at a single size (``mrl_hidden_sizes = [D]``), so fMRLRec
        and LRURec differ only in their item representations and nesting: pre-LN residual blocks with a
        gated SiLU feed-forward instead of LRURec's post-LN GELU feed-forward, and no item bias.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        if config["loss_type"] != "CE":
            raise ConfigError(f"LRURec is trained with the CE loss, got loss_type={config['loss_type']!r}")
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        nn.init.trunc_normal_(self.item_embedding.weight, std=0.02, a=-0.04, b=0.04)
        self.embedding_dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.embedding_norm = nn.LayerNorm(self.hidden_size)
        self.encoder = LRUEncoder.from_config([self.hidden_size], config)

    def forward(self, item_seq, item_seq_len):
        embedded = self.embedding_norm(self.embedding_dropout(self.item_embedding(item_seq)))
        output = self.encoder(embedded, item_seq != 0)
        return self.gather_indexes(output, item_seq_len - 1)  # [B, D]
