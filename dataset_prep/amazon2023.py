"""One category of Amazon Reviews 2023 (Hou et al., 2024) as RecBole atomic files with features:
``python -m recbole_fmrl.dataset_prep amazon2023``.

Input: the category's official JSON-lines files in ``--raw_dir``, plain or gzip-compressed:
``<Category>.jsonl`` (reviews: ``user_id``, ``parent_asin``, ``timestamp`` in ms, ...) and
``meta_<Category>.jsonl`` (items: ``parent_asin``, ``title``, ``features``, ``categories``,
``price``, ``store``, ``images``, ...). Items are ``parent_asin`` (the release's item id); a user's
repeated reviews of one item keep the first. Steps, as for the 2014 data: parse -> 5-core ->
order (by timestamp, ties in file order) -> item text ("Title: … Price: … Store: … Categories: …
Features: …", only the fields an item has) and the largest photo URL per item -> write (``.inter``,
items table, and ``.item`` with ``store:token categories:token_seq`` for fMRLRec's ``attributes``
modality) -> text features -> image download and features. Resumable and atomic (see
:mod:`recbole_fmrl.data.steps`); the config lines for the written files go to ``<dataset>.features.yaml``.

    python -m recbole_fmrl.dataset_prep amazon2023 --category=All_Beauty --raw_dir=RAW --out=dataset
"""

import logging
import math
import os

import pandas as pd

from recbole_fmrl.data import atomic_files
from recbole_fmrl.data.amazon2014 import chronological, five_core
from recbole_fmrl.dataset_prep import amazon2014, features, steps
from recbole_fmrl.errors import PluginError
from recbole_fmrl.inputs import dataset_name

logger = logging.getLogger(__name__)

REVIEW_KEYS = ("user_id", "parent_asin", "timestamp")
ITEM_KEY = "parent_asin"
ATTRIBUTE_FIELDS = ("store", "categories")
INTER_FIELDS = ("user_id", "item_id", "timestamp")
IMAGE_SIZES = ("hi_res", "large", "thumb")  # largest first


def raw_files(raw_dir, category):
    """The category's review and meta files (``.jsonl`` or ``.jsonl.gz``; one error line if missing)."""
    paths = []
    for stem in (category, f"meta_{category}"):
        found = [os.path.join(raw_dir, stem + ext) for ext in (".jsonl", ".jsonl.gz")]
        found = [path for path in found if os.path.isfile(path)]
        if not found:
            raise PluginError(f"raw file not found: {os.path.join(raw_dir, stem)}.jsonl (or .jsonl.gz)")
        paths.append(found[0])
    return paths


def read_raw(reviews_file, meta_file):
    """Interactions (user_id, item_id, timestamp; first review of each user-item pair, file order)
    and ``parent_asin -> metadata`` of the reviewed items."""
    inter = amazon2014.parse_reviews(reviews_file, keys=REVIEW_KEYS)
    n_reviews = len(inter)
    first = inter.sort_values("timestamp", kind="stable").drop_duplicates(["user_id", "item_id"])
    inter = inter.loc[first.index.sort_values()].reset_index(drop=True)
    if len(inter) < n_reviews:
        logger.info("parse: %s repeated reviews of an item by the same user dropped (the first is kept)",
                    f"{n_reviews - len(inter):,}")
    return inter, amazon2014.parse_meta(meta_file, set(inter["item_id"]), key=ITEM_KEY)


def _strings(value):
    """A meta field that should be a list of strings, as one (possibly empty) list."""
    if isinstance(value, str):
        return [value] if value.strip() else []
    return [str(v) for v in value if str(v).strip()] if isinstance(value, list) else []


def _price(value):
    """The price as text (numbers and numeric strings; None for none or '—')."""
    try:
        price = float(value)
    except (TypeError, ValueError):
        return None
    return features.format_float(str(price)) if math.isfinite(price) else None


def item_text(record):
    """Item text in the paper's form from a 2023 meta record (only the fields it has)."""
    return atomic_files.labelled_text([
        ("Title", record.get("title")), ("Price", _price(record.get("price"))), ("Store", record.get("store")),
        ("Categories", ", ".join(_strings(record.get("categories")))),
        ("Features", " ".join(_strings(record.get("features")))),
    ])


