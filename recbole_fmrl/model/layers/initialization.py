"""SASRec's weight initialisation (RecBole's SASRec, FMLP-Rec, UniSRec and VQRec all use it)."""

from torch import nn


def init_sasrec_weights(module, std):
    """N(0, ``std``) Linear and Embedding weights, zero Linear biases, unit LayerNorms; for ``Module.apply``."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
