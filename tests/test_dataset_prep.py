"""dataset_prep: the official raw-file path end to end with real encoders, and the embedded tables."""

import functools
import gzip
import json
import logging
import os

import numpy as np
import pandas as pd
import pytest

from conftest import ImageHandler
from recbole_fmrl.data import atomic_files
from recbole_fmrl.data.amazon2014 import five_core
from recbole_fmrl.data.embedded import EMBEDDED, ensure_embedded_dataset
from recbole_fmrl.data.encoders import PACKAGED_MINILM, encode_texts, load_text_encoder
from recbole_fmrl.dataset_prep import amazon2014
from recbole_fmrl.files import sha256_file

CORE_USERS = [f"U{i}" for i in range(6)]
CORE_ITEMS = [f"I{i}" for i in range(6)]
# U0's reviews (item, unixReviewTime). _write_raw orders the file by time % 7 (stable), so the tied
# pairs are in the file as I5 before I0 and I2 before I1, the reverse of their ASIN order: the expected
# order is by time with ties in file order, which a tie-break by ASIN (or by time alone, unstably) breaks.
U0_EVENTS = [("I3", 300), ("I5", 100), ("I2", 200), ("I1", 200), ("I0", 100), ("I4", 400)]
U0_EXPECTED = ["I5", "I0", "I2", "I1", "I3", "I4"]
IMAGE_MODEL = "ViT-S-32"  # fastest open_clip model to build on CPU (random weights: pretrained None)


def _write_raw(raw_dir, base_url):
    """Official-format reviews_Beauty_5.json.gz and meta_Beauty.json.gz for a 6x6 core plus
    item Y (4 reviews, dropped in round 1) and user W (5 reviews incl. Y, dropped in round 2)."""
    reviews = []
    for user in CORE_USERS[1:]:
        reviews += [(user, item, 1000 + k) for k, item in enumerate(CORE_ITEMS)]
    reviews += [("U0", item, t) for item, t in U0_EVENTS]
    reviews += [("U1", "Y", 5000), ("U2", "Y", 5000), ("U3", "Y", 5000)]
    reviews += [("W", item, 10 + k) for k, item in enumerate(["I0", "I1", "I2", "I3", "Y"])]
    reviews.sort(key=lambda r: (r[0] != "U0", r[2] % 7))  # users interleaved in the file
    with gzip.open(raw_dir / "reviews_Beauty_5.json.gz", "wt", encoding="utf-8") as f:
        for user, item, t in reviews:
            f.write(json.dumps({"reviewerID": user, "asin": item, "overall": 5.0,
                                "reviewText": "ok", "unixReviewTime": t}) + "\n")
    meta = [
        {"asin": "I0", "title": "Lip Balm", "price": 12.99, "brand": "Acme",
         "categories": [["Beauty", "Skin Care", "Lips"], ["Gifts"]], "imUrl": f"{base_url}/good.jpg"},
        {"asin": "I1", "price": 5.0, "categories": [["Beauty"]], "imUrl": f"{base_url}/missing.jpg"},
        {"asin": "I2", "title": "Crème brûlée Körperbutter – 200 ml", "brand": "Ünïcode",
         "imUrl": f"{base_url}/corrupt.jpg"},
        {"asin": "I3", "title": "Tab\tand\nnewline   title", "salesRank": {"Beauty": 7}},
        {"asin": "I4", "title": "L'Oreal \"Paris\" Mascara", "imUrl": f"{base_url}/good2.jpg"},
        {"asin": "Y", "title": "Filtered out"},
        {"asin": "Z", "title": "Never reviewed"},
    ]
    with gzip.open(raw_dir / "meta_Beauty.json.gz", "wt", encoding="utf-8") as f:
        for record in meta:
            f.write(repr(record) + "\n")  # Python literals, as in the 2014 files
        f.write("{'asin': 'I5', 'title': 'broken line\n")  # unparsable: I5 gets no metadata


def _cli_args(raw_dir, out_dir):
    return ["--dataset", "beauty", "--raw-dir", str(raw_dir), "--out", str(out_dir),
            "--text-encoder", PACKAGED_MINILM, "--image-model", IMAGE_MODEL, "--image-pretrained",
            "none", "--device", "cpu", "--batch-size", "4", "--workers", "2"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, image_server):
    """Run the CLI once on the raw fixture files; yields (out_dir, folder)."""
    root = tmp_path_factory.mktemp("prep")
    raw_dir, out_dir = root / "raw", root / "out"
    raw_dir.mkdir()
    _write_raw(raw_dir, image_server)
    ImageHandler.requests_seen.clear()
    assert amazon2014.main(_cli_args(raw_dir, out_dir)) == 0
    return out_dir, out_dir / "beauty"


