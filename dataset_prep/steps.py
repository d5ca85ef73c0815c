"""What the preparation commands share (Amazon 2014, Amazon 2023, any RecBole dataset): the flags of
the feature steps, the image features step and a whole preparation. The interactions and text
features steps and their completion records are :mod:`recbole_fmrl.data.steps` (materialising an
embedded dataset runs them too); the images are downloaded into a cache or read from local paths.
"""

import logging
import os
import time

import torch

from recbole_fmrl.data import atomic_files, encoders, steps
from recbole_fmrl.data.encoders import DEFAULT_IMAGE_MODEL, DEFAULT_IMAGE_PRETRAINED, PACKAGED_MINILM, PAPER_TEXT_ENCODER
from recbole_fmrl.dataset_prep.images import resolve_images

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- flags

def add_arguments(parser, text_encoder=PACKAGED_MINILM):
    """The flags of the text and image steps, shared by every preparation command."""
    parser.add_argument("--text_encoder", default=text_encoder,
                        help=f"sentence-transformers name or local folder; {PACKAGED_MINILM!r} is the packaged "
                             f"all-MiniLM-L6-v2 (offline); the paper's: {PAPER_TEXT_ENCODER}")
    parser.add_argument("--image_model", default=DEFAULT_IMAGE_MODEL, help="open_clip model name (the paper's SigLIP)")
    parser.add_argument("--image_pretrained", default=DEFAULT_IMAGE_PRETRAINED,
                        help="open_clip pretrained tag or weights file; 'none' = random weights")
    parser.add_argument("--image_dir", default=None, help="image download cache (default: <dataset folder>/images)")
    parser.add_argument("--batch_size", type=int, default=64, help="encoder batch size")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--workers", type=int, default=8, help="parallel image downloads")
    parser.add_argument("--force", action="store_true", help="redo finished steps (the image cache is kept)")


def settings(args):
    """The keyword arguments of the text and image steps from :func:`add_arguments`' flags."""
    return {
        "text_encoder": args.text_encoder, "image_model": args.image_model,
        "image_pretrained": None if args.image_pretrained.lower() == "none" else args.image_pretrained,
        "image_dir": args.image_dir, "batch_size": args.batch_size,
        "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "workers": args.workers, "force": args.force,
    }


# ----------------------------------------------------------------------------- image features

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
    if not force and steps.features_current(npy, encoder, source):
        logger.info("image features: %s is current, skipped", npy)
        return atomic_files.read_manifest(npy)
    cache_dir = image_dir or os.path.join(folder, "images")
    paths = resolve_images(dict(zip(items["item_id"], items["image_url"])), cache_dir, folder, max_workers=workers)
    n_found = sum(path is not None for path in paths.values())
    logger.info("images: %d of %d items have a photo (%d URLs or paths), cache %s",
                n_found, len(items), n_sources, cache_dir)
    started = time.perf_counter()
    model, preprocess = encoders.load_image_encoder(image_model, image_pretrained, device)
    features, n_zero = encoders.encode_images([paths[item] for item in items["item_id"]], model, preprocess,
                                     batch_size=batch_size, device=device)
    seconds = time.perf_counter() - started
    manifest = atomic_files.write_features(
        npy, features, encoder=encoder, items_file=atomic_files.items_path(folder, name),
        source_column="image_url", source_sha256=source, n_zero_rows=n_zero)
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
    inter, items = steps.interactions_step(folder, name, inputs, build, force)
    if text:
        steps.text_features_step(folder, name, items, text_encoder, batch_size, device, force)
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
