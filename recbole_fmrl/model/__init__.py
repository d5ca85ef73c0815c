"""The plugin's models, one per file like RecBole's.

Importing RecBole's sequential models runs its ``sine.py``, which switches on autograd anomaly
detection for the whole process (every backward op's output checked for NaN: training runs many
times slower); it is switched off again here, once RecBole's models are imported.
"""

import torch

from recbole_fmrl.model.bert4rec import BERT4Rec
from recbole_fmrl.model.fmlprec import FMLPRec
from recbole_fmrl.model.fmrlrec import fMRLRec
from recbole_fmrl.model.lrurec import LRURec
from recbole_fmrl.model.sasrec import SASRec
from recbole_fmrl.model.unisrec import UniSRec
from recbole_fmrl.model.vqrec import VQRec

torch.autograd.set_detect_anomaly(False)

__all__ = ["fMRLRec", "LRURec", "FMLPRec", "UniSRec", "VQRec", "SASRec", "BERT4Rec"]
