"""Prepare the Amazon 2014 5-core datasets of the fMRLRec paper for RecBole.

Input is either the official raw files (``--raw_dir`` with ``reviews_<Category>_5.json.gz`` and
``meta_<Category>.json.gz``) or interaction tables (``--tables_dir``, default: the copy shipped in the package,
:mod:`recbole_fmrl.data.amazon2014`, which also holds the 5-core and order steps). Steps, each logged on one line with its counts: parse -> 5-core -> order ->
item text -> write -> text features -> image download -> image features. A finished step is
skipped on a rerun unless ``--force`` or its inputs changed: each step leaves a completion record
naming the sha256 of its inputs (``<name>.interactions.done.json``; a feature matrix's manifest),
removed when the step starts, so an interrupted step is done again. Every file is written atomically.

    python -m recbole_fmrl.dataset_prep amazon2014 --dataset=beauty --raw_dir=RAW --out=dataset
    python -m recbole_fmrl.dataset_prep amazon2014 --check        # embedded tables vs. the paper's Table 1

(``python -m recbole_fmrl.dataset_prep.amazon2014`` takes the same flags.)
"""

import ast
import gzip
import json
import logging
import os
import re
import sys

import pandas as pd

from recbole_fmrl.data.amazon2014 import TABLES_DIR, five_core, five_core_sequences, from_tables, read_tables, table_files
from recbole_fmrl.data.encoders import DEFAULT_IMAGE_MODEL, DEFAULT_IMAGE_PRETRAINED, PAPER_TEXT_ENCODER
from recbole_fmrl.data.paper import TABLE1
from recbole_fmrl.dataset_prep import steps
from recbole_fmrl.errors import InputFileError, PluginError, exit_status
from recbole_fmrl.flags import FlagParser

logger = logging.getLogger(__name__)

CATEGORIES = {
    "beauty": "Beauty",
    "sports": "Sports_and_Outdoors",
    "toys": "Toys_and_Games",
    "clothing": "Clothing_Shoes_and_Jewelry",
}


# ----------------------------------------------------------------------------- parse

REVIEW_KEYS = ("reviewerID", "asin", "unixReviewTime")


