"""python -m recbole_fmrl.dataset_prep amazon2023: official-format JSON-lines files -> RecBole atomic files + features."""

import gzip
import json
import logging

import numpy as np
import pandas as pd
import pytest
import yaml

from recbole_fmrl.data import atomic_files
from recbole_fmrl.dataset_prep.__main__ import main
from recbole_fmrl.data.encoders import PACKAGED_MINILM
from recbole_fmrl.files import sha256_file

USERS = [f"U{i}" for i in range(6)]
ITEMS = [f"P{i}" for i in range(6)]
# U0's reviews in file order (parent_asin, timestamp in ms): by time, ties in file order; P2 twice (first kept).
U0_EVENTS = [("P3", 3000), ("P0", 1000), ("P2", 2000), ("P1", 2000), ("P5", 1000), ("P2", 500), ("P4", 4000)]
U0_EXPECTED = ["P2", "P0", "P5", "P1", "P3", "P4"]


def _review(user, item, timestamp):
    """One line of ``<Category>.jsonl`` as the release writes it."""
    return {"rating": 5.0, "title": "Nice", "text": "Works well.", "images": [], "asin": f"{item}-v1",
            "parent_asin": item, "user_id": user, "timestamp": timestamp, "helpful_vote": 0, "verified_purchase": True}


def _meta(item, base_url, **fields):
    """One line of ``meta_<Category>.jsonl`` as the release writes it (every key present)."""
    record = {"main_category": "All Beauty", "title": None, "average_rating": 4.5, "rating_number": 10,
              "features": [], "description": [], "price": None, "images": [], "videos": [], "store": None,
              "categories": [], "details": {"Brand": "x"}, "parent_asin": item, "bought_together": None}
    record.update(fields)
    return record


def _write_raw(raw_dir, base_url):
    """A 6 x 6 core plus item Y (3 reviews: dropped in round 1) and user W (5 reviews incl. Y: dropped
    in round 2); reviews plain JSON lines, metadata gzip-compressed."""
    reviews = [_review("U0", item, t) for item, t in U0_EVENTS]
    reviews += [_review(user, item, 10_000 + 10 * k) for user in USERS[1:] for k, item in enumerate(ITEMS)]
    reviews += [_review(user, "Y", 50_000) for user in USERS[1:4]]
    reviews += [_review("W", item, 100 + k) for k, item in enumerate(["P0", "P1", "P2", "P3", "Y"])]
    (raw_dir / "All_Beauty.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reviews))
    meta = [
        _meta("P0", base_url, title="Lip Balm", price=12.99, store="Acme Co", features=["Long lasting", "Vegan"],
              categories=["Beauty & Personal Care", "Skin Care"],
              images=[{"thumb": f"{base_url}/t.jpg", "large": f"{base_url}/missing.jpg", "variant": "PT01",
                       "hi_res": f"{base_url}/missing.jpg"},
                      {"thumb": f"{base_url}/t.jpg", "large": f"{base_url}/good2.jpg", "variant": "MAIN",
                       "hi_res": f"{base_url}/good.jpg"}]),
        _meta("P1", base_url, title="Mug", images=[{"thumb": f"{base_url}/t.jpg", "large": f"{base_url}/good2.jpg",
                                                    "variant": "MAIN", "hi_res": None}]),
        _meta("P2", base_url, title="Tab\there\nnewline", price="—", store="Zed"),
        _meta("P4", base_url, price=5, categories=["Tools"]),
        _meta("P5", base_url, title="Comb", images=[{"thumb": f"{base_url}/corrupt.jpg", "large": None,
                                                     "variant": "MAIN", "hi_res": None}]),
        _meta("Y", base_url, title="Filtered out"),
        _meta("Z", base_url, title="Never reviewed"),
    ]  # P3 has no metadata
    with gzip.open(raw_dir / "meta_All_Beauty.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(record) + "\n" for record in meta))


def _args(raw_dir, out_dir, *extra):
    return ["amazon2023", "--category=All_Beauty", f"--raw-dir={raw_dir}", f"--out={out_dir}",
            f"--text_encoder={PACKAGED_MINILM}", "--image_model=ViT-S-32", "--image_pretrained=none",
            "--device=cpu", "--batch_size=4", "--workers=2", *extra]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, image_server):
    root = tmp_path_factory.mktemp("amazon2023")
    raw_dir, out_dir = root / "raw", root / "out"
    raw_dir.mkdir()
    _write_raw(raw_dir, image_server)
    assert main(_args(raw_dir, out_dir)) == 0
    return raw_dir, out_dir, out_dir / "all_beauty"


def test_fixture_round_trips_to_atomic_files_with_expected_counts(prepared, image_server, capsys):
    raw_dir, out_dir, folder = prepared
    inter = pd.read_csv(folder / "all_beauty.inter", sep="\t", dtype={"user_id:token": str})
    assert list(inter.columns) == ["user_id:token", "item_id:token", "timestamp:float", "position:float"]
    assert len(inter) == 36
    assert sorted(inter["user_id:token"].unique()) == USERS and sorted(inter["item_id:token"].unique()) == ITEMS
    u0 = inter[inter["user_id:token"] == "U0"]
    assert list(u0["item_id:token"]) == U0_EXPECTED
    assert list(u0["timestamp:float"]) == [500, 1000, 1000, 2000, 3000, 4000]
    assert main(_args(raw_dir, out_dir)) == 0  # rerun: every step skipped
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("all_beauty ")][-1]
    assert row.split() == ["all_beauty", "6", "6", "2", "36", "100.0000%"]


