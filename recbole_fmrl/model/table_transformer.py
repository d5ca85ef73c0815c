"""The sequence encoder and scoring shared by the text-based baselines UniSRec and VQRec: SASRec's
causal Transformer (Kang & McAuley, ICDM 2018) over item representations that a subclass computes
for the whole catalogue, and the temperature-scaled cosine cross-entropy that both papers use to
fine-tune on the target domain. Trained on RecBole's prefixes (``train_mode: prefix``, as the
authors' RecBole code) or on every position of a sequence in one pass (``train_mode: sequence``, as
SASRec's own training; the causal mask makes position t a prefix of length t + 1)."""

from functools import partial

import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import TransformerEncoder
from torch import nn

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.inputs import positive_number
from recbole_fmrl.model.layers import init_sasrec_weights
from recbole_fmrl.model.next_item_training import NextItemTraining
from recbole_fmrl.model.protocol import ItemTableModel


class ItemTableTransformer(NextItemTraining, ItemTableModel, SequentialRecommender, partial=True):
    r"""``item_table()`` gives every item's representation ``[n_items, H]`` (computed once per step);
    a sequence reads its rows plus a learned position embedding through LayerNorm, dropout and
    RecBole's ``TransformerEncoder`` with a causal mask; the last position's output ``s`` scores item
    ``i`` by ``cos(s, e_i) / temperature`` (the cosine alone ranks at evaluation).
    """

    @classmethod
    def item_feature_modalities(cls, config):
        """The feature files the model reads: UniSRec and VQRec both read the text vectors."""
        return ["text"]

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size, heads = config["hidden_size"], config["n_heads"]
        if not all(isinstance(v, int) and v > 0 for v in (self.hidden_size, heads)) or self.hidden_size % heads:
            raise ConfigError(f"hidden_size must be a positive multiple of n_heads, got {self.hidden_size!r} and {heads!r}")
        if config["loss_type"] != "CE":
            raise ConfigError(f"{type(self).__name__} is trained with the CE loss, got loss_type={config['loss_type']!r}")
        self.temperature = positive_number("temperature", config["temperature"])
        self.initializer_range = config["initializer_range"]
        self.init_next_item_training(config)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        self.trm_encoder = TransformerEncoder(
            n_layers=config["n_layers"],
            n_heads=config["n_heads"],
            hidden_size=self.hidden_size,
            inner_size=config["inner_size"],
            hidden_dropout_prob=config["hidden_dropout_prob"],
            attn_dropout_prob=config["attn_dropout_prob"],
            hidden_act=config["hidden_act"],
            layer_norm_eps=config["layer_norm_eps"],
        )
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=config["layer_norm_eps"])
        self.dropout = nn.Dropout(config["hidden_dropout_prob"])

    def init_weights(self):
        """SASRec's initialisation of every submodule (subclasses call it once their layers exist)."""
        self.apply(partial(init_sasrec_weights, std=self.initializer_range))

    def encode(self, item_seq, item_table):
        """Transformer outputs at every position ``[B, L, H]`` (causal: position t reads items <= t)."""
        positions = self.position_embedding.weight[: item_seq.size(1)]
        hidden = self.dropout(self.LayerNorm(F.embedding(item_seq, item_table) + positions))
        return self.trm_encoder(hidden, self.get_attention_mask(item_seq), output_all_encoded_layers=False)[-1]

    def forward(self, item_seq, item_seq_len, item_table):
        """User representation ``[B, H]``: the Transformer output at the last real position."""
        return self.gather_indexes(self.encode(item_seq, item_table), item_seq_len - 1)

    def _user_and_items(self, interaction):
        table = self.item_table()
        user = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], table)
        return F.normalize(user, dim=-1), F.normalize(table, dim=-1)

    def calculate_loss(self, interaction):
        table = self.item_table()
        pairs = self.training_pairs(interaction, item_table=table)
        pairs = pairs._replace(outputs=F.normalize(pairs.outputs, dim=-1) / self.temperature)
        return self.next_item_loss(pairs, F.normalize(table, dim=-1))

    def predict(self, interaction):
        user, items = self._user_and_items(interaction)
        return (user * items[interaction[self.ITEM_ID]]).sum(dim=-1)  # [B]

    def full_sort_predict(self, interaction):
        user, items = self._user_and_items(interaction)
        return user @ items.T  # [B, n_items]
