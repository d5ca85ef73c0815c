"""The on-disk layout of a prepared dataset: RecBole atomic files plus the plugin's feature files.

Every file is written crash-safe (:mod:`recbole_fmrl.files`).

Layout of ``<out>/<name>/``:

- ``<name>.inter`` -- RecBole atomic interactions: ``user_id:token  item_id:token  timestamp:float
  position:float`` (no timestamp column when the source has none), users' events in chronological
  order; ``position`` is the 0-based index in the user's sequence and is the plugin's ``TIME_FIELD``.
- ``<name>.item`` -- RecBole atomic item features, when the source has categorical item fields
  (e.g. ``item_id:token  attributes:token_seq``); what the ``attributes`` modality of fMRLRec reads.
- ``<name>.items.tsv`` -- one row per item (``item_id``, ``text``, ``image_url``); its row order
  is the row order of every feature matrix.
- ``<name>.<modality>.npy`` -- float32 ``[n_items, dim]``, with the manifest
  ``<name>.<modality>.npy.json`` beside it, whose ``source_sha256`` hashes the (item_id, source
  column) pairs of the items table it was computed from, in row order.
- ``<name>.<step>.done.json`` -- the completion record of a preparation step (the manifest is the
  record of a feature step): the sha256 of every input it read. Removed when the step starts, written
  when it has finished, so a step that was interrupted or whose inputs changed is done again.
"""

import hashlib
import json
import os

import numpy as np
import pandas as pd

from recbole_fmrl.files import save_npy_atomic, sha256_file, write_bytes_atomic, write_json_atomic, atomic_path

ITEMS_COLUMNS = ("item_id", "text", "image_url")
SOURCE_COLUMNS = {"text": "text", "image": "image_url"}  # modality -> the items column it is computed from


def labelled_text(pairs):
    """An items table's ``text`` in the paper's form (sec. 3.3.1), e.g. "Title: … Brand: … Categories: …",
    from ``(label, value)`` pairs; a value that is None or blank is left out, whitespace is collapsed."""
    parts = []
    for label, value in pairs:
        if value is not None and str(value).strip():
            parts.append(f"{label}: {' '.join(str(value).split())}")
    return " ".join(parts)


def inter_path(folder, name):
    return os.path.join(folder, f"{name}.inter")


def items_path(folder, name):
    return os.path.join(folder, f"{name}.items.tsv")


def item_fields_path(folder, name):
    return os.path.join(folder, f"{name}.item")


def feature_path(folder, name, modality):
    return os.path.join(folder, f"{name}.{modality}.npy")


def manifest_path(npy_path):
    return npy_path + ".json"


def done_path(folder, name, step):
    return os.path.join(folder, f"{name}.{step}.done.json")


def file_hashes(paths):
    """``{file name: sha256}`` of ``paths``: what a completion record names as a step's inputs."""
    return {os.path.basename(path): sha256_file(path) for path in paths}


def read_done(folder, name, step):
    """The completion record of ``step``, or None when the step has not finished."""
    try:
        with open(done_path(folder, name, step), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def source_sha256(items, column):
    """Hash of the (item_id, ``column``) pairs, in row order, that a feature matrix is computed from."""
    digest = hashlib.sha256()
    for asin, value in zip(items["item_id"], items[column]):
        digest.update(f"{asin}\t{value}\n".encode("utf-8"))
    return digest.hexdigest()


def write_inter(path, inter):
    """Write interactions (user_id, item_id, timestamp, position) as a RecBole ``.inter`` file.

    The timestamp column is left out when no event has one (e.g. Clothing).
    """
    columns = ["user_id", "item_id", "timestamp", "position"]
    if inter["timestamp"].isna().all():
        columns.remove("timestamp")
    frame = inter[columns].copy()
    frame.columns = [f"{c}:token" if c.endswith("_id") else f"{c}:float" for c in columns]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.17g")


def _clean_cell(value):
    """A table cell without tabs or line breaks ('' for missing)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return " ".join(str(value).split())


def write_items(path, items):
    """Write the item table (columns item_id, text, image_url) as a plain tab-separated file."""
    lines = ["\t".join(ITEMS_COLUMNS)]
    for row in items[list(ITEMS_COLUMNS)].itertuples(index=False):
        lines.append("\t".join(_clean_cell(value) for value in row))
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def write_item_fields(path, frame):
    """Write a RecBole ``.item`` file: ``frame``'s columns are named ``field:type``; a cell of a
    ``token_seq`` column is a list of tokens (each without whitespace), written space-separated."""
    lines = ["\t".join(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("\t".join(" ".join(map(_clean_cell, value)) if isinstance(value, (list, tuple))
                               else _clean_cell(value) for value in row))
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def read_items(path):
    """Read an item table written by :func:`write_items` (all columns str, '' for missing)."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in f]
    return pd.DataFrame(rows, columns=header, dtype=str)


def read_manifest(npy_path):
    """The manifest of a feature matrix, or None when it does not exist."""
    path = manifest_path(npy_path)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_features(npy_path, features, *, encoder, items_file, source_column, source_sha256, n_zero_rows):
    """Save a float32 feature matrix, then its manifest (the manifest marks the step as done: it is
    removed first, so a matrix whose save was interrupted never has a manifest that vouches for it).
    The manifest says what the matrix holds and nothing of how it was made (no timing): written again
    from the same items, text and encoder it is the same bytes, so a checkpoint bound to its sha256
    loads in either dataset folder."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if os.path.exists(manifest_path(npy_path)):
        os.remove(manifest_path(npy_path))
    save_npy_atomic(npy_path, features)
    manifest = {
        "encoder": encoder,
        "dim": int(features.shape[1]),
        "n_items": int(features.shape[0]),
        "items_file": os.path.basename(items_file),
        "source_column": source_column,
        "source_sha256": source_sha256,
        "n_zero_rows": int(n_zero_rows),
        "dtype": "float32",
    }
    write_json_atomic(manifest_path(npy_path), manifest)
    return manifest
