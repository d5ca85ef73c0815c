"""Training pairs of the causal models (LRU and Transformer), per row (``train_mode: prefix``, RecBole's augmentation)
or per position (``train_mode: sequence``, the authors' training: every position of a user's
sequence predicts the next item in one pass)."""

import torch
import torch.nn.functional as F

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.model.layers import nested_cross_entropy, sampled_cross_entropy

TRAIN_MODES = ("sequence", "prefix")


def check_train_mode(train_mode, model_name, trains_on_sequences):
    """``train_mode`` if valid for the model, else ConfigError naming the choices."""
    if train_mode not in TRAIN_MODES:
        raise ConfigError(f"train_mode must be one of {list(TRAIN_MODES)}, got {train_mode!r}")
    if train_mode == "sequence" and not trains_on_sequences:
        raise ConfigError(
            f"train_mode 'sequence' needs a causal model that trains on every position "
            f"(fMRLRec, LRURec, SASRec, UniSRec, VQRec); {model_name} trains on prefixes: set train_mode: prefix"
        )
    return train_mode


def check_softmax_negatives(config):
    """``(softmax_negatives, shared_negatives)`` if valid: a non-negative int (0 = full CE) and a bool."""
    negatives, shared = config["softmax_negatives"], config["shared_negatives"]
    if not isinstance(negatives, int) or isinstance(negatives, bool) or negatives < 0:
        raise ConfigError(f"softmax_negatives must be an integer >= 0 (0: full cross-entropy), got {negatives!r}")
    if not isinstance(shared, bool):
        raise ConfigError(f"shared_negatives must be True or False, got {shared!r}")
    return negatives, shared


def trim_padding(item_seq, item_seq_len):
    """Right-padded rows cut to the longest row: a causal encoder's real positions never read the
    padding after them, so the cut changes no output and saves encoding it."""
    return item_seq[:, : int(item_seq_len.max())]


def next_item_targets(item_seq, item_seq_len, pos_items):
    """Per-position targets of right-padded rows: ``(real [B, L] bool, targets [B, L])``.

    The target of position t is the item at t + 1; the last real position's target is the row's
    target ``pos_items``. Position t of a causal encoder reads only items <= t, so (row, t) is the
    training pair (history ``item_seq[:t+1]``, target) of RecBole's prefix augmentation.
    """
    rows = torch.arange(item_seq.size(0), device=item_seq.device)
    real = torch.arange(item_seq.size(1), device=item_seq.device)[None, :] < item_seq_len[:, None]
    targets = torch.cat([item_seq[:, 1:], item_seq.new_zeros(item_seq.size(0), 1)], dim=1)
    targets[rows, item_seq_len - 1] = pos_items
    return real, targets


class NextItemTraining:
    """Mixin for a causal ``SequentialRecommender`` with ``encode(item_seq, **kw) -> [B, L, D]``.

    ``training_pairs`` returns the representations and targets the CE loss is taken over:
    in ``sequence`` mode one per real position of every row (gathered before scoring, so padding
    costs no scoring work), in ``prefix`` mode one per row (its last real position).
    ``next_item_loss`` is their CE: over every item, or sampled (``softmax_negatives``).
    """

    trains_on_sequences = True

    def init_next_item_training(self, config):
        """Read and check ``train_mode``, ``softmax_negatives`` and ``shared_negatives``."""
        self.train_mode = check_train_mode(config["train_mode"], type(self).__name__, self.trains_on_sequences)
        self.softmax_negatives, self.shared_negatives = check_softmax_negatives(config)

    def sample_negatives(self, n_rows, device):
        """``softmax_negatives`` item ids drawn uniformly (padding excluded): [S] shared by the batch's
        rows (``shared_negatives``), else [n_rows, S]."""
        shape = (self.softmax_negatives,) if self.shared_negatives else (n_rows, self.softmax_negatives)
        return torch.randint(1, self.n_items, shape, device=device)

    def next_item_loss(self, outputs, targets, table, bias=None, sizes=None, weights=None):
        """Mean CE of the training pairs ``(outputs [N, D], targets [N])`` over the scores
        ``outputs · tableᵀ + bias``: against every item, or (``softmax_negatives`` > 0) against
        that many uniform negatives. With ``sizes``, eq. 14: the nested CE summed over sizes."""
        if self.softmax_negatives:
            negatives = self.sample_negatives(len(targets), outputs.device)
            return sampled_cross_entropy(outputs, table, targets, negatives, sizes, weights, bias)
        if sizes is not None:
            return nested_cross_entropy(outputs, table, targets, sizes, weights)
        logits = outputs @ table.T if bias is None else torch.addmm(bias, outputs, table.T)
        return F.cross_entropy(logits, targets)

    def training_pairs(self, interaction, **encode_kwargs):
        """``(outputs [N, D], targets [N])`` of this batch's training pairs."""
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        item_seq = trim_padding(item_seq, item_seq_len)
        hidden = self.encode(item_seq, **encode_kwargs)
        if self.train_mode == "prefix":
            return self.gather_indexes(hidden, item_seq_len - 1), interaction[self.POS_ITEM_ID]
        real, targets = next_item_targets(item_seq, item_seq_len, interaction[self.POS_ITEM_ID])
        return hidden[real], targets[real]