def _lines(path):
    """``(line number, line)`` of a text file, gzip-compressed when its name ends in ``.gz``; a file
    that cannot be read so is one error line."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except (OSError, EOFError, UnicodeDecodeError) as err:
        kind = "gzip text file" if opener is gzip.open else "UTF-8 text file"
        raise InputFileError(path, f"not a readable {kind}: {err}") from None


def parse_reviews(path, keys=REVIEW_KEYS):
    """Interactions (user_id, item_id, timestamp) of a file of JSON reviews (``reviews_*_5.json.gz``),
    in file order; ``keys`` name the user, item and time of a review.

    A line that is not a JSON review (object with the three keys, the time a number) is one error
    naming the file and line."""
    user_key, item_key, time_key = keys
    rows = []
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            review = json.loads(line)
        except ValueError as err:
            raise InputFileError(path, f"not a JSON review: {err}", line=number) from None
        if not isinstance(review, dict):
            raise InputFileError(path, f"expected a JSON object (one review), got a {type(review).__name__}", line=number)
        missing = [key for key in keys if key not in review]
        if missing:
            raise InputFileError(path, f"the review has no {', '.join(missing)}", line=number)
        try:
            time = float(review[time_key])
        except (TypeError, ValueError):
            raise InputFileError(path, f"{time_key} {review[time_key]!r} is not a number", line=number) from None
        rows.append((review[user_key], review[item_key], time))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def parse_meta(path, wanted, key="asin"):
    """``item id -> metadata dict`` for the items in ``wanted`` from a ``meta_*.json.gz`` file, the
    item id being the value of ``key``.

    Lines are Python literals (parsed with ``ast.literal_eval``; strict JSON lines also work);
    lines of other items are skipped before parsing, unparsable ones are counted and logged; a line
    that parses to something other than a dict with ``key`` is one error naming file and line.
    """
    meta, n_bad = {}, 0
    id_in_line = re.compile(rf"""['"]{re.escape(key)}['"]\s*:\s*['"]([^'"]+)['"]""")
    for number, line in _lines(path):
        found = id_in_line.search(line)
        if found is None or found.group(1) not in wanted:
            continue
        try:
            record = ast.literal_eval(line)
        except (ValueError, SyntaxError):
            try:
                record = json.loads(line)
            except ValueError:
                n_bad += 1
                continue
        if not isinstance(record, dict) or key not in record:
            what = f"a dict without '{key}'" if isinstance(record, dict) else f"a {type(record).__name__}"
            raise InputFileError(path, f"expected a dict with one item's metadata, got {what}", line=number)
        meta[record[key]] = record
    if n_bad:
        logger.warning("parse: %d unparsable metadata lines in %s were skipped", n_bad, path)
    return meta


def raw_files(raw_dir, name):
    """The official raw files of ``name``: reviews and metadata (one error line if one is missing)."""
    category = CATEGORIES[name]
    paths = [os.path.join(raw_dir, f"reviews_{category}_5.json.gz"), os.path.join(raw_dir, f"meta_{category}.json.gz")]
    for path in paths:
        if not os.path.isfile(path):
            raise PluginError(f"raw file not found: {path}")
    return paths


def read_raw(raw_dir, name):
    """Interactions and item metadata from the official raw files; order key ``timestamp``."""
    reviews, meta_file = raw_files(raw_dir, name)
    inter = parse_reviews(reviews)
    meta = parse_meta(meta_file, set(inter["item_id"]))
    return inter, meta


# ----------------------------------------------------------------------------- pipeline

def build_interactions(name, raw_dir=None, tables_dir=None):
    """Parse (the raw files, else the tables), 5-core filter and order the interactions; ``(inter, items)``."""
    if not raw_dir:
        return from_tables(tables_dir or TABLES_DIR, name)
    inter, meta = read_raw(raw_dir, name)
    return five_core_sequences(inter, meta, "timestamp", raw_dir)


def prepare_dataset(name, out_dir, *, raw_dir=None, tables_dir=None, text=True, images=True,
                    text_encoder=PAPER_TEXT_ENCODER, image_model=DEFAULT_IMAGE_MODEL,
                    image_pretrained=DEFAULT_IMAGE_PRETRAINED, image_dir=None, batch_size=64,
                    device="cpu", workers=8, force=False):
    """Run every step for one dataset into ``<out_dir>/<name>/``; return its Table 1 counts.

    Returns a dict with ``users``, ``items``, ``images`` (items with a non-zero image row; None
    without image features), ``inter``, ``density`` and the ``folder``.
    """
    if name not in CATEGORIES:
        raise PluginError(f"unknown dataset '{name}' (known: {', '.join(CATEGORIES)})")
    inputs = raw_files(raw_dir, name) if raw_dir else table_files(tables_dir or TABLES_DIR, name)

    def build():
        return (*build_interactions(name, raw_dir, tables_dir), None)

    row = steps.prepare_atomic_dataset(
        os.path.join(out_dir, name), name, inputs, build, text=text, images=images,
        text_encoder=text_encoder, image_model=image_model, image_pretrained=image_pretrained,
        image_dir=image_dir, batch_size=batch_size, device=device, workers=workers, force=force)
    return {"dataset": name, **row}


def table1_lines(rows):
    """Header and one line per dataset in the layout of the paper's Table 1."""
    lines = [f"{'Dataset':<10}{'#User':>9}{'#Item':>9}{'#Image':>9}{'#Inter':>10}{'Density':>10}"]
    for row in rows:
        images = "-" if row.get("images") is None else f"{row['images']:,}"
        lines.append(f"{row['dataset']:<10}{row['users']:>9,}{row['items']:>9,}{images:>9}"
                     f"{row['inter']:>10,}{row['density']:>10.4%}")
    return lines


def check_table1(tables_dir=TABLES_DIR, names=tuple(TABLE1)):
    """Counts of each table after 5-core; ``(rows, mismatches)`` against the paper's Table 1."""
    rows, mismatches = [], []
    for name in names:
        inter, _ = read_tables(tables_dir, name)
        inter, _ = five_core(inter)
        users, items = inter["user_id"].nunique(), inter["item_id"].nunique()
        rows.append({"dataset": name, "users": users, "items": items, "images": None,
                     "inter": len(inter), "density": len(inter) / (users * items)})
        if (users, items, len(inter)) != TABLE1[name]:
            mismatches.append(f"{name}: {(users, items, len(inter))} != Table 1 {TABLE1[name]}")
    return rows, mismatches


def add_arguments(parser):
    """The flags of ``python -m recbole_fmrl.dataset_prep amazon2014``."""
    parser.add_argument("--dataset", choices=sorted(CATEGORIES), default=None,
                        help="which dataset to prepare; required unless --check (default: all four, for --check)")
    parser.add_argument("--out", default="dataset", help="output root; files go to OUT/<dataset>/")
    parser.add_argument("--raw_dir", default=None,
                        help="folder with reviews_<Category>_5.json.gz and meta_<Category>.json.gz (default: use --tables_dir)")
    parser.add_argument("--tables_dir", default=None,
                        help="folder with <name>/<name>.interactions.tsv.gz (default: the embedded copy)")
    parser.add_argument("--no_text", action="store_true", help="skip text features")
    parser.add_argument("--no_images", action="store_true", help="skip image download and features")
    parser.add_argument("--check", action="store_true",
                        help="only check that the tables reproduce the paper's Table 1 counts")
    steps.add_arguments(parser, text_encoder=PAPER_TEXT_ENCODER)


def run(args):
    """Run the command for parsed ``args``; prints the Table 1 counts and returns the exit status."""
    if args.check:
        names = [args.dataset] if args.dataset else list(TABLE1)
        rows, mismatches = check_table1(args.tables_dir or TABLES_DIR, names)
        print("\n".join(table1_lines(rows)))
        for line in mismatches:
            logger.error("check: %s", line)
        if not mismatches:
            print(f"check: #User, #Item and #Inter equal the paper's Table 1 for {', '.join(names)}")
        return 1 if mismatches else 0
    if not args.dataset:
        raise PluginError("--dataset is required (or --check)")
    row = prepare_dataset(args.dataset, args.out, raw_dir=args.raw_dir, tables_dir=args.tables_dir,
                          text=not args.no_text, images=not args.no_images, **steps.settings(args))
    print("\n".join(table1_lines([row])))
    return 0


def build_parser():
    """``python -m recbole_fmrl.dataset_prep.amazon2014``: the flags of the ``amazon2014`` command."""
    parser = FlagParser(prog="python -m recbole_fmrl.dataset_prep.amazon2014", description=__doc__)
    add_arguments(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return exit_status(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
