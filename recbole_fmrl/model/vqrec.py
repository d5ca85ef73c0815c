"""VQRec: Hou, He, McAuley, Zhao, "Learning Vector-Quantized Item Representation for Transferable
Sequential Recommenders" (WWW 2023)."""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_fmrl.data.quantization import item_codes
from recbole_fmrl.errors import ConfigError
from recbole_fmrl.model.table_transformer import ItemTableTransformer


class VQRec(ItemTableTransformer):
    r"""VQRec without pre-training. Text → code → representation: each item's frozen text vector
    (``dataset.item_features('text')``, the vectors every text model of the plugin reads) becomes
    ``code_dim`` discrete codes, one per sub-space of an optimized product quantizer with ``code_cap``
    centroids each (faiss OPQ, computed once and cached beside the feature file, see
    :mod:`recbole_fmrl.data.quantization`); the item's representation is the mean of its codes'
    learned embeddings (the paper's pooling, i.e. their sum up to the constant ``1 / code_dim``).
    SASRec's Transformer encodes the sequence; the loss is the cross-entropy of
    ``cos(s, e_i) / temperature`` over the catalogue, as in the paper's fine-tuning.

    Kept from the paper: the OPQ codes of the text vectors, the code embedding table shared by all
    items, the Transformer and the fine-tuning loss. Not kept, because both only act on a
    pre-trained model and there is no pre-training corpus offline: the contrastive pre-training on
    other domains (with enhanced semi-synthetic and mixed-domain code representations as hard
    negatives), and the code-embedding permutation learned while fine-tuning, which re-maps the
    target domain's codes onto *pre-trained* code embeddings; on embeddings trained from scratch,
    permuting the rows of a freshly initialised table changes nothing but the initial values.
    These rows are "VQRec, no pre-training" (``experiments.reports.run_label``).
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.code_dim, self.code_cap = config["code_dim"], config["code_cap"]
        seed = config["seed"]
        if not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer (it seeds the quantizer), got {seed!r}")
        codes = item_codes(dataset, "text", self.code_dim, self.code_cap, seed)
        # row = item id; entry = row of the code embedding table, 0 for the padding item
        offsets = 1 + torch.arange(self.code_dim) * self.code_cap
        item_code_rows = torch.cat([torch.zeros(1, self.code_dim, dtype=torch.long), codes + offsets])
        self.register_buffer("item_code_rows", item_code_rows, persistent=False)
        self.code_embedding = nn.Embedding(1 + self.code_dim * self.code_cap, self.hidden_size, padding_idx=0)
        self.init_weights()
        with torch.no_grad():
            self.code_embedding.weight[0].zero_()

    def item_table(self):
        return F.embedding(self.item_code_rows, self.code_embedding.weight).mean(dim=1)
