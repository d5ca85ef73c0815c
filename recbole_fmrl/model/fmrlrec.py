"""fMRLRec: Wang, Yue, Zeng, Wang, McAuley, "Train Once, Deploy Anywhere: Matryoshka
Representation Learning for Multimodal Recommendation" (arXiv 2409.16627)."""

import hashlib

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from torch import nn

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.inputs import choice, nested_size_list, non_negative_number, positive_int
from recbole_fmrl.model.layers import (
    AttentionEncoder,
    ItemAttributeEmbedding,
    LRUEncoder,
    check_size,
    doubling_sizes,
    first_size_index,
    sliced_state_dict,
)
from recbole_fmrl.model.next_item_training import NextItemTraining, trim_padding
from recbole_fmrl.model.protocol import NestedModel, StatefulModel

FEATURE_MODALITIES = ("text", "image")
MODALITIES = FEATURE_MODALITIES + ("attributes", "id")
ENCODERS = {"lru": LRUEncoder, "transformer": AttentionEncoder}  # the sequence encoders (config key ``encoder``)


class MultimodalItemEncoder(nn.Module):
    """Item representations ``E = W·concat(text, image, attributes) + b`` (eq. 7): frozen feature
    tables and, with ``attributes`` (an :class:`ItemAttributeEmbedding`), learned embeddings of the
    item's categorical fields (brand, categories, ...) joined to the same concatenation.

    With modality ``id`` a learned ID embedding is added, i.e. the one-hot item ID is one more
    concatenated input of the same linear map; ``id`` alone is the paper's ID-only ablation.
    """

    def __init__(self, features, n_items, use_id, sizes, attributes=None):
        super().__init__()
        self.sizes = list(sizes)
        dim = self.sizes[-1]
        width = 0
        if features:
            table = torch.cat([table.float() for table in features], dim=-1)
            self.register_buffer("features", table, persistent=False)  # frozen, not saved
            width += table.size(-1)
        else:
            self.features = None
        self.attributes = attributes
        if attributes is not None:
            width += attributes.out_dim
        self.projection = nn.Linear(width, dim) if width else None
        self.id_embedding = nn.Embedding(n_items, dim, padding_idx=0) if use_id else None
        if use_id:
            nn.init.trunc_normal_(self.id_embedding.weight, std=0.02, a=-0.04, b=0.04)

    def forward(self, items=None):
        """Representations of ``items`` (any shape of ids) or, if None, of the whole catalogue."""
        representation = 0
        if self.projection is not None:
            inputs = [] if self.features is None else [self.features if items is None else self.features[items]]
            if self.attributes is not None:
                inputs.append(self.attributes(items))
            representation = self.projection(torch.cat(inputs, dim=-1) if len(inputs) > 1 else inputs[0])
        if self.id_embedding is not None:
            ids = self.id_embedding.weight if items is None else self.id_embedding(items)
            representation = representation + ids
        return representation

    def sliced_parameters(self, index):
        size = self.sizes[index]
        params = {}
        if self.projection is not None:
            params["projection.weight"] = self.projection.weight[:size]
            params["projection.bias"] = self.projection.bias[:size]
        if self.id_embedding is not None:
            params["id_embedding.weight"] = self.id_embedding.weight[:, :size]
        return params


