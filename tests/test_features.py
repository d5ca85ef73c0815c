"""python -m recbole_fmrl.dataset_prep features: item text and image features for any RecBole atomic dataset."""

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import recbole
import torch
import yaml
from PIL import Image

from recbole_fmrl.data import atomic_files
from recbole_fmrl.dataset_prep import features
from recbole_fmrl.dataset_prep.__main__ import main
from recbole_fmrl.data.encoders import PACKAGED_MINILM, encode_texts, load_text_encoder
from recbole_fmrl.deploy.evaluate import evaluate

IMAGE_MODEL = "ViT-S-32"  # random weights (--image_pretrained=none): fast to build on CPU
ML_100K = Path(recbole.__file__).resolve().parent / "dataset_example" / "ml-100k"
ITEM_HEADER = ["item_id:token", "title:token_seq", "brand:token", "categories:token_seq", "price:float",
               "sizes:float_seq", "photo:token"]
EXPECTED_TEXT = {
    "i1": "Title: Lip Balm Brand: Acme Categories: Skin Lips Price: 12.99 Sizes: 1 2.5",
    "i2": "",
    "i3": "Title: Big Mug Categories: Kitchen Price: 5",
    "i5": "Title: Never Bought Price: 0.333333",
    "i6": "Brand: Zed",
    "i4": "",  # in the .inter file only
}


def _write_shop(root, image_url, title_of_i1="Lip Balm"):
    """Dataset ``shop``: 8 users over i1..i4 (i4 has no .item row); .item rows i1, i2, i3, i5 (not in
    .inter), i6; photos: i1 a local file, i3 a URL, i6 a local path with no file."""
    folder = root / "shop"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"u{u}\ti{i}\t{10 * u + k}" for u in range(8) for k, i in enumerate((1, 2, 3, 4))]
    (folder / "shop.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n")
    (folder / "photos").mkdir(exist_ok=True)
    Image.new("RGB", (32, 32), (0, 200, 0)).save(folder / "photos" / "i1.jpg", "JPEG")
    items = [
        ["i1", title_of_i1, "Acme", "Skin Lips", "12.99", "1 2.5", "photos/i1.jpg"],
        ["i2", "", "", "", "", "", ""],
        ["i3", "Big   Mug", "", "Kitchen", "5.0", "", f"{image_url}/good.jpg"],
        ["i5", "Never Bought", "", "", "0.33333333", "", ""],
        ["i6", "", "Zed", "", "", "", "photos/none.jpg"],
    ]
    (folder / "shop.item").write_text("\n".join("\t".join(r) for r in [ITEM_HEADER] + items) + "\n")
    return folder


def _args(root, *extra):
    return ["features", "--dataset=shop", f"--data-path={root}", "--text_fields=title,brand,categories,price,sizes",
            "--image_field=photo", "--attribute-fields=brand,categories", f"--text_encoder={PACKAGED_MINILM}",
            f"--image_model={IMAGE_MODEL}", "--image_pretrained=none", "--device=cpu", "--batch_size=4", *extra]


@pytest.fixture(scope="module")
def shop(tmp_path_factory, image_server):
    root = tmp_path_factory.mktemp("features")
    folder = _write_shop(root, image_server)
    assert main(_args(root)) == 0
    return root, folder


def test_item_text_per_field_type(shop):
    _, folder = shop
    items = atomic_files.read_items(folder / "shop.items.tsv")
    assert list(items["item_id"]) == ["i1", "i2", "i3", "i5", "i6", "i4"]  # .item order, then .inter-only items
    assert dict(zip(items["item_id"], items["text"])) == EXPECTED_TEXT
    assert features.field_text("7", "float") == "7" and features.field_text("1e-3 2", "float_seq") == "0.001 2"
    assert features.field_text("  ", "token_seq") is None and features.field_text("a  b", "token_seq") == "a b"


def test_text_and_image_features_and_config(shop, image_server):
    _, folder = shop
    text = np.load(folder / "shop.text.npy")
    assert text.shape == (6, 384)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), [1, 0, 1, 1, 1, 0], atol=1e-5)
    expected, _ = encode_texts([EXPECTED_TEXT["i1"]], load_text_encoder(PACKAGED_MINILM))
    np.testing.assert_allclose(text[0], expected[0], atol=1e-5)
    image = np.load(folder / "shop.image.npy")
    manifest = json.loads((folder / "shop.image.npy.json").read_text())
    # i1: local file, i3: URL; i6's path has no file, the others no source -> zero rows, counted
    np.testing.assert_allclose(np.linalg.norm(image, axis=1), [1, 0, 1, 0, 0, 0], atol=1e-5)
    assert (manifest["n_items"], manifest["n_zero_rows"]) == (6, 4)
    assert len(os.listdir(folder / "images")) == 1  # the one URL, cached
    config = yaml.safe_load((folder / "shop.features.yaml").read_text())
    assert config == {
        "feature_files": {"text": "shop.text.npy", "image": "shop.image.npy"},
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "brand", "categories"]},
        "attributes": ["brand", "categories"],
    }