def test_five_core_counts_and_table1_row(prepared, capsys):
    out_dir, folder = prepared
    inter = pd.read_csv(folder / "beauty.inter", sep="\t", dtype=str)
    assert len(inter) == 36
    assert sorted(inter["user_id:token"].unique()) == CORE_USERS
    assert sorted(inter["item_id:token"].unique()) == CORE_ITEMS
    assert amazon2014.main(_cli_args(out_dir.parent / "raw", out_dir)) == 0  # rerun: all skipped
    header, row = capsys.readouterr().out.strip().splitlines()[-2:]
    assert header.split() == ["Dataset", "#User", "#Item", "#Image", "#Inter", "Density"]
    assert row.split() == ["beauty", "6", "6", "2", "36", "100.0000%"]


def test_five_core_iterates_until_stable():
    inter = pd.DataFrame({"user_id": ["a"] * 5 + ["b"] * 5, "item_id": list("vwxyz") + list("vwxyq")})
    filtered, rounds = five_core(inter, k=2)
    # q has 1 review -> dropped; then every user and item has >= 2 interactions.
    assert (len(filtered), rounds) == (8, 1)
    # round 1 drops item q (1 review), leaving user c with 1; round 2 drops c, leaving item z with 1;
    # round 3 drops z's last review. Row order is kept.
    inter = pd.DataFrame({"user_id": list("aabbbcc"), "item_id": list("xyxyzzq")})
    filtered, rounds = five_core(inter, k=2)
    assert rounds == 3
    assert list(zip(filtered["user_id"], filtered["item_id"])) == [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]


def test_inter_file_is_chronological_with_ties_in_file_order(prepared):
    _, folder = prepared
    with open(folder / "beauty.inter", encoding="utf-8") as f:
        assert f.readline().rstrip("\n").split("\t") == [
            "user_id:token", "item_id:token", "timestamp:float", "position:float"]
    inter = pd.read_csv(folder / "beauty.inter", sep="\t", dtype={"user_id:token": str})
    u0 = inter[inter["user_id:token"] == "U0"]
    assert list(u0["item_id:token"]) == U0_EXPECTED
    assert list(u0["timestamp:float"]) == [100, 100, 200, 200, 300, 400]
    for _, events in inter.groupby("user_id:token"):
        assert list(events["position:float"]) == list(range(len(events)))
        assert events.index.is_monotonic_increasing and np.ptp(events.index) == len(events) - 1


def test_item_text_format(prepared):
    _, folder = prepared
    items = atomic_files.read_items(folder / "beauty.items.tsv")
    assert list(items["item_id"]) == CORE_ITEMS
    text = dict(zip(items["item_id"], items["text"]))
    assert text == {
        "I0": "Title: Lip Balm Price: 12.99 Brand: Acme Categories: Beauty, Skin Care, Lips",
        "I1": "Price: 5.0 Categories: Beauty",
        "I2": "Title: Crème brûlée Körperbutter – 200 ml Brand: Ünïcode",
        "I3": "Title: Tab and newline title",
        "I4": "Title: L'Oreal \"Paris\" Mascara",
        "I5": "",
    }


def test_text_features_and_manifest(prepared):
    _, folder = prepared
    features = np.load(folder / "beauty.text.npy")
    manifest = json.loads((folder / "beauty.text.npy.json").read_text())
    assert features.dtype == np.float32 and features.shape == (6, 384)
    assert manifest["encoder"] == PACKAGED_MINILM
    assert (manifest["dim"], manifest["n_items"], manifest["n_zero_rows"]) == (384, 6, 1)
    assert manifest["items_file"] == "beauty.items.tsv"
    items = atomic_files.read_items(folder / "beauty.items.tsv")
    assert manifest["source_sha256"] == atomic_files.source_sha256(items, "text")
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), [1, 1, 1, 1, 1, 0], atol=1e-5)
    expected, _ = encode_texts(["Title: Lip Balm Price: 12.99 Brand: Acme Categories: Beauty, Skin Care, Lips"],
                               load_text_encoder(PACKAGED_MINILM))
    np.testing.assert_allclose(features[0], expected[0], atol=1e-5)


