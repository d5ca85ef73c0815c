"""The four paper datasets shipped inside the package, written out on first use.

``ensure_embedded_dataset(name, data_path)`` turns the embedded tables into RecBole atomic files
under ``<data_path>/<name>/`` (plus, for Beauty, text features of the real titles encoded once with
the packaged all-MiniLM-L6-v2 and kept there, and for Beauty and Sports a ``.item`` file with S3Rec's
brand and category ids of every item), so ``beauty``, ``sports``, ``toys`` and ``clothing`` work
offline with no preparation step.
"""

import logging
import os
import time

from dataset_prep.amazon2014 import EMBEDDED_TABLES_DIR, interactions_current, prepare_dataset, table_files
from dataset_prep.encoders import PACKAGED_MINILM
from dataset_prep.s3rec_attributes import attributes_current, attributes_step, table_path
from dataset_prep.steps import text_features_current

logger = logging.getLogger(__name__)

EMBEDDED = frozenset({"beauty", "sports", "toys", "clothing"})
WITH_TEXT = frozenset({"beauty"})
"""Embedded datasets that have item text (Beauty titles) and so get ``<name>.text.npy``."""
WITH_ATTRIBUTES = frozenset({"beauty", "sports"})
"""Embedded datasets with S3Rec's item attributes, written as ``<name>.item`` (``brand_categories``)."""


def _is_complete(folder, name):
    """Whether every preparation step finished on the embedded tables (the atomic files and, where
    there is text, the text features of the current items table)."""
    if not interactions_current(folder, name, table_files(EMBEDDED_TABLES_DIR, name)):
        return False
    if name in WITH_ATTRIBUTES and not attributes_current(folder, name, table_path(EMBEDDED_TABLES_DIR, name)):
        return False
    return name not in WITH_TEXT or text_features_current(folder, name, PACKAGED_MINILM)


def ensure_embedded_dataset(name, data_path):
    """Write the embedded dataset ``name`` to ``<data_path>/<name>/`` unless it is already there.

    ``data_path`` is the root that holds one folder per dataset (RecBole's ``data_path`` before it
    appends the dataset name). Returns True when files were written, False when ``name`` is not
    embedded or its files are complete; only an unfinished step is done again.
    """
    if name not in EMBEDDED:
        return False
    folder = os.path.join(data_path, name)
    if _is_complete(folder, name):
        return False
    import torch

    started = time.perf_counter()
    prepare_dataset(name, data_path, tables_dir=EMBEDDED_TABLES_DIR, text=name in WITH_TEXT,
                    images=False, text_encoder=PACKAGED_MINILM, batch_size=128,
                    device="cuda" if torch.cuda.is_available() else "cpu")
    if name in WITH_ATTRIBUTES:
        attributes_step(folder, name, table_path(EMBEDDED_TABLES_DIR, name))
    logger.info("embedded dataset %s written to %s in %.1f s", name, folder, time.perf_counter() - started)
    return True
