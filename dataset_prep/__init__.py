"""Dataset preparation for recbole-fmrl, installed as ``recbole_fmrl.dataset_prep``: the Amazon 2014
datasets of the fMRLRec paper in RecBole's atomic format, with text and image feature matrices
(``python -m recbole_fmrl.dataset_prep.amazon2014``), Amazon Reviews 2023 and item features for any
RecBole dataset. It builds on the on-disk format of :mod:`recbole_fmrl.data` (atomic files, steps,
encoders, the shipped Amazon 2014 tables); nothing outside this package imports it."""
