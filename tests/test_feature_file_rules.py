"""Every rule of the feature files, each with its whole message (a fragment such as the file's name
is in every message, so it cannot tell which rule fired), and the line that logs a loaded matrix."""

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest

from recbole_fmrl.config import Config
from recbole_fmrl.data.dataset import MultimodalSequentialDataset, read_feature_file
from recbole_fmrl.data import atomic_files
from recbole_fmrl.errors import FeatureFileError
from recbole_fmrl.files import save_npy_atomic

from test_dataset import DIM, _copy_dataset_files, _load, tiny  # noqa: F401 (tiny: fixture)


def rule_message(case, work, order, dataset):
    """Break the copy of ``mm`` in ``work`` as ``case`` says; return (modality, the expected message)."""
    npy, manifest_file, items = work / "mm.text.npy", work / "mm.text.npy.json", work / "mm.items.tsv"
    manifest = json.loads(manifest_file.read_text())

    def rewrite_manifest(**changes):
        manifest.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del manifest[key]
        manifest_file.write_text(json.dumps(manifest))

    def write_items(ids):
        atomic_files.write_items(str(items), pd.DataFrame({"item_id": ids, "text": "", "image_url": ""}))
        save_npy_atomic(str(npy), np.ones((len(ids), DIM), np.float32))
        rewrite_manifest(source_sha256=None)  # unchecked source: the item rules speak

    n = len(order)
    if case == "no modality":
        return "image", (f"no feature file for modality 'image' of dataset 'mm': set feature_files: "
                         f"{{image: <file.npy>}} (relative to {dataset.dataset_path}; python -m recbole_fmrl.dataset_prep "
                         f"features --dataset=mm writes them), or train on item IDs only: --modalities=\"[id]\"")
    if case == "no matrix":
        npy.unlink()
        return "text", f"feature file not found: {npy}"
    if case == "no manifest":
        manifest_file.unlink()
        return "text", f"feature manifest not found: {manifest_file} (needed for {npy})"
    if case == "manifest without dim":
        rewrite_manifest(dim=None)
        return "text", f"bad feature manifest {manifest_file}: KeyError('dim')"
    if case == "manifest dim not a number":
        rewrite_manifest(dim="wide")
        return "text", f"bad feature manifest {manifest_file}: ValueError(\"invalid literal for int() with base 10: 'wide'\")"
    if case == "wrong dim":
        rewrite_manifest(dim=DIM + 1)
        return "text", f"feature file {npy} has shape ({n}, {DIM}) but its manifest says dim {DIM + 1}"
    if case == "one-dimensional":
        save_npy_atomic(str(npy), np.ones(DIM, np.float32))
        return "text", f"feature file {npy} has shape ({DIM},) but its manifest says dim {DIM}"
    if case == "unreadable matrix":
        npy.write_bytes(b"not an array")
        with pytest.raises(ValueError) as numpy_error:
            np.load(npy, mmap_mode="r")
        return "text", f"unreadable feature file {npy}: {numpy_error.value}"
    if case == "no items file":
        items.unlink()
        return "text", f"items file not found: {items} (row order of {npy})"
    if case == "items file without item_id":
        items.write_text("asin\ttext\n" + "".join(f"{i}\t\n" for i in order))
        return "text", f"items file {items} has no item_id column"
    if case == "item listed twice":
        write_items(order + order[:1])
        return "text", f"items file {items} lists an item more than once"
    if case == "more rows than items":
        save_npy_atomic(str(npy), np.ones((n + 1, DIM), np.float32))
        return "text", f"feature file {npy} has {n + 1} rows but its items file lists {n} items"
    if case == "no source column":
        rewrite_manifest(source_column="title")
        return "text", f"cannot check feature file {npy} against {items}: no source column 'title' for its source_sha256"
    if case == "unknown item":
        write_items(order + ["unknown"])
        return "text", (f"feature file {npy} does not match the items of dataset 'mm': 0 dataset items have no row, "
                        f"1 rows are for unknown items (e.g. unknown)")
    if case == "item without a row":
        write_items(order[1:])
        return "text", (f"feature file {npy} does not match the items of dataset 'mm': 1 dataset items have no row, "
                        f"0 rows are for unknown items (e.g. {order[0]})")
    if case == "infinite value":
        matrix = np.ones((n, DIM), np.float32)
        matrix[3, 1] = np.inf
        save_npy_atomic(str(npy), matrix)
        return "text", f"feature file {npy} has 1 rows with NaN/inf values (e.g. item {order[3]})"
    raise ValueError(case)


CASES = ["no modality", "no matrix", "no manifest", "manifest without dim", "manifest dim not a number", "wrong dim",
         "one-dimensional", "unreadable matrix", "no items file", "items file without item_id", "item listed twice", "more rows than items",
         "no source column", "unknown item", "item without a row", "infinite value"]


