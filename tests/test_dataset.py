"""MultimodalSequentialDataset: feature loading, its errors, NaN handling, leave-one-out order."""

import json
import time

import numpy as np
import pandas as pd
import pytest
from recbole.data import data_preparation
from recbole.data.dataset import Dataset

from recbole_fmrl.config import Config
from recbole_fmrl.data.dataset import MultimodalSequentialDataset
from recbole_fmrl.data.embedded import ensure_embedded_dataset
from recbole_fmrl.data import atomic_files
from recbole_fmrl.errors import FeatureFileError
from recbole_fmrl.files import save_npy_atomic

DIM = 4
ITEMS = [f"item{i:02d}" for i in range(12)]


@pytest.fixture(autouse=True)
def copy_on_write():
    """pandas 3's default, on for every test here, so pandas<3 cannot hide a chained in-place write."""
    with pd.option_context("mode.copy_on_write", True):
        yield


def _write_tiny(folder, name="mm"):
    """A tiny dataset: 10 users x 6 events, items.tsv in a shuffled order, features row r = r + 1."""
    rng = np.random.default_rng(0)
    path = folder / name
    rows = []
    for user in range(10):
        picked = rng.choice(len(ITEMS), size=6, replace=False)
        rows += [(f"u{user}", ITEMS[i], 1000.0 + k, float(k)) for k, i in enumerate(picked)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "position"])
    used = sorted(set(inter["item_id"]))
    order = [used[i] for i in rng.permutation(len(used))]
    items = pd.DataFrame({"item_id": order, "text": "", "image_url": ""})
    atomic_files.write_inter(atomic_files.inter_path(path, name), inter)
    atomic_files.write_items(atomic_files.items_path(path, name), items)
    features = np.repeat(np.arange(1, len(order) + 1, dtype=np.float32)[:, None], DIM, axis=1)
    atomic_files.write_features(str(path / f"{name}.text.npy"), features, encoder="test",
                          items_file=atomic_files.items_path(path, name), source_column="text",
                          source_sha256=atomic_files.source_sha256(items, "text"), n_zero_rows=0)
    return order


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(dataset, data folder, items-file order) for the tiny dataset ``mm``."""
    root = tmp_path_factory.mktemp("mm")
    order = _write_tiny(root)
    config = Config(model="SASRec", dataset="mm", config_dict={
        "data_path": str(root), "use_gpu": False, "TIME_FIELD": "position",
        "load_col": {"inter": ["user_id", "item_id", "position"]},
        "feature_files": {"text": "mm.text.npy"}})
    return MultimodalSequentialDataset(config), root / "mm", order


def _load(dataset, feature_files, modality="text"):
    """``item_features`` with another ``feature_files`` setting (fresh cache, restored after)."""
    saved = dataset.config["feature_files"]
    dataset.config["feature_files"] = feature_files
    dataset._item_feature_cache.clear()
    try:
        return dataset.item_features(modality)
    finally:
        dataset.config["feature_files"] = saved
        dataset._item_feature_cache.clear()


def test_item_features_map_internal_ids_to_rows(tiny):
    dataset, _, order = tiny
    assert dataset._item_feature_cache == {}
    features = dataset.item_features("text")
    assert features.dtype.is_floating_point and features.dtype.itemsize == 4
    assert tuple(features.shape) == (dataset.item_num, DIM) == (len(order) + 1, DIM)
    assert not features[0].any()
    for internal in range(1, dataset.item_num):
        asin = dataset.field2id_token["item_id"][internal]
        assert features[internal].tolist() == [order.index(asin) + 1.0] * DIM
    assert dataset.item_features("text") is features  # loaded once


def test_splits_share_the_loaded_features(tiny):
    dataset, _, _ = tiny
    train, valid, test = dataset.build()
    assert train.item_features("text") is dataset.item_features("text") is test.item_features("text")


def _copy_dataset_files(folder, tmp_path):
    for path in folder.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    return tmp_path


@pytest.mark.parametrize("case", ["no_modality", "no_npy", "no_manifest", "no_items_file", "extra_item",
                                  "missing_item", "wrong_dim", "wrong_rows", "nan_row"])
def test_bad_feature_files_raise_one_line_naming_the_file(tiny, tmp_path, case):
    dataset, folder, order = tiny
    work = _copy_dataset_files(folder, tmp_path)
    npy, manifest_file = work / "mm.text.npy", work / "mm.text.npy.json"
    manifest = json.loads(manifest_file.read_text())
    named = str(npy)
    if case == "no_modality":
        files, named = {"text": str(npy)}, "image"
    else:
        files = {"text": str(npy)}  # absolute paths join as themselves
    if case == "no_npy":
        npy.unlink()
    elif case == "no_manifest":
        manifest_file.unlink()
        named = str(manifest_file)
    elif case == "no_items_file":
        (work / "mm.items.tsv").unlink()
        named = str(work / "mm.items.tsv")
    elif case in ("extra_item", "missing_item"):
        ids = order + ["unknown"] if case == "extra_item" else order[:-1]
        atomic_files.write_items(str(work / "mm.items.tsv"), pd.DataFrame({"item_id": ids, "text": "", "image_url": ""}))
        save_npy_atomic(str(npy), np.ones((len(ids), DIM), np.float32))
    elif case == "wrong_dim":
        manifest["dim"] = DIM + 1
        manifest_file.write_text(json.dumps(manifest))
    elif case == "wrong_rows":
        save_npy_atomic(str(npy), np.ones((len(order) + 1, DIM), np.float32))
    elif case == "nan_row":
        matrix = np.ones((len(order), DIM), np.float32)
        matrix[3, 1] = np.nan
        save_npy_atomic(str(npy), matrix)
    with pytest.raises(FeatureFileError) as caught:
        _load(dataset, files, "image" if case == "no_modality" else "text")
    message = str(caught.value)
    assert named in message and "\n" not in message


def test_missing_values_are_filled_in_every_loaded_field(tmp_path, monkeypatch):
    """pandas 3 turns RecBole's chained in-place fillna into a no-op; nothing may stay NaN. The plugin's
    class is checked under copy-on-write (pandas 3's default); RecBole's own Dataset (non-sequential
    models) fills them only with copy-on-write off, pandas 2's default, which setup.cfg's pandas<3 keeps."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "holes"
    folder.mkdir()
    lines = ["user_id:token\titem_id:token\trating:float\tposition:float\tcolor:token"]
    for user in range(6):
        for k in range(5):
            rating = "" if (user + k) % 3 == 0 else str(1 + (user + k) % 5)
            color = "" if k == 2 else f"c{k}"
            lines.append(f"u{user}\ti{(user + k) % 7}\t{rating}\t{k}\t{color}")
    (folder / "holes.inter").write_text("\n".join(lines) + "\n")
    (folder / "holes.item").write_text("item_id:token\tweight:float\n" + "".join(
        f"i{i}\t{'' if i % 2 else i}\n" for i in range(7)))
    for model, dataset_class, copy_on_write in (("SASRec", MultimodalSequentialDataset, True), ("BPR", Dataset, False)):
        config = Config(model=model, dataset="holes", config_dict={
            "data_path": str(tmp_path), "use_gpu": False, "TIME_FIELD": "position", "load_col": None})
        with pd.option_context("mode.copy_on_write", copy_on_write):
            dataset = dataset_class(config)
        assert set(dataset.inter_feat.columns) == {"user_id", "item_id", "rating", "position", "color"}
        for feat in (dataset.inter_feat, dataset.item_feat):
            for column in feat.columns:
                assert not feat[column].isna().any(), f"{dataset_class.__name__}: NaN left in {column}"
        assert dataset.inter_feat["rating"].min() >= 1


def test_leave_one_out_follows_table_order_on_real_toys(tmp_path, monkeypatch):
    """For every Toys user: test target = last item of the table sequence, valid = the one before,
    and the test history = the preceding items in table order."""
    monkeypatch.chdir(tmp_path)
    ensure_embedded_dataset("toys", str(tmp_path))
    config = Config(model="SASRec", dataset="toys", config_dict={
        "data_path": str(tmp_path), "use_gpu": False, "MAX_ITEM_LIST_LENGTH": 50})
    dataset = MultimodalSequentialDataset(config)
    train, valid, test = data_preparation(config, dataset)
    table = pd.read_csv(atomic_files.inter_path(tmp_path / "toys", "toys"), sep="\t", dtype=str)
    sequences = table.groupby("user_id:token", sort=False)["item_id:token"].apply(list).to_dict()
    user_token, item_token = dataset.field2id_token["user_id"], dataset.field2id_token["item_id"]
    for split, offset in ((test, 1), (valid, 2)):
        feat = split._dataset.inter_feat
        users = user_token[feat["user_id"].numpy()]
        targets = item_token[feat["item_id"].numpy()]
        assert len(users) == len(sequences) == 19412
        expected = [sequences[user][-offset] for user in users]
        assert list(targets) == expected
    histories = test._dataset.inter_feat["item_id_list"].numpy()
    lengths = test._dataset.inter_feat["item_length"].numpy()
    users = user_token[test._dataset.inter_feat["user_id"].numpy()]
    for user, history, length in zip(users, histories, lengths):
        assert list(item_token[history[:length]]) == sequences[user][:-1][-50:]


def test_loading_23k_by_1024_features_takes_seconds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ensure_embedded_dataset("clothing", str(tmp_path))
    folder = tmp_path / "clothing"
    items = atomic_files.read_items(atomic_files.items_path(folder, "clothing"))
    matrix = np.random.default_rng(0).standard_normal((len(items), 1024), dtype=np.float32)
    atomic_files.write_features(str(folder / "clothing.image.npy"), matrix, encoder="random",
                          items_file=atomic_files.items_path(folder, "clothing"), source_column="image_url",
                          source_sha256=atomic_files.source_sha256(items, "image_url"), n_zero_rows=0)
    config = Config(model="SASRec", dataset="clothing", config_dict={
        "data_path": str(tmp_path), "use_gpu": False, "feature_files": {"image": "clothing.image.npy"}})
    dataset = MultimodalSequentialDataset(config)
    started = time.perf_counter()
    features = dataset.item_features("image")
    seconds = time.perf_counter() - started
    assert tuple(features.shape) == (23034, 1024)
    internal = dataset.field2token_id["item_id"][items["item_id"][100]]
    assert np.array_equal(features[internal].numpy(), matrix[100])
    assert seconds < 10, f"loading took {seconds:.1f} s"


def test_features_of_a_reordered_items_table_are_refused(tiny, tmp_path):
    dataset, folder, order = tiny
    work = _copy_dataset_files(folder, tmp_path)
    atomic_files.write_items(str(work / "mm.items.tsv"), pd.DataFrame({"item_id": order[::-1], "text": "", "image_url": ""}))
    npy = work / "mm.text.npy"
    with pytest.raises(FeatureFileError) as caught:
        _load(dataset, {"text": str(npy)})
    assert str(caught.value) == (
        f"feature file {npy} was computed from another version of {work / 'mm.items.tsv'} (reordered or edited: "
        "source_sha256 differs), so its rows would belong to other items; prepare the dataset again")
