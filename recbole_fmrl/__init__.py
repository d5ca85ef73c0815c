"""recbole-fmrl: fMRLRec (arXiv 2409.16627), LRURec and FMLP-Rec as a RecBole plugin."""

__version__ = "0.1.0"