@pytest.mark.parametrize("case", CASES)
def test_each_feature_file_rule_has_its_own_message(tiny, tmp_path, case):
    dataset, folder, order = tiny
    work = _copy_dataset_files(folder, tmp_path)
    modality, message = rule_message(case, work, order, dataset)
    with pytest.raises(FeatureFileError) as caught:
        _load(dataset, {"text": str(work / "mm.text.npy")}, modality)
    assert str(caught.value) == message


def test_a_loaded_matrix_is_logged_with_its_size_encoder_and_zero_rows(tiny, caplog):
    dataset, folder, order = tiny
    with caplog.at_level(logging.INFO):
        _load(dataset, {"text": str(folder / "mm.text.npy")})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("text features:")]
    assert len(lines) == 1 and re.fullmatch(
        re.escape(f"text features: {folder / 'mm.text.npy'} [{len(order)} items x {DIM}] (test, 0 zero rows) loaded in ")
        + r"\d+\.\d\d s", lines[0]), lines


@pytest.mark.parametrize("items", [[f"0{100 + i}" for i in range(8)] + ["B00000JX", "B0000CX", "0999"],
                                   [f"0{100 + i}" for i in range(10)] + ["0999"]], ids=["asins", "digits only"])
def test_feature_rows_are_matched_to_an_inter_file_in_its_own_separator_and_encoding(tmp_path, monkeypatch, items):
    """A comma-separated latin-1 ``.inter`` with the item column last and ids such as "0101" (a number to a
    careless reader, all the more in a column of digits only) or ending in "X" (as many ASINs do); item
    "0999" has one interaction, so RecBole's ``item_inter_num_interval: [2,inf)`` drops it, and its feature
    row is still accepted."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "tiny"
    folder.mkdir()
    lines = ["user_id:token,timestamp:float,item_id:token"]
    for user in range(12):
        lines += [f"usér{user},{1000 + k},{items[(user + k) % 10]}" for k in range(5)]
    lines.append("usér0,2000,0999")
    (folder / "tiny.inter").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (folder / "tiny.items").write_text("text\titem_id\n" + "".join(f"\t{item}\n" for item in reversed(items)), encoding="utf-8")
    matrix = np.arange(len(items) * 3, dtype=np.float32).reshape(len(items), 3)
    np.save(folder / "tiny.text.npy", matrix)
    (folder / "tiny.text.npy.json").write_text(json.dumps({"encoder": "t", "dim": 3, "items_file": "tiny.items"}))
    config = Config("SASRec", "tiny", config_dict={
        "data_path": str(tmp_path), "use_gpu": False, "field_separator": ",", "encoding": "latin-1",
        "item_inter_num_interval": "[2,inf)", "feature_files": {"text": "tiny.text.npy"}})
    dataset = MultimodalSequentialDataset(config)
    tokens = list(dataset.field2id_token["item_id"][1:])
    assert sorted(tokens) == sorted(items[:10]) and dataset.user_num == 13  # 12 users and padding: "usér" read as latin-1
    features = dataset.item_features("text").numpy()
    rows = list(reversed(items))
    for internal, token in enumerate(tokens, start=1):
        np.testing.assert_array_equal(features[internal], matrix[rows.index(token)])
    assert isinstance(read_feature_file(str(folder / "tiny.text.npy"))[0], np.memmap)  # read in place, not copied


def test_a_manifest_without_source_column_is_checked_against_its_modalitys_column(tiny, tmp_path):
    dataset, folder, order = tiny
    work = _copy_dataset_files(folder, tmp_path)
    manifest_file = work / "mm.text.npy.json"
    manifest = json.loads(manifest_file.read_text())
    del manifest["source_column"]  # older manifests: the modality names the column ("text")
    manifest_file.write_text(json.dumps(manifest))
    assert _load(dataset, {"text": str(work / "mm.text.npy")}).shape == (len(order) + 1, DIM)
    atomic_files.write_items(str(work / "mm.items.tsv"), pd.DataFrame({"item_id": order, "text": "edited", "image_url": ""}))
    with pytest.raises(FeatureFileError, match="was computed from another version of"):
        _load(dataset, {"text": str(work / "mm.text.npy")})


def test_items_tables_keep_ids_and_column_names_with_spaces(tiny, tmp_path):
    """The items table is tab-separated: spaces belong to a column name or an id, even at its ends."""
    _, folder, _ = tiny
    work = _copy_dataset_files(folder, tmp_path)
    npy, manifest_file = work / "mm.text.npy", work / "mm.text.npy.json"
    manifest = json.loads(manifest_file.read_text())
    del manifest["source_sha256"]  # no source to check: only the table's ids are read
    manifest_file.write_text(json.dumps(manifest))
    save_npy_atomic(str(npy), np.ones((3, DIM), np.float32))
    (work / "mm.items.tsv").write_text("title words\titem_id\nx\ta \ny z\t b\nw\tc d\n", encoding="utf-8")
    assert read_feature_file(str(npy), "text")[1] == ["a ", " b", "c d"]