def test_images_downloaded_cached_and_encoded(prepared):
    _, folder = prepared
    features = np.load(folder / "beauty.image.npy")
    manifest = json.loads((folder / "beauty.image.npy.json").read_text())
    assert manifest["encoder"] == f"open_clip:{IMAGE_MODEL}:None"
    # I1: 404, I2: corrupt JPEG, I3 and I5: no URL -> zero rows, counted.
    assert (manifest["n_items"], manifest["n_zero_rows"], manifest["dim"]) == (6, 4, features.shape[1])
    norms = np.linalg.norm(features, axis=1)
    np.testing.assert_allclose(norms, [1, 0, 0, 0, 1, 0], atol=1e-5)
    assert not np.allclose(features[0], features[4])
    cache = sorted(os.listdir(folder / "images"))
    assert len(cache) == 4 and sum(name.endswith(".missing") for name in cache) == 1
    assert sorted(ImageHandler.requests_seen) == ["/corrupt.jpg", "/good.jpg", "/good2.jpg", "/missing.jpg"]


def test_rerun_skips_finished_steps(prepared, caplog):
    out_dir, folder = prepared
    stamps = {name: os.stat(folder / name).st_mtime_ns for name in os.listdir(folder) if "." in name}
    n_requests = len(ImageHandler.requests_seen)
    with caplog.at_level(logging.INFO, logger="recbole_fmrl"):
        row = amazon2014.prepare_dataset("beauty", str(out_dir), raw_dir=str(out_dir.parent / "raw"),
                                         text_encoder=PACKAGED_MINILM, image_model=IMAGE_MODEL,
                                         image_pretrained=None)
    assert {name: os.stat(folder / name).st_mtime_ns for name in stamps} == stamps
    assert len(ImageHandler.requests_seen) == n_requests
    assert sum("skipped" in message for message in caplog.messages) == 3
    assert (row["users"], row["items"], row["images"], row["inter"]) == (6, 6, 2, 36)


def test_force_redoes_text_features(prepared):
    out_dir, folder = prepared
    before = os.stat(folder / "beauty.text.npy").st_mtime_ns
    raw_dir = out_dir.parent / "raw"
    amazon2014.prepare_dataset("beauty", str(out_dir), raw_dir=str(raw_dir), images=False,
                               text_encoder=PACKAGED_MINILM, force=True)
    assert os.stat(folder / "beauty.text.npy").st_mtime_ns != before
    assert len(pd.read_csv(folder / "beauty.inter", sep="\t")) == 36


def test_dataset_class_maps_prepared_features_by_asin(prepared, monkeypatch):
    from recbole_fmrl.config import Config
    from recbole_fmrl.data.dataset import MultimodalSequentialDataset

    out_dir, folder = prepared
    monkeypatch.chdir(out_dir)
    config = Config(model="SASRec", dataset="beauty", config_dict={
        "data_path": str(out_dir), "use_gpu": False,
        "feature_files": {"text": "beauty.text.npy", "image": "beauty.image.npy"}})
    dataset = MultimodalSequentialDataset(config)
    items = list(atomic_files.read_items(folder / "beauty.items.tsv")["item_id"])
    for modality in ("text", "image"):
        matrix = np.load(folder / f"beauty.{modality}.npy")
        loaded = dataset.item_features(modality).numpy()
        assert loaded.shape == (7, matrix.shape[1]) and not loaded[0].any()
        for asin in ("I0", "I4", "I5"):
            internal = dataset.field2token_id["item_id"][asin]
            np.testing.assert_array_equal(loaded[internal], matrix[items.index(asin)])


