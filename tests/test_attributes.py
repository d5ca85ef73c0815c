"""fMRLRec's `attributes` modality: RecBole's categorical item fields joined to eq. 7's concatenation."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_multimodal_tiny
from recbole_fmrl.data.embedded import ensure_embedded_dataset
from recbole_fmrl.data import atomic_files
from recbole_fmrl.data.amazon2014 import TABLES_DIR, attributes_table_path, read_attributes_table, read_tables
from recbole_fmrl.deploy.evaluate import evaluate
from recbole_fmrl.deploy.export import export
from recbole_fmrl.errors import PluginError
from recbole_fmrl.experiments.compare import parse_modality_sets
from recbole_fmrl.model.layers import ItemAttributeEmbedding
from recbole_fmrl.runner import run

SIZES = [4, 8, 16]


def _write_item_file(root, n_items, shift=0):
    """``tiny.item``: a brand (token, none for every 7th item) and 0-3 categories (token_seq) per item."""
    lines = ["item_id:token\tbrand:token\tcats:token_seq\tweight:float"]
    for i in range(1, n_items + 1):
        brand = "" if i % 7 == 0 else f"b{(i + shift) % 4}"
        cats = " ".join(f"c{(i * k + shift) % 5}" for k in range(1, i % 4 + 1))
        lines.append(f"i{i}\t{brand}\t{cats}\t{i / 10}")
    (root / "tiny" / "tiny.item").write_text("\n".join(lines) + "\n")


@pytest.fixture
def attributed(tmp_path, tiny_config):
    root = tmp_path / "data"
    root.mkdir()
    write_multimodal_tiny(root, n_items=25)
    _write_item_file(root, 25)
    return {**tiny_config, "data_path": str(root), "hidden_size": 16, "mrl_hidden_sizes": SIZES, "n_layers": 1,
            "feature_files": {"text": "tiny.text.npy"}, "attributes": ["brand", "cats"],
            "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "brand", "cats", "weight"]}}


def test_attribute_vector_is_each_fields_token_or_token_mean():
    ids = [torch.tensor([[0], [1], [2], [0]]), torch.tensor([[0, 0, 0], [1, 2, 0], [3, 3, 1], [0, 0, 0]])]
    layer = ItemAttributeEmbedding(ids, [3, 4], dim=2)
    brand, cats = (table.weight.detach() for table in layer.tables)
    expected = torch.stack([
        torch.cat([torch.zeros(2), torch.zeros(2)]),
        torch.cat([brand[1], (cats[1] + cats[2]) / 2]),
        torch.cat([brand[2], (2 * cats[3] + cats[1]) / 3]),
        torch.zeros(4),
    ])
    torch.testing.assert_close(layer(), expected)
    torch.testing.assert_close(layer(torch.tensor([[2, 1]])), expected[[2, 1]].unsqueeze(0))
    assert not brand[0].any() and not cats[0].any()  # padding rows


@pytest.mark.parametrize("modalities", [["text", "attributes"], ["attributes", "id"]])
def test_export_of_a_model_with_attributes_equals_the_slice(attributed, modalities, tmp_path):
    trained = run("fMRLRec", "tiny", config_dict={**attributed, "modalities": modalities})
    state = torch.load(trained["checkpoint"], weights_only=True)["state_dict"]
    assert state["item_encoder.attributes.tables.0.weight"].shape == (5, 16)  # 4 brands + padding, width D
    assert state["item_encoder.attributes.tables.1.weight"].shape == (6, 16)  # 5 categories + padding
    inputs = 16 * 2 + (12 if "text" in modalities else 0)
    assert state["item_encoder.projection.weight"].shape == (16, inputs)
    for size in SIZES:
        out = tmp_path / f"fMRLRec-{size}.pth"
        export(trained["checkpoint"], size, str(out))
        exported = torch.load(out, weights_only=True)["state_dict"]
        assert exported["item_encoder.projection.weight"].shape == (size, inputs)
        for i in range(2):  # the attribute tables are inputs of the projection: kept whole
            name = f"item_encoder.attributes.tables.{i}.weight"
            torch.testing.assert_close(exported[name], state[name])
        torch.testing.assert_close(exported["item_encoder.projection.weight"], state["item_encoder.projection.weight"][:size])
        measured = evaluate(str(out), dataset="tiny")["test_result"]
        for metric, value in trained["sizes"][str(size)].items():
            assert measured[metric] == pytest.approx(value, abs=1e-6), (size, metric)


def test_a_checkpoint_refuses_changed_attributes(attributed):
    trained = run("fMRLRec", "tiny", config_dict={**attributed, "modalities": ["attributes"], "epochs": 1})
    _write_item_file(Path(attributed["data_path"]), 25, shift=1)
    with pytest.raises(PluginError, match="was trained with other attributes features of 'tiny'"):
        evaluate(trained["checkpoint"], dataset="tiny")


@pytest.mark.parametrize("change, message", [
    ({"attributes": ["brand", "colour"]}, "attributes field 'colour' is not an item field of dataset 'tiny': it must be a "
                                          "column of tiny.item loaded by load_col: {item: [item_id, colour, ...]}"),
    ({"attributes": ["weight"]}, "attributes field 'weight' is a float field; attributes are token or token_seq fields"),
    ({"attributes": None}, "modality 'attributes' needs attributes: a list of item fields (e.g. [brand, categories]), got None"),
    ({"attribute_embedding_size": 0}, "attribute_embedding_size must be a positive integer, got 0"),
])
def test_bad_attribute_settings_are_one_error_line(attributed, change, message):
    with pytest.raises(PluginError) as error:
        run("fMRLRec", "tiny", config_dict={**attributed, "modalities": ["attributes"], **change})
    assert str(error.value) == message


def test_compare_ablation_accepts_attributes():
    assert parse_modality_sets("text,attributes;attributes,id") == [["text", "attributes"], ["attributes", "id"]]


@pytest.mark.parametrize("name, n_ids, mean", [("beauty", 637, 3.72), ("sports", 2277, 6.02)])
def test_shipped_s3rec_attributes_cover_every_embedded_item(name, n_ids, mean):
    table = read_attributes_table(attributes_table_path(TABLES_DIR, name))
    inter, _ = read_tables(TABLES_DIR, name)
    assert sorted(table["item_id"]) == sorted(inter["item_id"].unique())
    counts = table["brand_categories"].str.split().map(len)
    assert len(set(" ".join(table["brand_categories"]).split())) == n_ids  # SOURCES.md: S3Rec's counts
    assert counts.min() >= 1 and round(counts.mean(), 2) == mean


def test_embedded_sports_runs_attributes_offline(tmp_path):
    assert ensure_embedded_dataset("sports", str(tmp_path))
    folder = tmp_path / "sports"
    item_file = folder / "sports.item"
    stamp = os.stat(item_file).st_mtime_ns
    assert not ensure_embedded_dataset("sports", str(tmp_path))  # complete: nothing rewritten
    assert os.stat(item_file).st_mtime_ns == stamp
    frame = pd.read_csv(item_file, sep="\t", dtype=str)
    assert list(frame.columns) == ["item_id:token", "brand_categories:token_seq"] and len(frame) == 18357
    from recbole_fmrl.config import Config
    from recbole_fmrl.data.loading import create_dataset

    dataset = create_dataset(Config("fMRLRec", "sports", config_dict={"data_path": str(tmp_path), "use_gpu": False}))
    ids = dataset.item_attributes("brand_categories")
    assert ids.shape == (18358, 37) and dataset.num("brand_categories") == 2278
    assert not ids[0].any() and np.isclose((ids[1:] > 0).sum(1).float().mean().item(), 6.02, atol=0.005)
    asin = dataset.field2id_token["item_id"][1]
    expected = frame.loc[frame["item_id:token"] == asin, "brand_categories:token_seq"].item().split()
    assert [dataset.field2id_token["brand_categories"][i] for i in ids[1] if i] == expected
    (folder / "sports.item").unlink()  # an interrupted or lost step is done again
    assert ensure_embedded_dataset("sports", str(tmp_path)) and item_file.exists()
    assert atomic_files.read_done(str(folder), "sports", "attributes") is not None
