"""UniSRec and VQRec (the paper's text-based baselines, trained from scratch) on a tiny dataset with
a text feature file, and VQRec's cached OPQ codes."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbole_fmrl.checkpoint import read_checkpoint
from recbole_fmrl.config import Config
from recbole_fmrl.data import quantization
from recbole_fmrl.data.loading import create_dataset
from recbole_fmrl.experiments.reports import run_label
from recbole_fmrl.errors import ConfigError, main_guarded
from recbole_fmrl.model import UniSRec, VQRec
from recbole_fmrl.model.unisrec import MoEAdaptor
from recbole_fmrl.runner import run

from conftest import write_multimodal_tiny

TINY = {"hidden_size": 16, "inner_size": 32, "MAX_ITEM_LIST_LENGTH": 10, "code_dim": 4, "code_cap": 4}
SETTINGS = {  # label: (model class, overrides)
    "UniSRec inductive": (UniSRec, {"train_stage": "inductive_ft"}),
    "UniSRec transductive": (UniSRec, {"train_stage": "transductive_ft"}),
    "VQRec": (VQRec, {}),
}


@pytest.fixture
def data_path(tmp_path, monkeypatch):
    """Dataset ``tiny``: 30 users over 20 items with a 12-d text feature file."""
    monkeypatch.chdir(tmp_path)
    return write_multimodal_tiny(tmp_path, 20)


def config_for(model_class, data_path, **overrides):
    return Config(model_class.__name__, "tiny", config_dict={
        "data_path": data_path, "use_gpu": False, "feature_files": {"text": "tiny.text.npy"}, **TINY, **overrides})


def build(model_class, data_path, **overrides):
    config = config_for(model_class, data_path, **overrides)
    torch.manual_seed(0)
    dataset = create_dataset(config)
    return model_class(config, dataset), dataset


def training_batch(dataset, size=32):
    train, _, _ = dataset.build()
    return train.inter_feat[:size]


def copy_text_row(data_path, source_item, target_item):
    """Give ``target_item`` the text vector of ``source_item`` in tiny.text.npy."""
    folder = os.path.join(data_path, "tiny")
    items = open(os.path.join(folder, "tiny.items")).read().split()[1:]
    matrix = np.load(os.path.join(folder, "tiny.text.npy"))
    matrix[items.index(target_item)] = matrix[items.index(source_item)]
    np.save(os.path.join(folder, "tiny.text.npy"), matrix)


def test_yaml_defaults_are_the_authors(data_path):
    shared = ("n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob", "temperature", "train_batch_size")
    for model, expected in (("UniSRec", {"train_stage": "transductive_ft", "n_exps": 8, "adaptor_dropout_prob": 0.2}),
                            ("VQRec", {"code_dim": 32, "code_cap": 256})):
        config = Config(model, "tiny", config_dict={"data_path": data_path, "use_gpu": False})
        assert tuple(config[k] for k in shared) == (2, 2, 300, 256, 0.5, 0.07, 2048)
        assert {k: config[k] for k in expected} == expected and config["loss_type"] == "CE"


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_sequence_mode_loss_is_the_mean_of_the_prefix_losses_of_the_same_pairs(data_path, setting):
    """``train_mode: sequence``: under the causal mask position t of a user's row is the prefix of
    length t + 1, so one pass over the rows gives the mean loss of RecBole's prefix rows."""
    model_class, overrides = SETTINGS[setting]
    model, dataset = build(model_class, data_path, train_mode="sequence", MAX_ITEM_LIST_LENGTH=20, **overrides)
    sequence = dataset.build()[0].inter_feat
    prefix = build(model_class, data_path, MAX_ITEM_LIST_LENGTH=20, **overrides)[1].build()[0].inter_feat
    assert len(sequence) == 30 < len(prefix)  # one row per user against one row per target
    model.eval()
    with torch.no_grad():
        sequence_loss = model.calculate_loss(sequence)
        model.train_mode = "prefix"
        per_pair = torch.stack([model.calculate_loss(prefix[i : i + 1]) for i in range(len(prefix))])
    torch.testing.assert_close(sequence_loss, per_pair.mean(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_each_model_trains_and_scores_the_catalogue_by_temperature_cosine(data_path, setting):
    model_class, overrides = SETTINGS[setting]
    model, dataset = build(model_class, data_path, **overrides)
    batch = training_batch(dataset)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.6 * losses[0]

    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        assert scores.shape == (len(batch), dataset.item_num)
        assert scores.abs().max() <= 1 + 1e-5  # cosines
        # the training loss is the CE of cosine / temperature over the catalogue
        expected = F.cross_entropy(scores / model.temperature, batch[model.POS_ITEM_ID])
        assert model.calculate_loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
        batch.update(type(batch)({model.ITEM_ID: batch[model.POS_ITEM_ID]}))
        picked = scores.gather(1, batch[model.POS_ITEM_ID][:, None]).squeeze(1)
        torch.testing.assert_close(model.predict(batch), picked)


def test_unisrec_inductive_reads_text_only_and_transductive_adds_an_id_table(data_path):
    copy_text_row(data_path, "i1", "i2")  # two items with the same text
    inductive, dataset = build(UniSRec, data_path, train_stage="inductive_ft")
    transductive, _ = build(UniSRec, data_path, train_stage="transductive_ft")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(transductive) - count(inductive) == dataset.item_num * 16
    assert run_label({"model": "UniSRec", **inductive.run_record()}) == "UniSRec (text), no pre-training"
    assert run_label({"model": "UniSRec", **transductive.run_record()}) == "UniSRec (text + ID), no pre-training"
    first, second = (dataset.token2id(dataset.iid_field, item) for item in ("i1", "i2"))
    batch = training_batch(dataset)
    for model, same in ((inductive, True), (transductive, False)):
        model.eval()
        with torch.no_grad():
            scores = model.full_sort_predict(batch)
        assert torch.equal(scores[:, first], scores[:, second]) is same
    with pytest.raises(ConfigError, match=r"train_stage must be one of \['inductive_ft', 'transductive_ft'\]") as error:
        build(UniSRec, data_path, train_stage="pretrain")
    assert "\n" not in str(error.value)


def test_moe_adaptor_is_a_gated_sum_of_whitened_experts():
    torch.manual_seed(0)
    adaptor = MoEAdaptor(12, 6, n_experts=3, dropout=0.2, initializer_range=0.02)
    with torch.no_grad():
        for parameter in (adaptor.bias, adaptor.gate, adaptor.noise):
            parameter.normal_()
    x = torch.randn(5, 12)
    adaptor.eval()  # no gate noise, no dropout
    gates = torch.softmax(x @ adaptor.gate, dim=-1)
    expected = sum(gates[:, k, None] * ((x - adaptor.bias[k]) @ adaptor.weight[k]) for k in range(3))
    torch.testing.assert_close(adaptor(x), expected)
    adaptor.train()
    adaptor.dropout.p = 0.0
    assert not torch.allclose(adaptor(x), expected)  # training draws gate noise


def test_vqrec_item_is_the_mean_of_its_code_embeddings(data_path):
    copy_text_row(data_path, "i1", "i2")
    model, dataset = build(VQRec, data_path)
    rows = model.item_code_rows
    assert rows.shape == (dataset.item_num, 4) and rows[0].eq(0).all()  # the padding item has no code
    low = 1 + torch.arange(4) * 4
    assert ((rows[1:] >= low) & (rows[1:] < low + 4)).all()  # codebook b owns rows 1+4b … 4+4b
    first, second = (dataset.token2id(dataset.iid_field, item) for item in ("i1", "i2"))
    assert torch.equal(rows[first], rows[second])  # same text, same codes
    assert len({tuple(r) for r in rows[1:].tolist()}) > 1
    table = model.item_table()
    torch.testing.assert_close(table[3], model.code_embedding.weight[rows[3]].mean(dim=0))
    assert model.code_embedding.weight[0].eq(0).all() and run_label({"model": "VQRec", **model.run_record()}) == "VQRec, no pre-training"


def test_vqrec_codes_are_deterministic_for_a_seed_and_reused_from_the_cache(data_path, tmp_path, monkeypatch):
    config = config_for(VQRec, data_path, seed=7)
    dataset = create_dataset(config)
    codes = quantization.item_codes(dataset, "text", 4, 4, seed=7)
    path = tmp_path / "tiny" / "tiny.text.opq4x4.seed7.codes.npy"
    manifest = json.loads((tmp_path / "tiny" / "tiny.text.opq4x4.seed7.codes.npy.json").read_text())
    assert (manifest["source"], manifest["n_items"], manifest["n_codebooks"], manifest["code_cap"], manifest["seed"]) == (
        "tiny.text.npy", dataset.item_num - 1, 4, 4, 7)
    assert torch.equal(torch.from_numpy(np.load(path)).long(), codes)
    vectors = dataset.item_features("text")[1:].numpy()
    assert np.array_equal(quantization.opq_codes(vectors, 4, 4, seed=7), codes.numpy())  # same seed, same codes

    calls = []

    def counted(vectors, *settings):
        calls.append(settings)
        return np.zeros((len(vectors), 4), dtype=np.int64)

    monkeypatch.setattr(quantization, "opq_codes", counted)
    written = path.stat().st_mtime_ns
    assert torch.equal(quantization.item_codes(dataset, "text", 4, 4, seed=7), codes)
    model = VQRec(config, dataset)  # a second run reads the cache: nothing is recomputed
    assert calls == [] and path.stat().st_mtime_ns == written
    assert torch.equal(model.item_code_rows[1:], codes + 1 + torch.arange(4) * 4)

    np.save(tmp_path / "tiny" / "tiny.text.npy", np.load(tmp_path / "tiny" / "tiny.text.npy") * 2)
    fresh = create_dataset(config)  # the feature file changed: its codes are computed again
    quantization.item_codes(fresh, "text", 4, 4, seed=7)
    assert calls == [(4, 4, 7)] and path.stat().st_mtime_ns != written


@pytest.mark.parametrize("overrides, message", [
    ({"code_cap": 3}, "code_cap (codes per codebook) must be a power of two"),
    ({"code_dim": 5}, "code_dim (number of codebooks) must divide the feature width 12"),
    ({"code_cap": 32}, "code_cap 32 needs at least as many items"),
    ({"hidden_size": 15}, "hidden_size must be a positive multiple of n_heads, got 15 and 2"),
    ({"temperature": "warm"}, "temperature must be a positive number, got 'warm'"),
])
def test_bad_settings_raise_one_line(data_path, overrides, message):
    with pytest.raises(ConfigError) as error:
        build(VQRec, data_path, **overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("model", ["UniSRec", "VQRec"])
@pytest.mark.parametrize("case", ["mismatched_rows", "no_feature_file"])
def test_bad_feature_file_gives_the_one_line_error(data_path, capsys, model, case):
    folder = os.path.join(data_path, "tiny")
    files = {"text": "tiny.text.npy"}
    if case == "mismatched_rows":  # the feature rows name an item the dataset does not have
        items = open(os.path.join(folder, "tiny.items")).read().replace("i1\n", "i999\n")
        open(os.path.join(folder, "tiny.items"), "w").write(items)
        expected = f"error: feature file {os.path.join(folder, 'tiny.text.npy')} does not match the items of dataset 'tiny'"
    else:
        files = {"image": "tiny.image.npy"}
        expected = "error: no feature file for modality 'text' of dataset 'tiny'"
    overrides = {"data_path": data_path, "use_gpu": False, "feature_files": files, "epochs": 1, **TINY}
    with pytest.raises(SystemExit) as exit_info:
        main_guarded(lambda: run(model, "tiny", config_dict=overrides, saved=False))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(expected) and "\n" not in err


@pytest.mark.parametrize("model, label", [("UniSRec", "UniSRec (text + ID), no pre-training"), ("VQRec", "VQRec, no pre-training")])
def test_run_trains_tests_and_saves_a_checkpoint_without_the_frozen_inputs(data_path, tmp_path, model, label):
    result = run(model, "tiny", config_dict={
        "data_path": data_path, "use_gpu": False, "feature_files": {"text": "tiny.text.npy"}, "epochs": 1,
        "show_progress": False, "checkpoint_dir": str(tmp_path / "saved"), **TINY})
    assert run_label(result) == label and result["epochs_run"] == 1
    assert all(np.isfinite(v) for v in result["test_result"].values())
    state = read_checkpoint(result["checkpoint"])["state_dict"]
    assert not {"text", "item_code_rows"} & set(state)  # frozen vectors and codes are rebuilt, not saved
    assert ("code_embedding.weight" in state) is (model == "VQRec")