def test_missing_or_mistyped_field_is_one_error_line(shop, capsys):
    root, folder = shop
    cases = [
        ("--text_fields=title,colour", f"error: {folder / 'shop.item'}: no field 'colour' for --text_fields "
                                       "(its fields: item_id, title, brand, categories, price, sizes, photo)"),
        ("--image_field=phot", f"error: {folder / 'shop.item'}: no field 'phot' for --image_field (did you mean "
                               "'photo'? its fields: item_id, title, brand, categories, price, sizes, photo)"),
        ("--attribute_fields=price", f"error: {folder / 'shop.item'}: --attribute_fields: 'price' is a float field; "
                                     "attributes are token or token_seq fields"),
    ]
    for flag, message in cases:
        status = main(_args(root, flag))
        assert (status, capsys.readouterr().err.strip().splitlines()) == (2, [message])
    with pytest.raises(SystemExit) as exit_:
        main(_args(root, "--text_feilds=title"))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: unknown flag '--text_feilds' (did you mean --text_fields?)"]


def test_rerun_skips_finished_steps_and_redoes_a_changed_one(shop, image_server, caplog):
    root, folder = shop
    outputs = ["shop.items.tsv", "shop.text.npy", "shop.image.npy"]
    stamps = {name: os.stat(folder / name).st_mtime_ns for name in outputs}
    with caplog.at_level(logging.INFO, logger="recbole_fmrl"):
        assert main(_args(root)) == 0
    assert {name: os.stat(folder / name).st_mtime_ns for name in outputs} == stamps
    assert sum("skipped" in message for message in caplog.messages) == 3
    before = np.load(folder / "shop.text.npy")
    _write_shop(root, image_server, title_of_i1="Lip Gloss")  # one input changes
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="recbole_fmrl"):
        assert main(_args(root)) == 0
    after = np.load(folder / "shop.text.npy")
    assert atomic_files.read_items(folder / "shop.items.tsv")["text"][0].startswith("Title: Lip Gloss Brand: Acme")
    assert not np.allclose(before[0], after[0]) and np.allclose(before[1:], after[1:], atol=1e-5)
    assert os.stat(folder / "shop.image.npy").st_mtime_ns == stamps["shop.image.npy"]  # its sources did not change
    assert sum("skipped" in message for message in caplog.messages) == 1


def _ml100k_slice(root, n_users=40):
    """RecBole's bundled ml-100k, cut to its first ``n_users`` users and the items they rated."""
    folder = root / "ml-100k"
    folder.mkdir()
    inter = pd.read_csv(ML_100K / "ml-100k.inter", sep="\t", dtype=str)
    inter = inter[inter["user_id:token"].astype(int) <= n_users]
    inter.to_csv(folder / "ml-100k.inter", sep="\t", index=False)
    item_lines = (ML_100K / "ml-100k.item").read_text(encoding="utf-8").splitlines()
    rated = set(inter["item_id:token"])
    kept = [item_lines[0]] + [line for line in item_lines[1:] if line.split("\t")[0] in rated]
    (folder / "ml-100k.item").write_text("\n".join(kept) + "\n", encoding="utf-8")
    return folder, len(rated)


def test_ml100k_slice_features_train_fmrlrec_text(tmp_path, monkeypatch, capsys):
    from recbole_fmrl.runner import run

    folder, n_items = _ml100k_slice(tmp_path)
    assert main(["features", "--dataset=ml-100k", f"--data_path={tmp_path}", "--text_fields=movie_title,release_year,class",
                 "--batch_size=256"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["feature_files: {text: ml-100k.text.npy}"]
    items = atomic_files.read_items(folder / "ml-100k.items.tsv")
    assert len(items) == n_items
    assert items["text"][items["item_id"] == "1"].item() == "Movie Title: Toy Story Release Year: 1995 Class: Animation Children's Comedy"
    monkeypatch.chdir(tmp_path)
    result = run("fMRLRec", "ml-100k", config_file_list=[str(folder / "ml-100k.features.yaml")], config_dict={
        "data_path": str(tmp_path), "modalities": ["text"], "hidden_size": 16, "epochs": 1, "show_progress": False,
        "use_gpu": False, "checkpoint_dir": str(tmp_path / "saved")})
    assert result["modalities"] == ["text"] and set(result["sizes"]) == {"8", "16"}
    checkpoint = torch.load(result["checkpoint"], weights_only=True)  # trained on the written text vectors:
    manifest = (folder / "ml-100k.text.npy.json").read_bytes()
    assert checkpoint["identity"]["feature_manifest_sha256"] == {"text": hashlib.sha256(manifest).hexdigest()}
    # written again (another folder, another day), the manifest is the same bytes: the checkpoint still fits
    assert main(["features", "--dataset=ml-100k", f"--data_path={tmp_path}", "--text_fields=movie_title,release_year,class",
                 "--batch_size=256", "--force"]) == 0
    assert (folder / "ml-100k.text.npy.json").read_bytes() == manifest
    assert evaluate(result["checkpoint"])["test_result"] == result["test_result"]
    assert checkpoint["state_dict"]["item_encoder.projection.weight"].shape == (16, 384)
    assert "item_encoder.id_embedding.weight" not in checkpoint["state_dict"]
