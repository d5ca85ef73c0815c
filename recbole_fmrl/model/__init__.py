"""The plugin's models, one per file like RecBole's."""

from recbole_fmrl.model.fmlprec import FMLPRec
from recbole_fmrl.model.fmrlrec import fMRLRec
from recbole_fmrl.model.lrurec import LRURec
from recbole_fmrl.model.sasrec import SASRec
from recbole_fmrl.model.unisrec import UniSRec
from recbole_fmrl.model.vqrec import VQRec

__all__ = ["fMRLRec", "LRURec", "FMLPRec", "UniSRec", "VQRec", "SASRec"]
