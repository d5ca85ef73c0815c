"""fMRLRec, LRURec and FMLPRec on a tiny RecBole dataset with multimodal feature files."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbole_fmrl.config import Config
from recbole_fmrl.data.loading import create_dataset
from recbole_fmrl.errors import ConfigError, FeatureFileError
from recbole_fmrl.model import FMLPRec, LRURec, fMRLRec
from recbole_fmrl.model.layers import doubling_sizes, nested_cross_entropy

from conftest import perturb_outside_slice, write_multimodal_tiny

SIZES = [4, 8, 16]
MAX_LEN = 10
TINY = {  # overrides that make every model tiny and deterministic enough to compare
    "hidden_size": 16,
    "mrl_hidden_sizes": SIZES,
    "n_layers": 2,
    "ffn_expansion": 2,
    "inner_size": 32,
    "MAX_ITEM_LIST_LENGTH": MAX_LEN,
}


@pytest.fixture
def data_path(tmp_path, monkeypatch):
    """Dataset ``tiny``: 30 users over 20 items, with text (dim 12) and image (dim 10) features."""
    monkeypatch.chdir(tmp_path)
    return write_multimodal_tiny(tmp_path, 20)


def build(model_name, data_path, **overrides):
    config = Config(
        model_name,
        "tiny",
        config_dict={
            "data_path": data_path,
            "use_gpu": False,
            "feature_files": {"text": "tiny.text.npy", "image": "tiny.image.npy"},
            **TINY,
            **overrides,
        },
    )
    torch.manual_seed(0)
    dataset = create_dataset(config)
    model_class = {"fMRLRec": fMRLRec, "LRURec": LRURec, "FMLPRec": FMLPRec}[model_name]
    return model_class(config, dataset), config, dataset


def training_batch(dataset, size=32):
    train, _, _ = dataset.build()
    return train.inter_feat[:size]


def train_steps(model, batch, steps, lr=1e-2):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_yaml_defaults_are_the_papers(data_path):
    config = Config("fMRLRec", "tiny", config_dict={"data_path": data_path, "use_gpu": False})
    assert config["hidden_size"] == 1024 and config["mrl_hidden_sizes"] is None  # the model doubles 8..D
    assert doubling_sizes(1024) == [8, 16, 32, 64, 128, 256, 512, 1024]
    assert (config["n_layers"], config["r_min"], config["r_max"], config["loss_type"]) == (2, 0.0, 0.1, "CE")
    assert (config["learner"], config["weight_decay"], config["hidden_dropout_prob"]) == ("adamw", 0.01, 0.5)
    assert config["modalities"] == ["text", "image"] and config["eval_size"] is None
    assert config["train_neg_sample_args"]["distribution"] == "none"  # RecBole's form of ~
    assert (config["ffn_expansion"], config["train_mode"], config["warmup_steps"]) == (1, "sequence", 100)
    lru = Config("LRURec", "tiny", config_dict={"data_path": data_path, "use_gpu": False})
    assert (lru["hidden_size"], lru["learner"], lru["r_min"], lru["r_max"]) == (64, "adamw", 0.8, 0.99)
    assert (lru["hidden_dropout_prob"], lru["attn_dropout_prob"], lru["train_mode"]) == (0.2, 0.2, "sequence")
    assert (lru["adam_epsilon"], lru["clip_grad_norm"], lru["lr_schedule"]) == (1e-9, {"max_norm": 5.0}, "constant")
    fmlp = Config("FMLPRec", "tiny", config_dict={"data_path": data_path, "use_gpu": False})
    assert (fmlp["hidden_size"], fmlp["hidden_dropout_prob"], fmlp["hidden_act"]) == (64, 0.5, "gelu")


@pytest.mark.parametrize("index", range(len(SIZES)))
def test_fmrlrec_first_m_dims_ignore_everything_outside_the_size_m_slice(data_path, index):
    model, _, dataset = build("fMRLRec", data_path)
    model.eval()
    item_seq = training_batch(dataset)[model.ITEM_SEQ]
    perturbed = copy.deepcopy(model)
    perturb_outside_slice(perturbed, index)
    m = SIZES[index]
    assert torch.equal(perturbed.encode(item_seq)[..., :m], model.encode(item_seq)[..., :m])
    if m < SIZES[-1]:
        assert not torch.allclose(perturbed.encode(item_seq), model.encode(item_seq))


def test_fmrlrec_recurrent_steps_equal_parallel_encoding(data_path):
    model, _, dataset = build("fMRLRec", data_path)
    model.eval()
    item_seq = training_batch(dataset)[model.ITEM_SEQ]
    hidden, state = [], model.init_state(item_seq.size(0))
    for t in range(MAX_LEN):
        output, state = model.step(item_seq[:, t], state)
        hidden.append(output)
    torch.testing.assert_close(torch.stack(hidden, 1), model.encode(item_seq), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rows", [5, 70])  # one chunk, and several chunks with a ragged last one
@pytest.mark.parametrize("weights", [None, [4.0, 2.0, 0.5]])
def test_nested_cross_entropy_and_its_gradient_equal_the_per_size_sum(rows, weights):
    """Eq. 14 computed naively (one score matrix per size) against the fused, chunked loss."""
    hidden = torch.randn(rows, 16, requires_grad=True)
    table = torch.randn(21, 16, requires_grad=True)
    targets = torch.randint(0, 21, (rows,))
    c = weights or [1.0] * len(SIZES)
    naive = sum(w * F.cross_entropy(hidden[:, :m] @ table[:, :m].T, targets) for w, m in zip(c, SIZES))
    fused = nested_cross_entropy(hidden, table, targets, SIZES, weights)
    torch.testing.assert_close(fused, naive, atol=1e-5, rtol=1e-5)
    for got, expected in zip(torch.autograd.grad(3 * fused, (hidden, table)), torch.autograd.grad(3 * naive, (hidden, table))):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_fmrlrec_loss_is_sum_of_per_size_cross_entropy(data_path):
    model, _, dataset = build("fMRLRec", data_path, train_mode="prefix")
    model.eval()  # no dropout: forward is deterministic
    batch = training_batch(dataset)
    seq_output = model.forward(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
    table = model.item_encoder()
    expected = sum(F.cross_entropy(seq_output[:, :m] @ table[:, :m].T, batch[model.POS_ITEM_ID]) for m in SIZES)
    torch.testing.assert_close(model.calculate_loss(batch), expected, atol=1e-5, rtol=1e-5)


def test_item_table_is_cached_only_while_nothing_can_change_it(data_path):
    model, _, dataset = build("fMRLRec", data_path)
    model.eval()
    with torch.no_grad():
        first = model.item_table()
        assert model.item_table() is first  # evaluation batches share one projection of the catalogue
        model.item_encoder.projection.weight.add_(0.5)  # in place, as an optimizer step or load_state_dict
        changed = model.item_table()
    assert changed is not first and not torch.equal(changed, first)
    torch.testing.assert_close(changed, model.item_encoder().detach())
    assert model.item_table().requires_grad  # gradients recorded: computed afresh, never the cache
    model.train()
    with torch.no_grad():
        assert model.item_table() is not model.item_table()


@pytest.mark.parametrize("modalities", [["text", "image"], ["id"], ["text", "id"]])
def test_sliced_model_scores_exactly_like_big_model_at_each_size(data_path, modalities):
    model, config, dataset = build("fMRLRec", data_path, modalities=modalities)
    batch = training_batch(dataset)
    train_steps(model, batch, steps=3)
    model.eval()
    overrides = {**TINY, "modalities": modalities}
    previous_params = 0
    for m in SIZES:
        model.eval_size = m
        small_config = Config(
            "fMRLRec", "tiny", config_dict={**config.overrides(), **overrides, **model.sliced_config(m)}
        )
        small = fMRLRec(small_config, dataset)
        small.load_state_dict(model.sliced_state_dict(m))  # strict: same keys and shapes
        small.eval()
        assert small.hidden_size == m and small.mrl_hidden_sizes == SIZES[: SIZES.index(m) + 1]
        scores = model.full_sort_predict(batch)
        torch.testing.assert_close(small.full_sort_predict(batch), scores, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(small.predict(batch), model.predict(batch), atol=1e-5, rtol=1e-5)
        params = sum(p.numel() for p in small.parameters())
        assert params > previous_params
        previous_params = params
    assert previous_params == sum(p.numel() for p in model.parameters())


def test_eval_size_defaults_to_hidden_size_and_is_checked(data_path):
    model, _, _ = build("fMRLRec", data_path, eval_size=None)
    assert model.eval_size == 16
    model.eval_size = 4
    assert model.eval_size == 4
    with pytest.raises(ConfigError, match="eval_size"):
        model.eval_size = 12
    default_sizes, _, _ = build("fMRLRec", data_path, hidden_size=32, mrl_hidden_sizes=None)
    assert default_sizes.mrl_hidden_sizes == [8, 16, 32]
    smallest, _, _ = build("fMRLRec", data_path, hidden_size=1, mrl_hidden_sizes=None)  # 1 is a positive integer
    assert smallest.mrl_hidden_sizes == [1] and smallest.item_table().shape == (smallest.n_items, 1)


SIZES_RULE = "mrl_hidden_sizes must be a strictly increasing list of positive integers ending at hidden_size=16"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mrl_hidden_sizes": [8, 4, 16]}, f"{SIZES_RULE} (nested), got [8, 4, 16]"),
        ({"mrl_hidden_sizes": [4, 8]}, f"{SIZES_RULE}, got [4, 8] (last is 8)"),
        ({"mrl_hidden_sizes": [4, 8, 16, 32]}, f"{SIZES_RULE}, got [4, 8, 16, 32] (last is 32)"),
        ({"eval_size": 12}, "eval_size 12 is not one of the model's sizes [4, 8, 16]"),
        ({"modalities": ["text", "audio"]}, "unknown modalities ['audio']; choose among ['text', 'image', 'attributes', 'id']"),
        ({"modalities": ["text", "text"]}, "modalities has duplicates: ['text', 'text']"),
        ({"modalities": []}, "modalities must be a non-empty list among ['text', 'image', 'attributes', 'id'], got []"),
        ({"hidden_size": 0}, "hidden_size must be a positive integer, got 0"),
        ({"hidden_size": True}, "hidden_size must be a positive integer, got True"),
        ({"n_layers": 0}, "n_layers must be a positive integer, got 0"),
        ({"n_layers": True}, "n_layers must be a positive integer, got True"),
        ({"ffn_expansion": 0}, "ffn_expansion must be a positive integer, got 0"),
        ({"mrl_loss_weights": [1.0, 2.0]},
         "mrl_loss_weights must be one positive number per size of mrl_hidden_sizes [4, 8, 16], got [1.0, 2.0]"),
        ({"mrl_loss_weights": [1.0, 0.0, 1.0]},
         "mrl_loss_weights must be one positive number per size of mrl_hidden_sizes [4, 8, 16], got [1.0, 0.0, 1.0]"),
        ({"mrl_lr_exponent": -1}, "mrl_lr_exponent must be a number >= 0, got -1"),
        ({"mrl_lr_exponent": "fast"}, "mrl_lr_exponent must be a number >= 0, got 'fast'"),
        ({"loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
         "fMRLRec is trained with the CE loss (eq. 14), got loss_type='BPR'"),
    ],
)
def test_bad_fmrlrec_config_raises_one_line_config_error(data_path, overrides, message):
    with pytest.raises(ConfigError) as error:
        build("fMRLRec", data_path, **overrides)
    assert str(error.value) == message


def test_loss_weights_weigh_each_size_and_the_export_keeps_its_share(data_path):
    model, _, dataset = build("fMRLRec", data_path, mrl_loss_weights=[3, 1, 0.5])
    model.eval()
    batch = training_batch(dataset)
    outputs, targets, _ = model.training_pairs(batch, item_table=model.item_encoder())
    table = model.item_encoder()
    expected = sum(w * F.cross_entropy(outputs[:, :m] @ table[:, :m].T, targets) for w, m in zip([3, 1, 0.5], SIZES))
    torch.testing.assert_close(model.calculate_loss(batch), expected, atol=1e-5, rtol=1e-5)
    assert model.sliced_config(8)["mrl_loss_weights"] == [3.0, 1.0]


def test_missing_feature_file_is_not_swallowed(data_path):
    with pytest.raises(FeatureFileError, match="image"):
        build("fMRLRec", data_path, feature_files={"text": "tiny.text.npy"})


def test_lrurec_is_the_published_post_norm_model(data_path):
    """LRURec by hand (Yue et al. 2024): embedding -> LayerNorm, per block LN(x + LRU(x)) then
    LN(h + W2 GELU(W1 h)), scores h · Eᵀ + item bias (the LRU itself is checked in test_layers)."""
    model, _, dataset = build("LRURec", data_path, hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    model.eval()
    with torch.no_grad():
        model.item_bias.normal_()
    batch = training_batch(dataset)
    item_seq, lengths = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    x = F.layer_norm(model.item_embedding.weight[item_seq], (16,), model.embedding_norm.weight, model.embedding_norm.bias)
    for block in model.encoder.blocks:
        assert block.lru.params_log.shape == (3, 32)  # 2D complex state units, as the authors' code
        lru_norm, ffn_norm = block.lru_norm, block.ffn_norm
        h = F.layer_norm(x + block.lru(x, item_seq != 0), (16,), lru_norm.weight, lru_norm.bias)
        w1, w2 = block.ffn[0], block.ffn[3]
        inner = F.linear(F.gelu(F.linear(h, w1.weight, w1.bias)), w2.weight, w2.bias)
        x = F.layer_norm(h + inner, (16,), ffn_norm.weight, ffn_norm.bias)
    last = x[torch.arange(len(batch)), lengths - 1]
    expected = last @ model.item_embedding.weight.T + model.item_bias
    torch.testing.assert_close(model.full_sort_predict(batch), expected, atol=1e-5, rtol=1e-5)
    radius = torch.exp(-model.encoder.blocks[0].lru.params_log[0].exp())
    assert 0.8 <= radius.min() and radius.max() <= 0.99  # the code's ring r in [0.8, 0.99]


def test_fmlprec_left_aligns_right_padded_sequences():
    item_seq = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [9, 0, 0, 0, 0]])
    aligned = FMLPRec.left_align(item_seq, torch.tensor([3, 5, 1]))
    assert aligned.tolist() == [[0, 0, 5, 6, 7], [1, 2, 3, 4, 5], [0, 0, 0, 0, 9]]


@pytest.mark.parametrize("model_name", ["fMRLRec", "LRURec", "FMLPRec"])
def test_predict_agrees_with_full_sort_predict(data_path, model_name):
    model, _, dataset = build(model_name, data_path)
    model.eval()
    batch = training_batch(dataset)
    full = model.full_sort_predict(batch)
    assert full.shape == (len(batch), dataset.item_num)
    expected = full[torch.arange(len(batch)), batch[model.ITEM_ID]]
    torch.testing.assert_close(model.predict(batch), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_name,train_mode", [
    ("fMRLRec", "sequence"), ("fMRLRec", "prefix"), ("LRURec", "sequence"), ("LRURec", "prefix"), ("FMLPRec", "prefix"),
])
def test_loss_is_finite_and_decreases_on_a_tiny_batch(data_path, model_name, train_mode):
    model, _, dataset = build(model_name, data_path, hidden_dropout_prob=0.0, attn_dropout_prob=0.0, train_mode=train_mode)
    losses = train_steps(model, training_batch(dataset), steps=60)
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
