"""Dataset preparation for recbole-fmrl: the Amazon 2014 datasets of the fMRLRec paper in RecBole's
atomic format, with text and image feature matrices (``python -m dataset_prep.amazon2014``), and
the four real datasets embedded in the package (:mod:`dataset_prep.embedded`)."""