def largest_image_url(record):
    """The URL of the item's main photo (variant ``MAIN``, else the first) at its largest size."""
    images = [image for image in record.get("images") or [] if isinstance(image, dict)]
    images.sort(key=lambda image: image.get("variant") != "MAIN")  # stable: MAIN first
    for image in images:
        for size in IMAGE_SIZES:
            if image.get(size):
                return image[size]
    return ""


def build_items(item_ids, meta):
    """The items table (item_id, text, image_url) and the ``.item`` columns, one row per item, by id."""
    rows, fields = [], []
    for item in sorted(item_ids):
        record = meta.get(item, {})
        rows.append((item, item_text(record), largest_image_url(record)))
        store = " ".join(str(record.get("store") or "").split())
        categories = ["_".join(category.split()) for category in _strings(record.get("categories"))]
        fields.append((item, store, categories))
    items = pd.DataFrame(rows, columns=["item_id", "text", "image_url"])
    item_fields = pd.DataFrame(fields, columns=["item_id:token", "store:token", "categories:token_seq"])
    return items, item_fields


def build_interactions(reviews_file, meta_file):
    """Parse, 5-core filter and order the interactions; return ``(inter, items, item_fields)``."""
    inter, meta = read_raw(reviews_file, meta_file)
    logger.info("parse: %s interactions, %s users, %s items, metadata for %s items (from %s)",
                f"{len(inter):,}", f"{inter['user_id'].nunique():,}", f"{inter['item_id'].nunique():,}",
                f"{len(meta):,}", reviews_file)
    n_before = len(inter)
    inter, rounds = five_core(inter)
    if inter.empty:
        raise PluginError(f"no interactions are left after 5-core filtering of {reviews_file}")
    logger.info("5-core: %s -> %s interactions in %d filtering rounds; %s users, %s items",
                f"{n_before:,}", f"{len(inter):,}", rounds,
                f"{inter['user_id'].nunique():,}", f"{inter['item_id'].nunique():,}")
    inter = chronological(inter, "timestamp")
    items, item_fields = build_items(inter["item_id"].unique(), meta)
    logger.info("item text: %s of %s items have text, %s have an image URL",
                f"{int((items['text'] != '').sum()):,}", f"{len(items):,}", f"{int((items['image_url'] != '').sum()):,}")
    return inter, items, item_fields


def prepare_category(category, raw_dir, out_dir, name=None, *, text=True, images=True, **encoding):
    """Every step for one category into ``<out_dir>/<name>/`` (``name``: the category in lower case);
    returns its counts (:func:`dataset_prep.steps.prepare_atomic_dataset`) and the config file."""
    name = dataset_name(name or category.lower())
    inputs = raw_files(raw_dir, category)
    folder = os.path.join(out_dir, name)
    row = steps.prepare_atomic_dataset(folder, name, inputs, lambda: build_interactions(*inputs),
                                       text=text, images=images, **encoding)
    modalities = (["text"] if text else []) + (["image"] if images else [])
    config_file = features.write_config(folder, name, modalities, ATTRIBUTE_FIELDS, INTER_FIELDS)
    return {"dataset": name, **row, "config_file": config_file}


def add_arguments(parser):
    """The flags of ``python -m recbole_fmrl.dataset_prep amazon2023``."""
    parser.add_argument("--category", required=True, help="the release's category name, e.g. All_Beauty")
    parser.add_argument("--raw_dir", required=True, help="folder with <Category>.jsonl and meta_<Category>.jsonl (or .jsonl.gz)")
    parser.add_argument("--out", default="dataset", help="output root; files go to OUT/<dataset>/")
    parser.add_argument("--dataset", default=None, help="dataset name (default: the category in lower case)")
    parser.add_argument("--no_text", action="store_true", help="skip text features")
    parser.add_argument("--no_images", action="store_true", help="skip image download and features")
    steps.add_arguments(parser)


def run(args):
    """Run the command for parsed ``args``; prints the counts and the config file."""
    row = prepare_category(args.category, args.raw_dir, args.out, args.dataset, text=not args.no_text,
                           images=not args.no_images, **steps.settings(args))
    print("\n".join(amazon2014.table1_lines([row])))
    features.print_config(row["config_file"])
    return 0
