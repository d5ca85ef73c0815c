"""UniSRec: Hou, Mu, Zhao, Li, Ding, Wen, "Towards Universal Sequence Representation Learning for
Recommender Systems" (KDD 2022)."""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_fmrl.inputs import choice
from recbole_fmrl.model.table_transformer import ItemTableTransformer

SETTINGS = ("inductive_ft", "transductive_ft")


class MoEAdaptor(nn.Module):
    r"""UniSRec's MoE-enhanced adaptor: ``n_experts`` parametric whitening experts
    ``x̃_k = (x − b_k) W_k`` mixed by a gate ``g = softmax(x W_g + δ)`` whose noise
    ``δ = N(0, 1) · softplus(x W_n)`` is drawn only in training; output ``Σ_k g_k x̃_k``.

    The experts are one product with a ``[in, n_experts · out]`` weight; dropout on ``x`` (before
    whitening) draws one mask shared by the experts. The gate weights start at zero (uniform gate).
    """

    def __init__(self, in_dim, out_dim, n_experts, dropout, initializer_range):
        super().__init__()
        self.out_dim = out_dim
        self.bias = nn.Parameter(torch.zeros(n_experts, in_dim))
        self.weight = nn.Parameter(torch.randn(n_experts, in_dim, out_dim) * initializer_range)
        self.gate = nn.Parameter(torch.zeros(in_dim, n_experts))
        self.noise = nn.Parameter(torch.zeros(in_dim, n_experts))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        """``x`` [N, in] -> [N, out]."""
        logits = x @ self.gate
        if self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(x @ self.noise)
        gates = torch.softmax(logits, dim=-1)  # [N, G]
        n_experts, in_dim, _ = self.weight.shape
        weight = self.weight.permute(1, 0, 2).reshape(in_dim, n_experts * self.out_dim)
        experts = (self.dropout(x) @ weight).view(-1, n_experts, self.out_dim)
        experts = experts - torch.bmm(self.bias.unsqueeze(1), self.weight).squeeze(1)  # − b_k W_k
        return torch.einsum("ng,ngo->no", gates, experts)


class UniSRec(ItemTableTransformer):
    r"""UniSRec without pre-training: item ``i``'s representation is the MoE adaptor of its frozen
    text vector (``dataset.item_features('text')``, the vectors every text model of the plugin reads),
    plus, in the transductive setting, a learned ID embedding; SASRec's Transformer encodes the
    sequence, and the loss is the cross-entropy of ``cos(s, e_i) / temperature`` over the catalogue.

    ``train_stage`` picks the paper's fine-tuning setting: ``inductive_ft`` (text only; items never
    seen in training are still represented) or ``transductive_ft`` (text + ID). The paper first
    pre-trains the adaptor and Transformer on five other Amazon domains with two contrastive tasks
    (sequence-item and sequence-sequence) and then fine-tunes only the adaptor (and ID table).
    Offline there is no such corpus, so every parameter is trained from scratch on the target
    dataset (these rows are "UniSRec, no pre-training": ``experiments.reports.run_label``). The adaptor runs once per step
    over the whole catalogue (its rows feed both the sequence and the scores), so the input and
    target representations of an item share one gate noise draw and one dropout mask.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.train_stage = choice("train_stage", config["train_stage"], SETTINGS,
                                  " (pre-training needs a multi-domain corpus that is not available offline)")
        self.register_buffer("text", dataset.item_features("text"), persistent=False)  # frozen, not saved
        self.moe_adaptor = MoEAdaptor(
            self.text.size(1), self.hidden_size, config["n_exps"], config["adaptor_dropout_prob"],
            self.initializer_range)
        self.item_embedding = None
        if self.train_stage == "transductive_ft":
            self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.init_weights()

    def run_record(self):
        """The fine-tuning setting (a comparison table's row label names it)."""
        return {"train_stage": self.train_stage}

    def item_table(self):
        table = self.moe_adaptor(self.text)
        if self.item_embedding is not None:
            table = table + self.item_embedding.weight
        return table