def test_item_text_photo_and_categorical_fields(prepared, image_server):
    _, _, folder = prepared
    items = atomic_files.read_items(folder / "all_beauty.items.tsv")
    assert list(items["item_id"]) == ITEMS
    assert dict(zip(items["item_id"], items["text"])) == {
        "P0": "Title: Lip Balm Price: 12.99 Store: Acme Co Categories: Beauty & Personal Care, Skin Care "
              "Features: Long lasting Vegan",
        "P1": "Title: Mug",
        "P2": "Title: Tab here newline Store: Zed",
        "P3": "",
        "P4": "Price: 5 Categories: Tools",
        "P5": "Title: Comb",
    }
    assert list(items["image_url"]) == [f"{image_server}/good.jpg", f"{image_server}/good2.jpg", "", "", "",
                                        f"{image_server}/corrupt.jpg"]  # MAIN photo, largest size
    fields = pd.read_csv(folder / "all_beauty.item", sep="\t", dtype=str, keep_default_na=False)
    assert list(fields.columns) == ["item_id:token", "store:token", "categories:token_seq"]
    assert fields.values.tolist() == [
        ["P0", "Acme Co", "Beauty_&_Personal_Care Skin_Care"], ["P1", "", ""], ["P2", "Zed", ""], ["P3", "", ""],
        ["P4", "", "Tools"], ["P5", "", ""]]


def test_features_and_config_file(prepared):
    _, _, folder = prepared
    text = np.load(folder / "all_beauty.text.npy")
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), [1, 1, 1, 0, 1, 1], atol=1e-5)
    image = np.load(folder / "all_beauty.image.npy")
    np.testing.assert_allclose(np.linalg.norm(image, axis=1), [1, 1, 0, 0, 0, 0], atol=1e-5)  # P5: corrupt JPEG
    assert yaml.safe_load((folder / "all_beauty.features.yaml").read_text()) == {
        "feature_files": {"text": "all_beauty.text.npy", "image": "all_beauty.image.npy"},
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "store", "categories"]},
        "attributes": ["store", "categories"],
    }


def test_recbole_reads_the_prepared_dataset(prepared, monkeypatch):
    from recbole_fmrl.config import Config
    from recbole_fmrl.data.loading import create_dataset

    _, out_dir, folder = prepared
    monkeypatch.chdir(out_dir)
    config = Config("fMRLRec", "all_beauty", config_file_list=[str(folder / "all_beauty.features.yaml")],
                    config_dict={"data_path": str(out_dir), "use_gpu": False})
    dataset = create_dataset(config)
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (6, 6, 36)
    categories = dataset.item_attributes("categories")
    p0 = dataset.field2token_id["item_id"]["P0"]
    assert [dataset.field2id_token["categories"][i] for i in categories[p0] if i] == ["Beauty_&_Personal_Care", "Skin_Care"]
    assert dataset.item_features("image").shape == (7, np.load(folder / "all_beauty.image.npy").shape[1])


def test_rerun_skips_and_changed_input_is_redone(prepared, caplog):
    raw_dir, out_dir, folder = prepared
    with caplog.at_level(logging.INFO, logger="recbole_fmrl"):
        assert main(_args(raw_dir, out_dir)) == 0
    assert sum("skipped" in message for message in caplog.messages) == 3
    reviews = raw_dir / "All_Beauty.jsonl"
    original = reviews.read_text()
    reviews.write_text(original + json.dumps(_review("U9", "P0", 9)) + "\n")  # one more review (not 5-core)
    caplog.clear()
    try:
        with caplog.at_level(logging.INFO, logger="recbole_fmrl"):
            assert main(_args(raw_dir, out_dir, "--no_images")) == 0
        skipped = [message.split(":")[0] for message in caplog.messages if "skipped" in message]
        assert skipped == ["text features", "image download/features"]  # interactions redone, same items
        assert atomic_files.read_done(str(folder), "all_beauty", "interactions")["inputs"]["All_Beauty.jsonl"] == \
            sha256_file(reviews)
    finally:
        reviews.write_text(original)


def test_bad_input_is_one_error_line(tmp_path, capsys):
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    assert main(_args(raw_dir, tmp_path / "out")) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: raw file not found: {raw_dir / 'All_Beauty.jsonl'} (or .jsonl.gz)"]
    _write_raw(raw_dir, "http://127.0.0.1:9")
    reviews = raw_dir / "All_Beauty.jsonl"
    lines = reviews.read_text().splitlines()
    broken = json.loads(lines[2])
    del broken["parent_asin"]
    reviews.write_text("\n".join(lines[:2] + [json.dumps(broken)] + lines[3:]) + "\n")
    assert main(_args(raw_dir, tmp_path / "out", "--no_text", "--no_images")) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {reviews}, line 3: the review has no parent_asin"]
