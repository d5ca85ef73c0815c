"""The four paper datasets shipped inside the package, materialised on first use.

``ensure_embedded_dataset(name, data_path, features)`` turns the embedded tables into RecBole atomic
files under ``<data_path>/<name>/``, plus the feature files of ``features`` the dataset has (Beauty:
text features of the real titles, encoded once with the packaged all-MiniLM-L6-v2 and kept there;
Beauty and Sports: ``attributes``, a ``.item`` file with S3Rec's brand and category ids of every
item), so ``beauty``, ``sports``, ``toys`` and ``clothing`` work offline with no preparation step. Only
what is asked for is written (an ID model never waits for the text encoder), and one run writes at
a time: runs started together wait for the writer (a lock file ``<data_path>/.<name>.lock``), then
find the files complete.
"""

import logging
import os
import time

import torch

from recbole_fmrl.data import amazon2014, steps
from recbole_fmrl.data.amazon2014 import TABLES_DIR
from recbole_fmrl.data.encoders import PACKAGED_MINILM
from recbole_fmrl.files import exclusive_lock

logger = logging.getLogger(__name__)

FEATURES = {"beauty": frozenset({"text", "attributes"}), "sports": frozenset({"attributes"}), "toys": frozenset(),
            "clothing": frozenset()}
"""The features each embedded dataset can have: only Beauty has item text (its titles); Beauty and
Sports have item attributes (``<name>.item``, field ``brand_categories``)."""
EMBEDDED = frozenset(FEATURES)


def _is_complete(folder, name, features):
    """Whether every step ``features`` need finished on the embedded tables (the atomic files, the
    text features of the current items table, the ``.item`` file of the attribute table)."""
    if not steps.interactions_current(folder, name, amazon2014.table_files(TABLES_DIR, name)):
        return False
    if "attributes" in features and not amazon2014.attributes_current(
            folder, name, amazon2014.attributes_table_path(TABLES_DIR, name)):
        return False
    return "text" not in features or steps.text_features_current(folder, name, PACKAGED_MINILM)


def write_embedded(folder, name, features):
    """Run the steps of ``features`` that are not current on the shipped tables of ``name``: the
    interactions, the text features (the packaged all-MiniLM-L6-v2), the attributes' ``.item`` file."""
    _, items = steps.interactions_step(folder, name, amazon2014.table_files(TABLES_DIR, name),
                                       lambda: (*amazon2014.from_tables(TABLES_DIR, name), None))
    if "text" in features:
        steps.text_features_step(folder, name, items, PACKAGED_MINILM, batch_size=128,
                                 device="cuda" if torch.cuda.is_available() else "cpu", force=False)
    if "attributes" in features:
        amazon2014.attributes_step(folder, name, amazon2014.attributes_table_path(TABLES_DIR, name))


def ensure_embedded_dataset(name, data_path, features=None):
    """Write the embedded dataset ``name`` to ``<data_path>/<name>/`` unless it is already there.

    ``data_path`` is the root that holds one folder per dataset (RecBole's ``data_path`` before it
    appends the dataset name). ``features``: the modalities whose feature files the run reads (None:
    every one the dataset has). Returns True when files were written, False when ``name`` is not
    embedded or its files are complete; only an unfinished step is done again.
    """
    if name not in EMBEDDED:
        return False
    features = FEATURES[name] if features is None else FEATURES[name] & set(features)
    folder = os.path.join(data_path, name)
    if _is_complete(folder, name, features):
        return False
    lock = os.path.join(data_path, f".{name}.lock")
    with exclusive_lock(lock, on_wait=lambda: logger.info("embedded dataset %s: waiting for another run writing %s", name, folder)):
        if _is_complete(folder, name, features):  # written by the run this one waited for
            return False
        started = time.perf_counter()
        write_embedded(folder, name, features)
    logger.info("embedded dataset %s written to %s in %.1f s", name, folder, time.perf_counter() - started)
    return True
