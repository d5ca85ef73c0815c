"""Optional dependencies: each is an extra of the package (setup.cfg ``extras_require``), imported
only where its feature runs, through :func:`require`: its absence is one error line naming the extra."""

import importlib

from recbole_fmrl.errors import PluginError

EXTRAS = {  # top-level module -> the extra that installs it
    "sentence_transformers": "text",  # item text features (dataset_prep, the embedded Beauty titles)
    "open_clip": "image",  # item image features (dataset_prep)
    "PIL": "image",
    "ray": "tune",  # hyperparameter search (experiments.tune)
    "faiss": "serve",  # funnel retrieval (deploy.funnel) and VQRec's quantizer (data.quantization)
    "matplotlib": "plots",  # Figures 3 and 4 (experiments.reports)
}


def require(module):
    """The module ``module`` (e.g. ``"ray.tune"``), or one PluginError naming the extra that installs it."""
    top = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRAS[top]
        raise PluginError(f"this needs {top}, which the extra [{extra}] installs: "
                          f"pip install 'recbole-fmrl[{extra}]' (or bash scripts/install.sh for everything)") from error
