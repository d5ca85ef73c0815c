"""The resumable steps every dataset preparation shares (Amazon 2014, Amazon 2023, any RecBole dataset).

A step is skipped on a rerun when its completion record says it finished on the same inputs and
settings, and done again otherwise: the record (``<name>.<step>.done.json``, or a feature matrix's
manifest) is removed when the step starts and written when it has finished, so an interrupted step
is redone. Steps: the interactions (``.inter`` + items table, and a ``.item`` file when the source
has categorical item fields), the text features of the items' text and the image features of their
photos (downloaded from URLs into a cache, or read from local paths).
"""

import contextlib
import logging
import os
import time

import pandas as pd

from recbole_fmrl import files
from recbole_fmrl.data import atomic_files

logger = logging.getLogger(__name__)


def labelled_text(pairs):
    """Item text in the paper's form (sec. 3.3.1), e.g. "Title: … Brand: … Categories: …", from
    ``(label, value)`` pairs; a value that is None or blank is left out, whitespace is collapsed."""
    parts = []
    for label, value in pairs:
        if value is not None and str(value).strip():
            parts.append(f"{label}: {' '.join(str(value).split())}")
    return " ".join(parts)


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


# ----------------------------------------------------------------------------- features

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
    from recbole_fmrl.dataset_prep.encoders import encode_texts, load_text_encoder

    started = time.perf_counter()
    encoder = load_text_encoder(text_encoder, device)
    features, n_zero = encode_texts(list(items["text"]), encoder, batch_size)
    seconds = time.perf_counter() - started
    manifest = atomic_files.write_features(
        npy, features, encoder=text_encoder, items_file=atomic_files.items_path(folder, name),
        source_column="text", source_sha256=source, n_zero_rows=n_zero, extra={"seconds": round(seconds, 1)})
    logger.info("text features: %d items x %d dims with %s in %.1f s, %d zero rows (no text)",
                len(items), features.shape[1], text_encoder, seconds, n_zero)
    return manifest


def image_features_step(folder, name, items, image_model, image_pretrained, image_dir,
                        batch_size, device, workers, force):
    """Fetch the item photos (``image_url``: a URL, downloaded into the cache, or a local path,
    relative to the dataset folder) and encode them into ``<name>.image.npy`` (skipped when current)."""
    npy = atomic_files.feature_path(folder, name, "image")
    encoder = f"open_clip:{image_model}:{image_pretrained}"
    source = atomic_files.source_sha256(items, "image_url")
    n_sources = int((items["image_url"] != "").sum())
    if n_sources == 0:
        logger.info("image download: no item has an image URL or path, skipped")
        return None
    if not force and features_current(npy, encoder, source):
        logger.info("image features: %s is current, skipped", npy)
        return atomic_files.read_manifest(npy)
    from recbole_fmrl.dataset_prep.encoders import encode_images, load_image_encoder
    from recbole_fmrl.dataset_prep.images import resolve_images

    cache_dir = image_dir or os.path.join(folder, "images")
    paths = resolve_images(dict(zip(items["item_id"], items["image_url"])), cache_dir, folder, max_workers=workers)
    n_found = sum(path is not None for path in paths.values())
    logger.info("images: %d of %d items have a photo (%d URLs or paths), cache %s",
                n_found, len(items), n_sources, cache_dir)
    started = time.perf_counter()
    model, preprocess = load_image_encoder(image_model, image_pretrained, device)
    features, n_zero = encode_images([paths[item] for item in items["item_id"]], model, preprocess,
                                     batch_size=batch_size, device=device)
    seconds = time.perf_counter() - started
    manifest = atomic_files.write_features(
        npy, features, encoder=encoder, items_file=atomic_files.items_path(folder, name),
        source_column="image_url", source_sha256=source, n_zero_rows=n_zero, extra={"seconds": round(seconds, 1)})
    logger.info("image features: %d items x %d dims with %s in %.1f s, %d zero rows "
                "(no photo or unreadable)", len(items), features.shape[1], encoder, seconds, n_zero)
    return manifest


# ----------------------------------------------------------------------------- a whole preparation

def prepare_atomic_dataset(folder, name, inputs, build, *, text, images, text_encoder, image_model,
                           image_pretrained, image_dir, batch_size, device, workers, force):
    """The interactions step (``build()`` -> ``(inter, items, item_fields)``: interactions, the items
    table and the ``.item`` columns or None; skipped when current on ``inputs``), then the text and
    image features. Returns the counts ``users``, ``items``, ``images`` (items with a non-zero
    image row; None without image features), ``inter``, ``density`` and the ``folder``."""
    inter_file, items_file = atomic_files.inter_path(folder, name), atomic_files.items_path(folder, name)
    if not force and step_done(folder, name, "interactions", inputs, outputs=(inter_file, items_file)):
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
    items = atomic_files.read_items(items_file)  # the exact strings that were written
    if text:
        text_features_step(folder, name, items, text_encoder, batch_size, device, force)
    else:
        logger.info("text features: skipped")
    if images:
        image_manifest = image_features_step(folder, name, items, image_model, image_pretrained,
                                             image_dir, batch_size, device, workers, force)
    else:
        logger.info("image download/features: skipped")
        image_manifest = atomic_files.read_manifest(atomic_files.feature_path(folder, name, "image"))
    n_users, n_items = inter["user_id"].nunique(), inter["item_id"].nunique()
    n_images = image_manifest["n_items"] - image_manifest["n_zero_rows"] if image_manifest else None
    return {"users": n_users, "items": n_items, "images": n_images,
            "inter": len(inter), "density": len(inter) / (n_users * n_items), "folder": folder}
