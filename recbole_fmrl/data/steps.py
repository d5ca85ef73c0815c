"""The resumable steps that write a dataset folder: the interactions step and the text features step,
run by the preparation commands (``recbole_fmrl.dataset_prep``) and by materialising an embedded dataset.

A step is skipped on a rerun when its completion record says it finished on the same inputs and
settings, and done again otherwise: the record (``<name>.<step>.done.json``, or a feature matrix's
manifest) is removed when the step starts and written when it has finished, so an interrupted step
is redone.
"""

import contextlib
import logging
import os
import time

import pandas as pd

from recbole_fmrl import files
from recbole_fmrl.data import atomic_files, encoders

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- completion records

def step_done(folder, name, step, inputs, settings=None, outputs=()):
    """Whether ``step`` finished (its record exists) on exactly these ``inputs`` files and
    ``settings``, and its ``outputs`` are there."""
    record = atomic_files.read_done(folder, name, step)
    return (record is not None and record.get("inputs") == atomic_files.file_hashes(inputs)
            and record.get("settings") == settings and all(os.path.exists(path) for path in outputs))


@contextlib.contextmanager
def recorded_step(folder, name, step, inputs, settings=None):
    """Remove ``step``'s completion record, run the body, then record the ``inputs``' hashes (and
    ``settings``): a body that fails or is interrupted leaves no record, so a rerun redoes it."""
    done = atomic_files.done_path(folder, name, step)
    if os.path.exists(done):
        os.remove(done)
    yield
    record = {"step": step, "inputs": atomic_files.file_hashes(inputs)}
    if settings is not None:
        record["settings"] = settings
    files.write_json_atomic(done, record)


# ----------------------------------------------------------------------------- interactions

def interactions_current(folder, name, inputs):
    """Whether the interactions step finished (its record exists) on exactly these ``inputs`` files."""
    return step_done(folder, name, "interactions", inputs,
                     outputs=(atomic_files.inter_path(folder, name), atomic_files.items_path(folder, name)))


def interactions_step(folder, name, inputs, build, force=False):
    """Write ``<name>.inter``, the items table and, when the source has categorical item fields,
    ``<name>.item`` from ``build()`` -> ``(inter, items, item_fields or None)``; skipped when current
    on ``inputs`` (unless ``force``). Returns ``(inter, items)``: the interactions (at least
    ``user_id``, ``item_id``) and the items table as written."""
    inter_file, items_file = atomic_files.inter_path(folder, name), atomic_files.items_path(folder, name)
    if not force and interactions_current(folder, name, inputs):
        logger.info("parse/5-core/order/write: %s is current, skipped (--force rebuilds)", inter_file)
        inter = pd.read_csv(inter_file, sep="\t", usecols=[0, 1], dtype=str)
        inter.columns = ["user_id", "item_id"]
    else:
        with recorded_step(folder, name, "interactions", inputs):
            inter, items, item_fields = build()
            atomic_files.write_items(items_file, items)
            if item_fields is not None:
                atomic_files.write_item_fields(atomic_files.item_fields_path(folder, name), item_fields)
            atomic_files.write_inter(inter_file, inter)
        logger.info("write: %s (%s rows), %s (%s items)", inter_file, f"{len(inter):,}",
                    items_file, f"{len(items):,}")
    return inter, atomic_files.read_items(items_file)  # the exact strings that were written


# ----------------------------------------------------------------------------- text features

def features_current(npy_path, encoder, source):
    """Whether ``npy_path`` exists and its manifest matches this encoder and input."""
    manifest = atomic_files.read_manifest(npy_path)
    return (os.path.exists(npy_path) and manifest is not None
            and manifest.get("encoder") == encoder and manifest.get("source_sha256") == source)


def text_features_current(folder, name, text_encoder):
    """Whether ``<name>.text.npy`` was computed by ``text_encoder`` from the current items table."""
    items = atomic_files.read_items(atomic_files.items_path(folder, name))
    return features_current(atomic_files.feature_path(folder, name, "text"), text_encoder, atomic_files.source_sha256(items, "text"))


def text_features_step(folder, name, items, text_encoder, batch_size, device, force):
    """Encode the item texts into ``<name>.text.npy`` (skipped when current)."""
    npy = atomic_files.feature_path(folder, name, "text")
    source = atomic_files.source_sha256(items, "text")
    n_text = int((items["text"] != "").sum())
    if n_text == 0:
        logger.info("text features: no item has text, skipped")
        return None
    if not force and features_current(npy, text_encoder, source):
        logger.info("text features: %s is current, skipped", npy)
        return atomic_files.read_manifest(npy)
    started = time.perf_counter()
    encoder = encoders.load_text_encoder(text_encoder, device)
    features, n_zero = encoders.encode_texts(list(items["text"]), encoder, batch_size)
    seconds = time.perf_counter() - started
    manifest = atomic_files.write_features(
        npy, features, encoder=text_encoder, items_file=atomic_files.items_path(folder, name),
        source_column="text", source_sha256=source, n_zero_rows=n_zero)
    logger.info("text features: %d items x %d dims with %s in %.1f s, %d zero rows (no text)",
                len(items), features.shape[1], text_encoder, seconds, n_zero)
    return manifest
