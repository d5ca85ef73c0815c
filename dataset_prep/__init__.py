"""Dataset preparation for recbole-fmrl, installed as ``recbole_fmrl.dataset_prep``: the Amazon 2014
datasets of the fMRLRec paper in RecBole's atomic format, with text and image feature matrices
(``python -m recbole_fmrl.dataset_prep.amazon2014``), and the interaction tables embedded in the
package (``data/``, materialised by :mod:`recbole_fmrl.data.embedded`)."""
