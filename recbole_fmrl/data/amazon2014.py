"""The Amazon 2014 5-core datasets of the fMRLRec paper as shipped with the package, and the steps
that turn them into a dataset folder.

The tables (``amazon2014_tables/<name>/``, described in ``amazon2014_tables/README.md``): the
interactions of each dataset, Beauty's titles, and S3Rec's brand and category ids of every Beauty and
Sports item. The transform (5-core, each user's events in order, the items table) is also the one
the preparation from the official raw files runs (``recbole_fmrl.dataset_prep.amazon2014``).
"""

import logging
import os

import numpy as np
import pandas as pd

from recbole_fmrl.data import atomic_files, steps
from recbole_fmrl.errors import PluginError

logger = logging.getLogger(__name__)

TABLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "amazon2014_tables")
"""The shipped tables: ``<TABLES_DIR>/<name>/<name>.interactions.tsv.gz`` (+ titles, attributes)."""
CORE_K = 5
ATTRIBUTES_FIELD = "brand_categories"
"""The ``.item`` field (token_seq) of the embedded datasets and the attribute table's column: brand and category ids."""


# ----------------------------------------------------------------------------- the tables

def table_files(tables_dir, name):
    """The interaction table of ``name`` (one error line if missing) and its titles table, if any."""
    folder = os.path.join(tables_dir, name)
    table = os.path.join(folder, f"{name}.interactions.tsv.gz")
    if not os.path.isfile(table):
        raise PluginError(f"interaction table not found: {table}")
    titles = os.path.join(folder, f"{name}.titles.tsv.gz")
    return [table, titles] if os.path.isfile(titles) else [table]


def read_tables(tables_dir, name):
    """Interactions and titles from ``<tables_dir>/<name>/<name>.interactions.tsv.gz`` (+ titles).

    The order key is ``position`` (the paper's order, ties included); ``timestamp`` is kept when
    the table has it.
    """
    table, *titles_file = table_files(tables_dir, name)
    inter = pd.read_csv(table, sep="\t", dtype={"user_id": str, "item_id": str})
    if "timestamp" not in inter:
        inter["timestamp"] = np.nan
    inter["timestamp"] = inter["timestamp"].astype(float)
    meta = {}
    if titles_file:
        frame = pd.read_csv(titles_file[0], sep="\t", dtype=str, keep_default_na=False)
        meta = {asin: {"title": title} for asin, title in zip(frame["item_id"], frame["title"]) if title}
    return inter, meta


def attributes_table_path(tables_dir, name):
    return os.path.join(tables_dir, name, f"{name}.attributes.tsv.gz")


def read_attributes_table(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


# ----------------------------------------------------------------------------- transform

def five_core(inter, k=CORE_K):
    """Drop users and items with fewer than ``k`` interactions until none is left; keep row order.

    Returns ``(filtered interactions, number of rounds that removed something)``.
    """
    rounds = 0
    while True:
        user_count = inter.groupby("user_id")["user_id"].transform("size")
        item_count = inter.groupby("item_id")["item_id"].transform("size")
        keep = (user_count >= k) & (item_count >= k)
        if keep.all():
            return inter.reset_index(drop=True), rounds
        inter = inter[keep]
        rounds += 1


def chronological(inter, key):
    """Group each user's events (users in first-appearance order), sorted by ``key`` with ties in
    input order, and set ``position`` to the 0-based index inside the user's sequence."""
    user_code = pd.factorize(inter["user_id"])[0]
    order = np.lexsort((inter[key].to_numpy(), user_code))  # lexsort is stable
    inter = inter.iloc[order].reset_index(drop=True)
    inter["position"] = inter.groupby("user_id", sort=False).cumcount().astype(float)
    return inter


def item_text(record):
    """Item text as in the paper (sec. 3.3.1): "Title: ... Price: ... Brand: ... Categories: ...",
    with only the fields present (categories: the first category path, comma-separated)."""
    categories = record.get("categories")
    first_path = ", ".join(map(str, categories[0])) if categories and categories[0] else None
    return atomic_files.labelled_text([("Title", record.get("title")), ("Price", record.get("price")),
                                       ("Brand", record.get("brand")), ("Categories", first_path)])


def build_items(item_ids, meta):
    """The item table (item_id, text, image_url), one row per item, in ASIN order."""
    rows = []
    for asin in sorted(item_ids):
        record = meta.get(asin, {})
        rows.append((asin, item_text(record), record.get("imUrl") or ""))
    return pd.DataFrame(rows, columns=list(atomic_files.ITEMS_COLUMNS))


def five_core_sequences(inter, meta, key, source):
    """5-core filter the parsed ``inter``, order each user's events by ``key`` and build the items
    table from ``meta`` (ASIN -> record), each step logged with its counts; ``(inter, items)``."""
    logger.info("parse: %s interactions, %s users, %s items, metadata for %s items (from %s)",
                f"{len(inter):,}", f"{inter['user_id'].nunique():,}", f"{inter['item_id'].nunique():,}",
                f"{len(meta):,}", source)
    n_before = len(inter)
    inter, rounds = five_core(inter)
    logger.info("5-core: %s -> %s interactions in %d filtering rounds; %s users, %s items",
                f"{n_before:,}", f"{len(inter):,}", rounds,
                f"{inter['user_id'].nunique():,}", f"{inter['item_id'].nunique():,}")
    inter = chronological(inter, key)
    logger.info("order: %s user sequences sorted by %s (ties in file order), longest %d",
                f"{inter['user_id'].nunique():,}", key, int(inter["position"].max()) + 1)
    items = build_items(inter["item_id"].unique(), meta)
    n_text = int((items["text"] != "").sum())
    logger.info("item text: %s of %s items have text, %s have an image URL",
                f"{n_text:,}", f"{len(items):,}", f"{int((items['image_url'] != '').sum()):,}")
    return inter, items


def from_tables(tables_dir, name):
    """``(inter, items)`` of ``name`` from its interaction tables, in the paper's order (``position``)."""
    inter, meta = read_tables(tables_dir, name)
    return five_core_sequences(inter, meta, "position", tables_dir)


# ----------------------------------------------------------------------------- S3Rec attributes

def attributes_current(folder, name, table_file):
    """Whether ``<name>.item`` was written from exactly this attribute table."""
    return steps.step_done(folder, name, "attributes", [table_file], outputs=[atomic_files.item_fields_path(folder, name)])


def attributes_step(folder, name, table_file):
    """Write ``<name>.item`` (``item_id:token brand_categories:token_seq``) from the shipped table, unless
    it was written from this very table before (a completion record names its sha256)."""
    if attributes_current(folder, name, table_file):
        return False
    item_file = atomic_files.item_fields_path(folder, name)
    with steps.recorded_step(folder, name, "attributes", [table_file]):
        table = read_attributes_table(table_file)
        frame = pd.DataFrame({"item_id:token": table["item_id"],
                              f"{ATTRIBUTES_FIELD}:token_seq": table[ATTRIBUTES_FIELD].str.split()})
        atomic_files.write_item_fields(item_file, frame)
    logger.info("attributes: %s (%s items, %s distinct attribute ids)", item_file, f"{len(table):,}",
                f"{len(set(' '.join(table[ATTRIBUTES_FIELD]).split())):,}")
    return True
