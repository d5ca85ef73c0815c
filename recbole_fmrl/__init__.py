"""recbole-fmrl: fMRLRec (arXiv 2409.16627), LRURec and FMLP-Rec as a RecBole plugin.

``recbole_fmrl.dataset_prep`` is the repo root's ``dataset_prep/`` folder, installed as a subpackage
by setuptools' package mapping (setup.cfg ``package_dir``; ``pip install -e .`` maps it to the
checkout's folder).
"""

__version__ = "0.1.0"
