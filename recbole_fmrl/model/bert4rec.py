"""BERT4Rec: Sun, Liu, Wu, Pei, Lin, Ou, Jiang, "BERT4Rec: Sequential Recommendation with
Bidirectional Encoder Representations from Transformer" (CIKM 2019), RecBole's model, also trained
as its paper trains it: one masked sequence per user (Cloze task)."""

import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender.bert4rec import BERT4Rec as RecBoleBERT4Rec

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.inputs import probability
from recbole_fmrl.model.next_item_training import trim_padding
from recbole_fmrl.model.protocol import PluginModel


class BERT4Rec(PluginModel, RecBoleBERT4Rec):
    r"""RecBole's BERT4Rec, its architecture, initialisation and scoring untouched (``predict`` and
    ``full_sort_predict`` are RecBole's: the mask token appended after the history, on rows cut to
    their longest history); only what it is trained on can change.

    * ``train_mode: prefix`` (default): RecBole's training (one prefix per row, masked by RecBole's
      ``mask_itemseq`` transform; evaluation draws no masks, so later epochs draw other ones than a
      RecBole run of the same seed);
    * ``train_mode: sequence``: the paper's training (§3.6): each row is a user's whole sequence
      (one row per window of ``MAX_ITEM_LIST_LENGTH`` items, the row's target appended to its
      history: :meth:`cloze_rows`); with probability ``ft_ratio``, drawn per row, a row masks only its
      last item (the paper's samples that "only mask the last item"; RecBole draws it once per batch
      and masks the last history item), else each item is masked with probability
      ``mask_ratio`` (a row whose draw masks nothing masks its last item). The loss is the CE over
      every item at the masked positions, their mean over the batch.
    """

    trains_on_sequences = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.train_mode = config["train_mode"]
        self.ft_ratio = probability("ft_ratio", config["ft_ratio"])
        probability("mask_ratio", self.mask_ratio)
        if self.train_mode == "sequence" and self.loss_type != "CE":
            raise ConfigError(f"BERT4Rec with train_mode: sequence is trained with the CE loss, got loss_type={self.loss_type!r}")

    def reconstruct_test_data(self, item_seq, item_seq_len):
        """RecBole's (the mask token after each history) on the rows cut to their longest history:
        the cut columns are padding, which no position attends to, so no output changes."""
        return super().reconstruct_test_data(trim_padding(item_seq, item_seq_len), item_seq_len)

    def cloze_rows(self, interaction):
        """``(items [B, L], lengths [B])``: each row's history with its target appended, its last
        ``MAX_ITEM_LIST_LENGTH`` items kept, right-padded like RecBole's rows."""
        item_seq, lengths = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        rows = torch.arange(len(item_seq), device=item_seq.device)
        items = F.pad(item_seq, (0, 1))
        items[rows, lengths] = interaction[self.POS_ITEM_ID]
        if items.size(1) > self.max_seq_length:  # a row of MAX_ITEM_LIST_LENGTH items drops its first
            full = lengths + 1 > self.max_seq_length
            items = torch.where(full[:, None], items[:, 1:], items[:, :-1])
        return items, self.cloze_lengths(lengths)

    def cloze_lengths(self, item_seq_len):
        """The lengths of :meth:`cloze_rows`: each history and its target, at most ``MAX_ITEM_LIST_LENGTH``."""
        return (item_seq_len + 1).clamp_max(self.max_seq_length)

    def cloze_masks(self, lengths, width):
        """Which positions of rows of ``lengths`` [B] (``width`` columns) are masked, [B, width] bool."""
        positions = torch.arange(width, device=lengths.device)
        last = positions == (lengths - 1)[:, None]
        masked = (torch.rand(len(lengths), width, device=lengths.device) < self.mask_ratio) & (positions < lengths[:, None])
        only_last = (torch.rand(len(lengths), device=lengths.device) < self.ft_ratio) | ~masked.any(dim=1)
        return torch.where(only_last[:, None], last, masked)

    def calculate_loss(self, interaction):
        if self.train_mode == "prefix":
            return super().calculate_loss(interaction)
        items, lengths = self.cloze_rows(interaction)
        masked = self.cloze_masks(lengths, items.size(1))
        hidden = self.forward(items.masked_fill(masked, self.mask_token))[masked]
        logits = torch.addmm(self.output_bias, hidden, self.item_embedding.weight[: self.n_items].T)
        return F.cross_entropy(logits, items[masked])

    def training_pair_count(self, interaction):
        """In ``sequence`` mode the masked positions are drawn inside ``calculate_loss``; a batch is
        weighted by its real positions (the masks' expected count is proportional to them)."""
        if self.train_mode == "prefix":
            return len(interaction)
        return int(self.cloze_lengths(interaction[self.ITEM_SEQ_LEN]).sum())
