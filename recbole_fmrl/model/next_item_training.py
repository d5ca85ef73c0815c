"""Training pairs of the causal models (LRU and Transformer), per row (``train_mode: prefix``, RecBole's augmentation)
or per position (``train_mode: sequence``, the authors' training: every position of a user's
sequence predicts the next item in one pass)."""

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.inputs import boolean, choice, non_negative_int
from recbole_fmrl.model.layers import nested_cross_entropy, sampled_cross_entropy
from recbole_fmrl.model.protocol import PluginModel

TRAIN_MODES = ("sequence", "prefix")


def check_train_mode(train_mode, model_name, trains_on_sequences):
    """``train_mode`` if valid for the model, else ConfigError naming the choices."""
    choice("train_mode", train_mode, TRAIN_MODES)
    if train_mode == "sequence" and not trains_on_sequences:
        raise ConfigError(
            f"train_mode 'sequence' needs a model that trains on whole sequences (fMRLRec, LRURec, SASRec, "
            f"UniSRec, VQRec on every position; BERT4Rec masked); {model_name} trains on prefixes: set train_mode: prefix"
        )
    return train_mode


def check_softmax_negatives(config):
    """``(softmax_negatives, shared_negatives, train_exclude_seen)`` if valid: a non-negative int
    (0 = full CE) and two bools."""
    return (non_negative_int("softmax_negatives", config["softmax_negatives"], " (0: full cross-entropy)"),
            boolean("shared_negatives", config["shared_negatives"]),
            boolean("train_exclude_seen", config["train_exclude_seen"]))


class TrainingPairs(NamedTuple):
    """A batch's training pairs: representations [N, D], targets [N] and, with ``train_exclude_seen``,
    the items each pair's history holds [N, L] (0 = none), which its softmax leaves out."""

    outputs: torch.Tensor
    targets: torch.Tensor
    seen: Optional[torch.Tensor] = None


def seen_before_target(item_seq, real, targets):
    """Per real position (b, t) of ``item_seq``, the items ``item_seq[b, :t+1]`` (the history of its
    pair), then 0s, as [N, L + 1]; an item equal to the pair's target is 0 too (a repeat stays a
    target). Every row holds the padding id 0, which is never a target and is not ranked either."""
    length = item_seq.size(1)
    upto = torch.ones(length, length, dtype=torch.bool, device=item_seq.device).tril()  # [t, j]: j <= t
    seen = (item_seq.unsqueeze(1) * upto)[real]  # [N, L]
    seen = torch.cat([seen, seen.new_zeros(len(seen), 1)], dim=1)
    return seen.masked_fill(seen == targets.unsqueeze(1), 0)


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


class NextItemTraining(PluginModel, partial=True):
    """Mixin for a causal ``SequentialRecommender`` with ``encode(item_seq, **kw) -> [B, L, D]``.

    ``training_pairs`` returns the representations and targets the CE loss is taken over:
    in ``sequence`` mode one per real position of every row (gathered before scoring, so padding
    costs no scoring work), in ``prefix`` mode one per row (its last real position).
    ``next_item_loss`` is their CE: over every item, or sampled (``softmax_negatives``), each
    pair's seen items left out of its softmax with ``train_exclude_seen`` (as ``exclude_seen``
    leaves them out of the ranking).
    """

    trains_on_sequences = True

    def init_next_item_training(self, config):
        """Read ``train_mode`` (checked once, by the runner's ``build``: :func:`check_train_mode`) and check
        ``softmax_negatives``, ``shared_negatives`` and ``train_exclude_seen``."""
        self.train_mode = config["train_mode"]
        self.softmax_negatives, self.shared_negatives, self.train_exclude_seen = check_softmax_negatives(config)

    def sample_negatives(self, n_rows, device):
        """``softmax_negatives`` item ids drawn uniformly (padding excluded): [S] shared by the batch's
        rows (``shared_negatives``), else [n_rows, S]."""
        shape = (self.softmax_negatives,) if self.shared_negatives else (n_rows, self.softmax_negatives)
        return torch.randint(1, self.n_items, shape, device=device)

    def next_item_loss(self, pairs, table, bias=None, sizes=None, weights=None):
        """Mean CE of the :class:`TrainingPairs` over the scores ``outputs · tableᵀ + bias``: against
        every item, or (``softmax_negatives`` > 0) against that many uniform negatives, each pair's
        ``seen`` items left out. With ``sizes``, eq. 14: the nested CE summed over sizes."""
        outputs, targets, seen = pairs
        if self.softmax_negatives:
            negatives = self.sample_negatives(len(targets), outputs.device)
            return sampled_cross_entropy(outputs, table, targets, negatives, sizes, weights, bias, seen)
        if sizes is not None:
            return nested_cross_entropy(outputs, table, targets, sizes, weights, seen)
        logits = outputs @ table.T if bias is None else torch.addmm(bias, outputs, table.T)
        if seen is not None:
            logits = logits.scatter(1, seen, float("-inf"))
        return F.cross_entropy(logits, targets)

    def training_pair_count(self, interaction):
        """One pair per real position in ``sequence`` mode, one per row in ``prefix`` mode."""
        if self.train_mode == "prefix":
            return len(interaction)
        return int(interaction[self.ITEM_SEQ_LEN].sum())

    def training_pairs(self, interaction, **encode_kwargs):
        """The :class:`TrainingPairs` of this batch."""
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        item_seq = trim_padding(item_seq, item_seq_len)
        hidden = self.encode(item_seq, **encode_kwargs)
        if self.train_mode == "prefix":
            real = torch.zeros_like(item_seq, dtype=torch.bool)
            real[torch.arange(len(item_seq)), item_seq_len - 1] = True
            targets = interaction[self.POS_ITEM_ID]
        else:
            real, targets = next_item_targets(item_seq, item_seq_len, interaction[self.POS_ITEM_ID])
            targets = targets[real]
        seen = seen_before_target(item_seq, real, targets) if self.train_exclude_seen else None
        return TrainingPairs(hidden[real], targets, seen)
