"""recbole-fmrl: fMRLRec (arXiv 2409.16627), LRURec and FMLP-Rec as a RecBole plugin.

``recbole_fmrl.dataset_prep`` is the repo root's ``dataset_prep/`` folder: a wheel installs it
inside this package (setup.cfg's ``package_dir``); from a checkout it is found at the root, so a
checkout always runs its own copy (as ``recbole_fmrl.config`` does for ``properties/``).
"""

from pathlib import Path

__version__ = "0.1.0"

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "setup.cfg").is_file() and (_CHECKOUT / "dataset_prep" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))  # noqa: F821 (the package's module search path)
