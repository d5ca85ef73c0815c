"""The real item attributes of the embedded Beauty and Sports data: S3Rec's item -> attribute lists.

S3Rec (Zhou et al., CIKM 2020, aHuiWang/CIKM2020-S3Rec ``data/<Name>_item2attributes.json``) gives
each item of the 2014 5-core data the ids of its brand and of its categories below the top level
(the attribute names are not published). Its item ids are tied to ASINs by an id map (``id2item``
of a ``datamaps.json``). This module turns them into the table shipped with the package,
``recbole_fmrl/data/amazon2014_tables/<name>/<name>.attributes.tsv.gz`` (``item_id`` = ASIN,
``brand_categories`` = space-separated attribute ids, S3Rec's order), after checking that the id
map sends S3Rec's user sequences onto the embedded interactions (:mod:`recbole_fmrl.data.amazon2014`
writes that table as the ``.item`` file of a materialised dataset).

    python -m recbole_fmrl.dataset_prep.s3rec_attributes --name=beauty --item2attributes=Beauty_item2attributes.json \\
        --datamaps=datamaps.json --sequences=Beauty.txt
"""

import gzip
import io
import json
import logging
import sys
from collections import Counter

import pandas as pd

from recbole_fmrl import files
from recbole_fmrl.data.amazon2014 import ATTRIBUTES_FIELD, TABLES_DIR, attributes_table_path, read_tables
from recbole_fmrl.errors import InputFileError, PluginError, exit_status
from recbole_fmrl.flags import FlagParser

logger = logging.getLogger(__name__)


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise InputFileError(path, f"not a readable JSON file: {err}") from None


def attribute_table(item2attributes_file, datamaps_file):
    """``(item_id, attributes)`` rows, by ASIN: S3Rec's attribute ids of every item of the id map."""
    item2attributes, datamaps = _read_json(item2attributes_file), _read_json(datamaps_file)
    id2item = datamaps.get("id2item") if isinstance(datamaps, dict) else None
    if not isinstance(id2item, dict):
        raise InputFileError(datamaps_file, "has no id2item map")
    missing = sorted(set(id2item) - set(item2attributes), key=int)
    if missing:
        raise InputFileError(item2attributes_file, f"no attributes for {len(missing)} items of the id map (e.g. id {missing[0]})")
    rows = [(asin, " ".join(str(a) for a in item2attributes[item])) for item, asin in id2item.items()]
    return pd.DataFrame(sorted(rows), columns=["item_id", ATTRIBUTES_FIELD])


def check_sequences(sequences_file, datamaps_file, inter):
    """One error unless S3Rec's user sequences, mapped to ASINs, are the users' item sets of ``inter``."""
    id2item = _read_json(datamaps_file)["id2item"]
    with open(sequences_file, encoding="utf-8") as f:
        mapped = Counter(frozenset(id2item[item] for item in line.split()[1:]) for line in f if line.strip())
    embedded = Counter(frozenset(items) for _, items in inter.groupby("user_id", sort=False)["item_id"])
    if mapped != embedded:
        raise InputFileError(sequences_file, f"mapped through {datamaps_file}, its {sum(mapped.values())} user sequences "
                                             f"do not match the {sum(embedded.values())} users of the embedded table")


def write_table(table, path):
    """Write the attribute table gzip-compressed, byte for byte reproducible (no time stamp)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as f:
        f.write(table.to_csv(sep="\t", index=False).encode("utf-8"))
    files.write_bytes_atomic(path, buffer.getvalue())


def build_parser():
    parser = FlagParser(prog="python -m recbole_fmrl.dataset_prep.s3rec_attributes", description=__doc__)
    parser.add_argument("--name", required=True, help="embedded dataset the table is for (beauty, sports)")
    parser.add_argument("--item2attributes", required=True, help="S3Rec's <Name>_item2attributes.json")
    parser.add_argument("--datamaps", required=True, help="datamaps.json whose id2item maps S3Rec's item ids to ASINs")
    parser.add_argument("--sequences", required=True, help="S3Rec's <Name>.txt user sequences (to check the id map)")
    parser.add_argument("--tables_dir", default=TABLES_DIR, help="where the embedded tables are")
    return parser


def run(args):
    """Check S3Rec's files against the embedded table, then write the attribute table; the exit status."""
    inter, _ = read_tables(args.tables_dir, args.name)
    check_sequences(args.sequences, args.datamaps, inter)
    table = attribute_table(args.item2attributes, args.datamaps)
    if set(table["item_id"]) != set(inter["item_id"]):
        raise PluginError(f"the id map's items are not the items of the embedded '{args.name}' table")
    path = attributes_table_path(args.tables_dir, args.name)
    write_table(table, path)
    n_ids = [len(ids.split()) for ids in table[ATTRIBUTES_FIELD]]
    print(f"{path}: {len(table):,} items, {len(set(' '.join(table[ATTRIBUTES_FIELD]).split())):,} attribute ids, "
          f"{sum(n_ids) / len(n_ids):.2f} per item (min {min(n_ids)}, max {max(n_ids)})")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return exit_status(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
