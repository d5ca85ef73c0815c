"""SASRec: Kang, McAuley, "Self-Attentive Sequential Recommendation" (ICDM 2018), RecBole's model,
also trained on every position and with a sampled softmax as Klenitskiy, Vasilev ("Turning Dross
Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023) and the eSASRec study
(RecSys 2025) train it."""

from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.model.next_item_training import NextItemTraining, trim_padding


class SASRec(NextItemTraining, RecBoleSASRec):
    r"""RecBole's SASRec, its architecture, initialisation and scoring untouched (``predict`` and
    ``full_sort_predict`` are RecBole's; ``forward`` is RecBole's on the rows cut to their longest
    history, which changes no output: position t attends to real items <= t only); only what it is
    trained on can change.

    * ``train_mode: prefix`` (default) with ``softmax_negatives: 0`` (and ``train_exclude_seen:
      False``) is RecBole's training exactly (its ``calculate_loss``, CE or BPR, one prefix per row);
    * ``train_mode: sequence``: CE at every position of a user's sequence in one pass (the causal
      attention makes position t's output RecBole's output for the prefix ending at t);
    * ``softmax_negatives`` > 0: sampled softmax against that many uniform negatives.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.init_next_item_training(config)
        if self.loss_type != "CE" and (self.train_mode == "sequence" or self.softmax_negatives or self.train_exclude_seen):
            raise ConfigError("SASRec with train_mode: sequence, softmax_negatives or train_exclude_seen is trained with "
                              f"the CE loss, "
                              f"got loss_type={self.loss_type!r}")

    def encode(self, item_seq):
        """The last Transformer layer's output at every position, [B, L, D]: RecBole's ``forward``
        before it gathers the last real position."""
        positions = self.position_embedding.weight[: item_seq.size(1)]
        hidden = self.dropout(self.LayerNorm(self.item_embedding(item_seq) + positions))
        return self.trm_encoder(hidden, self.get_attention_mask(item_seq), output_all_encoded_layers=True)[-1]

    def forward(self, item_seq, item_seq_len):
        return super().forward(trim_padding(item_seq, item_seq_len), item_seq_len)

    def calculate_loss(self, interaction):
        if self.train_mode == "prefix" and not (self.softmax_negatives or self.train_exclude_seen):
            return super().calculate_loss(interaction)
        return self.next_item_loss(self.training_pairs(interaction), self.item_embedding.weight)