class fMRLRec(NextItemTraining, NestedModel, StatefulModel, SequentialRecommender):
    r"""fMRLRec (arXiv 2409.16627): multimodal item projection (eq. 7), a sequence encoder made of fMRL
    layers (eq. 4-5) so that every size m in M = ``mrl_hidden_sizes`` is a sub-model (``encoder``:
    ``lru``, the paper's LRU blocks, or ``transformer``, nested causal attention), scores
    ``h[:m] · E[:, :m]ᵀ`` with h the last block's output (eq. 13) and the loss summed over all
    sizes (eq. 14), averaged over the batch's training pairs (``train_mode``: every position of
    every sequence, as in the authors' code, or RecBole's prefixes).

    Modalities (``modalities``): ``text`` and ``image`` (frozen feature files), ``attributes`` (the
    item fields listed in ``attributes``, e.g. ``[brand, categories]``, each with a learned
    embedding of ``attribute_embedding_size``) and ``id`` (a learned ID embedding).
    ``eval_size`` selects the size used by ``predict``/``full_sort_predict``;
    ``sliced_state_dict(m)`` with ``sliced_config(m)`` export the standalone size-m model, and
    ``init_state``/``step`` update a user's representation one item at a time (LRU: a recurrent
    state; Transformer: a key/value cache).
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = positive_int("hidden_size", config["hidden_size"])
        sizes = config["mrl_hidden_sizes"]
        self.mrl_hidden_sizes = nested_size_list(
            "mrl_hidden_sizes", doubling_sizes(self.hidden_size) if sizes is None else sizes, self.hidden_size
        )
        self.mrl_loss_weights = self._check_loss_weights(config["mrl_loss_weights"], self.mrl_hidden_sizes)
        self.mrl_lr_exponent = non_negative_number("mrl_lr_exponent", config["mrl_lr_exponent"] or 0.0)
        self.modalities = self._check_modalities(config["modalities"])
        if config["loss_type"] != "CE":
            raise ConfigError(f"fMRLRec is trained with the CE loss (eq. 14), got loss_type={config['loss_type']!r}")
        self.init_next_item_training(config)

        features = [dataset.item_features(m) for m in self.modalities if m in FEATURE_MODALITIES]
        attributes = self._attribute_embedding(config, dataset) if "attributes" in self.modalities else None
        self.item_encoder = MultimodalItemEncoder(
            features, self.n_items, "id" in self.modalities, self.mrl_hidden_sizes, attributes
        )
        self.input_dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.encoder = ENCODERS[choice("encoder", config["encoder"], ENCODERS)].from_config(self.mrl_hidden_sizes, config)
        self.eval_size = config["eval_size"]
        self._cached_table = None  # (parameter versions, E) of the last item_table() without gradients

    @classmethod
    def item_feature_modalities(cls, config):
        """The item features a model built with ``config`` reads: its ``modalities`` other than ``id``
        (feature files, and the ``.item`` fields of ``attributes``)."""
        return [m for m in cls._check_modalities(config["modalities"]) if m != "id"]

    def identity_features(self, dataset):
        """``{modality: sha256}``: a feature file's manifest; for ``attributes``, the attribute fields'
        token lists and every item's attribute ids (the rows of the attribute tables)."""
        features = {}
        for modality in self.modalities:
            if modality == "attributes":
                digest = hashlib.sha256()
                for field in self.attribute_fields:
                    digest.update("\n".join(map(str, dataset.field2id_token[field])).encode("utf-8"))
                    digest.update(dataset.item_attributes(field).numpy().tobytes())
                features[modality] = digest.hexdigest()
            elif modality != "id":
                with open(dataset.feature_file(modality) + ".json", "rb") as f:
                    features[modality] = hashlib.sha256(f.read()).hexdigest()
        return features

    def run_record(self):
        """The modalities (a comparison table's row label names them)."""
        return {"modalities": list(self.modalities)}

    @staticmethod
    def _check_loss_weights(weights, sizes):
        """One positive weight per size (MRL's c_m in eq. 14's sum); None = all 1 (the paper)."""
        if weights is None:
            return [1.0] * len(sizes)
        if (not isinstance(weights, (list, tuple)) or len(weights) != len(sizes)
                or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights)):
            raise ConfigError(f"mrl_loss_weights must be one positive number per size of mrl_hidden_sizes {sizes}, "
                              f"got {weights!r}")
        return [float(w) for w in weights]

    @staticmethod
    def _check_modalities(modalities):
        if isinstance(modalities, str):
            modalities = [modalities]
        if not isinstance(modalities, (list, tuple)) or not modalities:
            raise ConfigError(f"modalities must be a non-empty list among {list(MODALITIES)}, got {modalities!r}")
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise ConfigError(f"unknown modalities {unknown}; choose among {list(MODALITIES)}")
        if len(set(modalities)) != len(modalities):
            raise ConfigError(f"modalities has duplicates: {list(modalities)}")
        return list(modalities)

    def _attribute_embedding(self, config, dataset):
        """The learned embeddings of the item fields in ``attributes`` (checked)."""
        fields = config["attributes"]
        fields = [fields] if isinstance(fields, str) else fields
        if not isinstance(fields, (list, tuple)) or not fields or not all(isinstance(f, str) for f in fields):
            raise ConfigError(
                f"modality 'attributes' needs attributes: a list of item fields (e.g. [brand, categories]), got {fields!r}")
        size = config["attribute_embedding_size"]
        size = positive_int("attribute_embedding_size", self.hidden_size if size is None else size)
        self.attribute_fields, self.attribute_embedding_size = list(fields), size
        return ItemAttributeEmbedding([dataset.item_attributes(f) for f in fields], [dataset.num(f) for f in fields], size)

    @property
    def eval_size(self):
        """The size m in M used by ``predict`` and ``full_sort_predict`` (None sets D)."""
        return self._eval_size

    @eval_size.setter
    def eval_size(self, size):
        self._eval_size = check_size(self.hidden_size if size is None else size, self.mrl_hidden_sizes, "eval_size")

    def item_table(self):
        """The catalogue's representations E, [n_items, D] (eq. 7).

        Recomputed whenever gradients are recorded; otherwise (evaluation, serving) cached until a
        parameter or buffer of the item encoder changes (tensor versions and storages as the key).
        """
        if self.training or torch.is_grad_enabled():
            self._cached_table = None
            return self.item_encoder()
        key = tuple((t._version, t.data_ptr()) for t in (*self.item_encoder.parameters(), *self.item_encoder.buffers()))
        cached = self._cached_table
        if cached is None or cached[0] != key:
            self._cached_table = cached = (key, self.item_encoder())
        return cached[1]

    def encode(self, item_seq, item_table=None, return_state=False):
        """Hidden states of every position, [B, L, D]; position t only reads items ≤ t. With
        ``return_state``, also the encoder's states after every position (LRU: every block's recurrent
        state, [n_layers, B, L, 2D]; Transformer: an ``AttentionState``), which :meth:`state_after` reads.

        Item representations are rows of ``item_table`` (default :meth:`item_table`): the catalogue
        is projected once per step, not once per position.
        """
        table = self.item_table() if item_table is None else item_table
        embedded = self.input_dropout(F.embedding(item_seq, table))
        return self.encoder(embedded, item_seq != 0, return_state=return_state)

    def forward(self, item_seq, item_seq_len, item_table=None):
        """User representation at the last real position, [B, D]."""
        return self.gather_indexes(self.encode(trim_padding(item_seq, item_seq_len), item_table), item_seq_len - 1)

    def state_after(self, states, lengths):
        """The state :meth:`step` continues from after each row's first ``lengths`` [B] items, from the
        ``states`` of ``encode(..., return_state=True)``."""
        return self.encoder.state_after(states, lengths)

    def init_state(self, batch_size):
        """The state of ``batch_size`` users without items (LRU: zeros, [n_layers, B, 2D]; Transformer:
        an empty key/value cache)."""
        return self.encoder.init_state(batch_size)

    def step(self, item_ids, state):
        """Consume one item per user (LRU: O(1); Transformer: O(L) against the cached keys and values):
        returns (user representation [B, D], new state).

        Equal to ``encode`` at that position (Transformer, past ``MAX_ITEM_LIST_LENGTH`` items: to
        ``encode`` of the last ones); the size-m representation is ``hidden[:, :m]``.
        """
        embedded = self.input_dropout(F.embedding(item_ids, self.item_table()))
        return self.encoder.step(embedded, state, item_ids != 0)

    def calculate_loss(self, interaction):
        """Eq. 14: the sum over m in M of the cross-entropy of the size-m scores (over every item, or
        over ``softmax_negatives`` sampled ones)."""
        item_table = self.item_encoder()
        return self.next_item_loss(self.training_pairs(interaction, item_table=item_table), item_table,
                                   sizes=self.mrl_hidden_sizes, weights=self.mrl_loss_weights)

    def predict(self, interaction):
        size = self.eval_size
        item_table = self.item_table()
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], item_table)
        test_item_emb = item_table[interaction[self.ITEM_ID]]
        return (seq_output[:, :size] * test_item_emb[:, :size]).sum(dim=1)  # [B]

    def full_sort_predict(self, interaction):
        size = self.eval_size
        item_table = self.item_table()
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], item_table)
        return seq_output[:, :size] @ item_table[:, :size].T  # [B, n_items]

    def learning_rate_multipliers(self):
        """``{parameter: tensor}`` of per-entry learning-rate factors (D / m)^a, m the smallest size in M
        whose model uses the entry and a = ``mrl_lr_exponent`` (plugin; empty at a = 0, the paper's single
        rate). A small model learns best at a larger rate than a wide one; the trainer applies them."""
        if not self.mrl_lr_exponent or len(self.mrl_hidden_sizes) == 1:
            return {}
        factors = torch.tensor([(self.hidden_size / m) ** self.mrl_lr_exponent for m in self.mrl_hidden_sizes])
        indices = first_size_index(self, len(self.mrl_hidden_sizes))
        return {p: factors.to(p)[indices[name]] for name, p in self.named_parameters() if p.requires_grad}

    def _size_index(self, size):
        return self.mrl_hidden_sizes.index(check_size(size, self.mrl_hidden_sizes))

    def sliced_config(self, size):
        """Config overrides of the standalone size-``size`` fMRLRec."""
        index = self._size_index(size)
        config = {"hidden_size": size, "mrl_hidden_sizes": self.mrl_hidden_sizes[: index + 1], "eval_size": size,
                  "mrl_loss_weights": self.mrl_loss_weights[: index + 1]}
        if "attributes" in self.modalities:  # the attribute tables are inputs: their width stays
            config["attribute_embedding_size"] = self.attribute_embedding_size
        return config

    def sliced_state_dict(self, size):
        """State dict of the standalone size-``size`` fMRLRec (load it into a model built with
        ``sliced_config(size)``); it scores exactly like this model at ``eval_size = size``."""
        return sliced_state_dict(self, self._size_index(size))
