"""The plugin's models, one per file like RecBole's."""

from recbole_fmrl.model.fmlprec import FMLPRec
from recbole_fmrl.model.fmrlrec import fMRLRec
from recbole_fmrl.model.lrurec import LRURec

__all__ = ["fMRLRec", "LRURec", "FMLPRec"]