def test_missing_raw_file_is_one_line_error(tmp_path, capsys):
    status = amazon2014.main(["--dataset", "toys", "--raw-dir", str(tmp_path), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("error: raw file not found:") and "reviews_Toys_and_Games_5" in err


def test_embedded_tables_give_table1_counts(capsys):
    assert amazon2014.main(["--check"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "check: #User, #Item and #Inter equal the paper's Table 1 for beauty, sports, toys, clothing"
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    for name, (users, items, inter) in amazon2014.TABLE1.items():
        assert rows[name][1:3] == [f"{users:,}", f"{items:,}"] and rows[name][4] == f"{inter:,}"
    assert set(rows) == set(EMBEDDED) == {"beauty", "sports", "toys", "clothing"}


def test_ensure_embedded_dataset_writes_once(tmp_path):
    assert ensure_embedded_dataset("toys", str(tmp_path)) is True
    folder = tmp_path / "toys"
    stamp = os.stat(folder / "toys.inter").st_mtime_ns
    assert ensure_embedded_dataset("toys", str(tmp_path)) is False
    assert os.stat(folder / "toys.inter").st_mtime_ns == stamp
    assert ensure_embedded_dataset("ml-100k", str(tmp_path)) is False
    inter = pd.read_csv(folder / "toys.inter", sep="\t", dtype=str)
    assert len(inter) == 167597 and list(inter.columns) == [
        "user_id:token", "item_id:token", "timestamp:float", "position:float"]
    assert sorted(os.listdir(folder)) == ["toys.inter", "toys.interactions.done.json", "toys.items.tsv"]  # no text offline
    assert len(atomic_files.read_items(folder / "toys.items.tsv")) == 11924


def test_the_embedded_command_writes_what_a_first_run_would(tmp_path, capsys):
    from recbole_fmrl.dataset_prep.__main__ import main

    assert main(["embedded", "--dataset=toys", f"--out={tmp_path}"]) == 0
    assert capsys.readouterr().out.strip() == f"embedded: toys written to {tmp_path}/toys"
    assert ensure_embedded_dataset("toys", str(tmp_path)) is False  # a run finds nothing left to do
    assert main(["embedded", "--dataset=toys", f"--out={tmp_path}"]) == 0
    assert capsys.readouterr().out.strip() == f"embedded: toys already complete in {tmp_path}/toys"
    assert main(["embedded", "--dataset=toys", "--features=text", f"--out={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == "error: --features: toys has no text features (it has: none)"


def test_clothing_inter_has_no_timestamp_column(tmp_path):
    assert ensure_embedded_dataset("clothing", str(tmp_path))
    with open(tmp_path / "clothing" / "clothing.inter", encoding="utf-8") as f:
        assert f.readline().rstrip("\n").split("\t") == ["user_id:token", "item_id:token", "position:float"]


def test_malformed_raw_lines_name_file_and_line(tmp_path, capsys):
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    _write_raw(raw_dir, "http://127.0.0.1:9")
    reviews, meta = raw_dir / "reviews_Beauty_5.json.gz", raw_dir / "meta_Beauty.json.gz"
    good_reviews, good_meta = gzip.open(reviews, "rt").read(), gzip.open(meta, "rt").read()
    cases = [
        (reviews, good_reviews.replace("}\n", "\n", 1), "not a JSON review: Expecting ',' delimiter: line 2 column 1 (char 93)", 1),
        (reviews, '["U0", "I0", 1]\n' + good_reviews, "expected a JSON object (one review), got a list", 1),
        (reviews, good_reviews + '{"reviewerID": "U9", "asin": "I0"}\n', "the review has no unixReviewTime", 45),
        (meta, "[" + good_meta.splitlines()[0] + "]\n" + good_meta, "expected a dict with one item's metadata, got a list", 1),
    ]
    for path, text, message, line in cases:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
        status = amazon2014.main(["--dataset", "beauty", "--raw-dir", str(raw_dir), "--out", str(tmp_path / "out"),
                                  "--no-text", "--no-images"])
        assert (status, capsys.readouterr().err.strip().splitlines()) == (2, [f"error: {path}, line {line}: {message}"])
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(good_reviews if path == reviews else good_meta)


def _write_table(tables_dir, extra_item=False):
    """``beauty`` interaction table: 6 users x 6 items, and item I6 for five of them when ``extra_user``."""
    folder = tables_dir / "beauty"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(user, item, k) for user in CORE_USERS for k, item in enumerate(CORE_ITEMS)]
    if extra_item:
        rows += [(user, "I6", 6) for user in CORE_USERS[:5]]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "position"])
    frame.to_csv(folder / "beauty.interactions.tsv.gz", sep="\t", index=False)


def test_a_step_interrupted_or_with_changed_inputs_is_done_again(tmp_path, monkeypatch):
    tables, out = tmp_path / "tables", tmp_path / "out"
    _write_table(tables)
    prepare = functools.partial(amazon2014.prepare_dataset, "beauty", str(out), tables_dir=str(tables),
                                text=False, images=False)
    assert prepare()["items"] == 6
    folder = out / "beauty"
    _write_table(tables, extra_item=True)  # the input changes, then --force is interrupted mid-write

    def interrupted(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(atomic_files, "write_inter", interrupted)
        with pytest.raises(KeyboardInterrupt):
            prepare(force=True)
    assert len(atomic_files.read_items(folder / "beauty.items.tsv")) == 7  # new items table next to the old .inter
    assert not (folder / "beauty.interactions.done.json").exists()
    row = prepare()  # no --force: the unfinished step is done again
    assert (row["items"], row["inter"]) == (7, 41)
    assert len(pd.read_csv(folder / "beauty.inter", sep="\t")) == 41
    record = json.loads((folder / "beauty.interactions.done.json").read_text())
    assert record["inputs"] == {"beauty.interactions.tsv.gz": sha256_file(tables / "beauty" / "beauty.interactions.tsv.gz")}

    _write_table(tables)  # the input changes back: redone without --force
    assert (prepare()["items"], len(pd.read_csv(folder / "beauty.inter", sep="\t"))) == (6, 36)
