"""Independent references: each model's maths written out by hand in numpy (float64) from its
parameters, on tiny tensors, without calling the code it checks; and parameter counts in closed form."""

import math

import numpy as np
import pytest
import torch

from recbole_fmrl.config import Config
from recbole_fmrl.data.loading import create_dataset
from recbole_fmrl.experiments import params as figure4
from recbole_fmrl.experiments import reports
from recbole_fmrl.model import FMLPRec, LRURec, fMRLRec
from recbole_fmrl.model.fmlprec import FilterLayer
from recbole_fmrl.model.layers import LRULayer

from conftest import write_multimodal_tiny

MAX_LEN = 7  # odd: the filter's spectrum has no Nyquist bin


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def params(module):
    """The module's state dict as float64 numpy arrays: the references read only these."""
    return {name: tensor.detach().double().numpy() for name, tensor in module.state_dict().items()}


def randomise_lru(layer_params, generator):
    """|λ| in [0.5, 0.95], any phase, and γ NOT tied to |λ| (so dropping γ shows): set in place."""
    nu_log, theta_log, gamma_log = layer_params
    radius = 0.5 + 0.45 * torch.rand(nu_log.shape, generator=generator)
    with torch.no_grad():
        nu_log.copy_(torch.log(-torch.log(radius)))
        theta_log.copy_(torch.log(2 * math.pi * torch.rand(nu_log.shape, generator=generator)))
        gamma_log.copy_(0.5 * torch.randn(nu_log.shape, generator=generator))


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


def nested_layer_norm(x, weight, bias, sizes, eps=1e-5):
    """One LayerNorm per block sizes[j-1]:sizes[j] (fMRLRec §3.2)."""
    edges = [0] + list(sizes)
    return np.concatenate(
        [layer_norm(x[..., a:b], weight[a:b], bias[a:b], eps) for a, b in zip(edges, edges[1:])], axis=-1
    )


def lru_by_hand(p, prefix, x, mask):
    """h_t = Λ h_{t-1} + γ ⊙ B x_t (B x_t read as N complex numbers re/im interleaved, zero at padding),
    Λ = exp(-e^ν + i e^θ), γ = e^{γ_log}; y_t = C [Re h_0, Im h_0, Re h_1, ...] + c.

    Returns the outputs [B, L, D] and the states [B, L, 2N] (interleaved re/im)."""
    nu_log, theta_log, gamma_log = p[prefix + "params_log"]
    decay = np.exp(-np.exp(nu_log)) * (np.cos(np.exp(theta_log)) + 1j * np.sin(np.exp(theta_log)))
    gamma = np.exp(gamma_log)
    w_in, b_in = p[prefix + "in_proj.weight"], p[prefix + "in_proj.bias"]
    w_out, b_out = p[prefix + "out_proj.weight"], p[prefix + "out_proj.bias"]
    batch, length, _ = x.shape
    outputs = np.zeros((batch, length, w_out.shape[0]))
    states = np.zeros((batch, length, w_in.shape[0]))
    for b in range(batch):
        hidden = np.zeros(len(gamma), dtype=complex)
        for t in range(length):
            driven = w_in @ x[b, t] + b_in if mask[b, t] else np.zeros(w_in.shape[0])
            hidden = decay * hidden + gamma * (driven[0::2] + 1j * driven[1::2])
            states[b, t, 0::2], states[b, t, 1::2] = hidden.real, hidden.imag
            outputs[b, t] = w_out @ states[b, t] + b_out
    return outputs, states


def right_padded(lengths, length, dim, generator):
    mask = np.arange(length)[None, :] < np.array(lengths)[:, None]
    x = torch.randn(len(lengths), length, dim, generator=generator, dtype=torch.float64).numpy() * mask[..., None]
    return x, mask


@pytest.mark.parametrize("sizes, state_sizes", [([4, 8], None), ([6], [12])], ids=["fMRLRec-nested", "LRURec-2D-state"])
def test_lru_layer_is_the_recurrence_written_out(sizes, state_sizes):
    generator = torch.Generator().manual_seed(1)
    layer = LRULayer(sizes, r_min=0.0, r_max=0.5, state_sizes=state_sizes).double()
    randomise_lru(layer.params_log, generator)
    x, mask = right_padded([9, 4, 1], 9, sizes[-1], generator)
    expected, states = lru_by_hand(params(layer), "", x, mask)

    parallel = layer(torch.from_numpy(x), torch.from_numpy(mask))
    np.testing.assert_allclose(parallel.detach().numpy(), expected, rtol=1e-9, atol=1e-10)
    state = torch.zeros(3, 2 * (state_sizes or sizes)[-1], dtype=torch.float64)
    for t in range(9):
        output, state = layer.step(torch.from_numpy(x[:, t]), state, torch.from_numpy(mask[:, t]))
        np.testing.assert_allclose(output.detach().numpy(), expected[:, t], rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(state.detach().numpy(), states[:, t], rtol=1e-9, atol=1e-10)


def filter_by_hand(p, prefix, x, eps):
    """FMLP-Rec's filter layer with explicit DFT sums: X_k = n^{-1/2} Σ_t x_t e^{-2πikt/n} for
    k = 0..⌊n/2⌋ (rfft, norm "ortho"), times the learned W_k, back through the Hermitian inverse
    y_t = n^{-1/2} Re Σ_{k=0}^{n-1} Y_k e^{2πikt/n} (Y_{n-k} = conj Y_k), then LayerNorm(y + x)."""
    n = x.shape[1]
    weight = p[prefix + "complex_weight"]
    weight = weight[..., 0] + 1j * weight[..., 1]  # [n//2 + 1, H]
    t, k = np.arange(n), np.arange(n // 2 + 1)
    spectrum = np.einsum("kt,bth->bkh", np.exp(-2j * np.pi * np.outer(k, t) / n), x) / np.sqrt(n) * weight
    full = np.concatenate([spectrum, np.conj(spectrum[:, 1 : n - n // 2][:, ::-1])], axis=1)  # all n bins
    filtered = np.einsum("tk,bkh->bth", np.exp(2j * np.pi * np.outer(t, np.arange(n)) / n), full).real / np.sqrt(n)
    return layer_norm(filtered + x, p[prefix + "LayerNorm.weight"], p[prefix + "LayerNorm.bias"], eps)


@pytest.mark.parametrize("n", [6, 7])
def test_fmlp_filter_is_the_orthonormal_dft_filter_with_its_residual(n):
    layer = FilterLayer(n, 5, hidden_dropout_prob=0.0, layer_norm_eps=1e-12).double()
    with torch.no_grad():
        layer.complex_weight.normal_()
        layer.LayerNorm.weight.normal_()
        layer.LayerNorm.bias.normal_()
    x = torch.randn(2, n, 5, dtype=torch.float64)
    expected = filter_by_hand(params(layer), "", x.numpy(), 1e-12)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-9, atol=1e-9)


def gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


@pytest.fixture
def data_path(tmp_path, monkeypatch):
    """Dataset ``tiny``: 30 users over 20 items, with text (dim 12) and image (dim 10) features."""
    monkeypatch.chdir(tmp_path)
    return write_multimodal_tiny(tmp_path, 20)


def build(model_class, data_path, **overrides):
    config = Config(model_class.__name__, "tiny", config_dict={
        "data_path": data_path, "use_gpu": False, "MAX_ITEM_LIST_LENGTH": MAX_LEN, "hidden_size": 8,
        "n_layers": 2, "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0,
        "feature_files": {"text": "tiny.text.npy", "image": "tiny.image.npy"}, **overrides})
    dataset = create_dataset(config)
    model = model_class(config, dataset).double().eval()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # no parameter left at a special value (unit norms, zero biases) that hides a term
        for name, tensor in model.named_parameters():
            if name.endswith("params_log"):
                randomise_lru(tensor, generator)
            else:
                mask = getattr(model.get_submodule(name.rpartition(".")[0]), "zero_mask", None)
                tensor.add_(0.3 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype))
                if mask is not None and name.endswith("weight"):
                    tensor.masked_fill_(mask, 0.0)
    return model, dataset


def history_batch():
    """Right-padded histories of 7, 3 and 1 items (RecBole's layout)."""
    item_seq = torch.tensor([[3, 9, 1, 4, 15, 2, 7], [5, 12, 8, 0, 0, 0, 0], [19, 0, 0, 0, 0, 0, 0]])
    return {"item_id_list": item_seq, "item_length": torch.tensor([7, 3, 1])}


def test_fmlprec_scores_by_hand(data_path):
    """Left-aligned history (last item at position L-1), item + position embedding, LayerNorm, then per
    layer the filter and LayerNorm(x + W2 GELU(W1 x)); scores = h_{L-1} · Eᵀ."""
    model, _ = build(FMLPRec, data_path, inner_size=12)
    p = params(model)
    batch = history_batch()
    eps = 1e-12
    rows = []
    for items, length in zip(batch["item_id_list"].tolist(), batch["item_length"].tolist()):
        rows.append([0] * (MAX_LEN - length) + items[:length])
    x = p["item_embedding.weight"][np.array(rows)] + p["position_embedding.weight"][None]
    x = layer_norm(x, p["LayerNorm.weight"], p["LayerNorm.bias"], eps)
    for block in range(2):
        x = filter_by_hand(p, f"layers.{2 * block}.", x, eps)
        f = f"layers.{2 * block + 1}."
        inner = gelu(x @ p[f + "dense_1.weight"].T + p[f + "dense_1.bias"]) @ p[f + "dense_2.weight"].T + p[f + "dense_2.bias"]
        x = layer_norm(x + inner, p[f + "LayerNorm.weight"], p[f + "LayerNorm.bias"], eps)
    expected = x[:, -1] @ p["item_embedding.weight"].T
    with torch.no_grad():
        np.testing.assert_allclose(model.full_sort_predict(batch).numpy(), expected, rtol=1e-8, atol=1e-8)


def test_lrurec_scores_by_hand(data_path):
    """LRURec (Yue et al. 2024), post-LN: x = LN(E[items]); per block h = LN(x + LRU(x)),
    x = LN(h + W2 GELU(W1 h)); scores = x_last · Eᵀ + item bias."""
    model, _ = build(LRURec, data_path)
    p = params(model)
    batch = history_batch()
    item_seq, lengths = batch["item_id_list"].numpy(), batch["item_length"].numpy()
    mask = item_seq != 0
    x = layer_norm(p["item_embedding.weight"][item_seq], p["embedding_norm.weight"], p["embedding_norm.bias"], 1e-5)
    for block in range(2):
        b = f"encoder.blocks.{block}."
        assert p[b + "lru.params_log"].shape == (3, 16)  # 2D complex state units
        lru, _ = lru_by_hand(p, b + "lru.", x, mask)
        h = layer_norm(x + lru, p[b + "lru_norm.weight"], p[b + "lru_norm.bias"], 1e-5)
        inner = gelu(h @ p[b + "ffn.0.weight"].T + p[b + "ffn.0.bias"]) @ p[b + "ffn.3.weight"].T + p[b + "ffn.3.bias"]
        x = layer_norm(h + inner, p[b + "ffn_norm.weight"], p[b + "ffn_norm.bias"], 1e-5)
    expected = x[np.arange(3), lengths - 1] @ p["item_embedding.weight"].T + p["item_bias"]
    with torch.no_grad():
        np.testing.assert_allclose(model.full_sort_predict(batch).numpy(), expected, rtol=1e-8, atol=1e-8)


def test_fmrlrec_scores_are_eq_13_with_every_block_by_hand(data_path):
    """fMRLRec: E = W concat(text, image) + b + ID embedding (eq. 7); per pre-LN block
    x = x + LRU(NLN(x)), x = x + down(silu(gate) ⊙ value) with (gate, value) = up(NLN(x)) interleaved;
    the size-m score is h_last[:m] · E[:, :m]ᵀ with no norm after the last block (eq. 13)."""
    sizes = [2, 4, 8]
    model, dataset = build(fMRLRec, data_path, mrl_hidden_sizes=sizes, ffn_expansion=2,
                           modalities=["text", "image", "id"])
    p = params(model)
    features = np.concatenate([dataset.item_features("text").double().numpy(),
                               dataset.item_features("image").double().numpy()], axis=1)
    table = features @ p["item_encoder.projection.weight"].T + p["item_encoder.projection.bias"]
    table = table + p["item_encoder.id_embedding.weight"]
    batch = history_batch()
    item_seq, lengths = batch["item_id_list"].numpy(), batch["item_length"].numpy()
    x = table[item_seq]
    for block in range(2):
        b = f"encoder.blocks.{block}."
        normed = nested_layer_norm(x, p[b + "lru_norm.weight"], p[b + "lru_norm.bias"], sizes)
        x = x + lru_by_hand(p, b + "lru.", normed, item_seq != 0)[0]
        up = nested_layer_norm(x, p[b + "ffn_norm.weight"], p[b + "ffn_norm.bias"], sizes) @ p[b + "ffn.up.weight"].T
        up = up + p[b + "ffn.up.bias"]
        gate, value = up[..., 0::2], up[..., 1::2]
        x = x + (gate / (1 + np.exp(-gate)) * value) @ p[b + "ffn.down.weight"].T + p[b + "ffn.down.bias"]
    last = x[np.arange(3), lengths - 1]
    for m in sizes:
        model.eval_size = m
        with torch.no_grad():
            np.testing.assert_allclose(model.full_sort_predict(batch).numpy(), last[:, :m] @ table[:, :m].T,
                                       rtol=1e-8, atol=1e-8)


def test_fmrlrec_item_table_on_ids_only_is_the_id_embedding(data_path):
    """Eq. 7 without features: E is the ID embedding itself (nothing added)."""
    model, _ = build(fMRLRec, data_path, mrl_hidden_sizes=[2, 4, 8], modalities=["id"])
    with torch.no_grad():
        np.testing.assert_array_equal(model.item_table().numpy(), params(model)["item_encoder.id_embedding.weight"])


def test_fmrlrec_loss_is_eq_14_the_sum_of_each_sizes_cross_entropy(data_path):
    """Prefix rows, default loss weights (the paper's: every c_m = 1): the loss is Σ_m CE of the size-m
    scores (checked by hand above) against the next item, written out with log-softmax."""
    sizes = [2, 4, 8]
    model, _ = build(fMRLRec, data_path, mrl_hidden_sizes=sizes, modalities=["text", "id"], train_mode="prefix")
    batch = {**history_batch(), "item_id": torch.tensor([6, 11, 2])}
    expected = 0.0
    for m in sizes:
        model.eval_size = m
        with torch.no_grad():
            scores = model.full_sort_predict(batch).numpy()
        log_softmax = scores - np.log(np.exp(scores - scores.max(1, keepdims=True)).sum(1, keepdims=True)) - scores.max(1, keepdims=True)
        expected += -log_softmax[np.arange(3), [6, 11, 2]].mean()
    with torch.no_grad():
        assert model.calculate_loss(batch).item() == pytest.approx(expected, rel=1e-9)


def fmrl_block_parameters(sizes, expansion):
    """Trainable entries of one fMRLRec block without the masked fMRL zeros, with S = Σ_j (m_j − m_{j−1}) m_j
    (the entries of a square nested weight) and D = sizes[-1]: two nested LayerNorms 4D, ν/θ/γ 3D,
    B: 2S + 2D, C: 2S + D, FFN up: 2kS + 2kD, down: kS + D."""
    edges = [0] + list(sizes)
    nested = sum((b - a) * b for a, b in zip(edges, edges[1:]))
    width = sizes[-1]
    return (4 + 3 * expansion) * nested + (11 + 2 * expansion) * width


def test_figure4_counts_are_the_closed_form_and_the_papers_rates():
    """Beauty, the paper's encoders (text 1024 + image 1152 wide), 12,101 items, 2 blocks, k = 4."""
    rows = figure4.parameter_rows("beauty", full_sizes=(128, 256, 512), item_num=12101,
                                  feature_dims={"text": 1024, "image": 1152},
                                  config_dict={"modalities": ["text", "image"], "n_layers": 2, "ffn_expansion": 4})
    projection = lambda d: 2176 * d + d  # noqa: E731  (item projection, eq. 7)
    for row in rows:
        sizes = [int(s) for s in row["sizes"].split()]
        series = projection(sizes[-1]) + 2 * fmrl_block_parameters(sizes, 4)
        independent = sum(projection(m) + 2 * fmrl_block_parameters(sizes[: i + 1], 4) for i, m in enumerate(sizes))
        assert (row["series"], row["independent"]) == (series, independent)
        dense_encoder = lambda d: 2 * ((4 + 3 * 4) * d * d + (11 + 2 * 4) * d)  # noqa: E731
        assert row["series_encoder_dense"] == dense_encoder(sizes[-1])
        assert row["independent_encoder_dense"] == sum(dense_encoder(m) for m in sizes)
    assert [row["series"] for row in rows] == [807_808, 2_139_904, 6_901_248]
    assert [round(100 * row["saving_rate"], 2) for row in rows] == [0.0, 27.40, 29.93]
    assert [round(100 * row["paper_saving"], 2) for row in rows] == [0.0, 25.12, 31.35]


def test_figure3_drop_ratios_are_numbers():
    """metric(m/2) / metric(m) − 1 per size, written out: sizes given out of order, as strings."""
    sizes = {"16": {"ndcg@10": 0.05, "recall@10": 0.08}, "4": {"ndcg@10": 0.02, "recall@10": 0.04},
             "8": {"ndcg@10": 0.04, "recall@10": 0.0}}
    rows = reports.size_rows(sizes, metrics=("ndcg@10",))
    assert [row["size"] for row in rows] == [4, 8, 16]
    assert [row["ndcg@10"] for row in rows] == [0.02, 0.04, 0.05]
    assert [row["ndcg@10_drop"] for row in rows] == [None, pytest.approx(-0.5), pytest.approx(-0.2)]
    assert [row["recall@10_drop"] for row in rows] == [None, None, -1.0]  # no ratio to a zero; from a zero: −100 %


@pytest.mark.parametrize("model_name", ["UniSRec", "VQRec"])
def test_text_models_score_the_cosine_of_the_transformer_output_and_the_item_table(data_path, model_name):
    """s = Transformer(LayerNorm(E[items] + P[:L]), causal mask) at the last real position;
    score(i) = cos(s, E_i) (RecBole's TransformerEncoder and causal mask, the plugin's item table)."""
    from recbole_fmrl.model import UniSRec, VQRec

    model_class = {"UniSRec": UniSRec, "VQRec": VQRec}[model_name]
    model, _ = build(model_class, data_path, hidden_size=16, inner_size=32, n_heads=2, code_dim=4, code_cap=4,
                     feature_files={"text": "tiny.text.npy"})
    model.float()
    batch = history_batch()
    item_seq, lengths = batch["item_id_list"], batch["item_length"]
    with torch.no_grad():
        table = model.item_table()
        hidden = model.LayerNorm(table[item_seq] + model.position_embedding.weight[:MAX_LEN])
        hidden = model.trm_encoder(hidden, model.get_attention_mask(item_seq), output_all_encoded_layers=True)[-1]
        user = hidden[torch.arange(3), lengths - 1]
        expected = torch.nn.functional.cosine_similarity(user[:, None, :], table[None, :, :], dim=-1)
        torch.testing.assert_close(model.full_sort_predict(batch), expected, atol=1e-5, rtol=1e-5)
        picked = dict(batch, item_id=torch.tensor([4, 9, 0]))
        torch.testing.assert_close(model.predict(picked), expected[torch.arange(3), picked["item_id"]], atol=1e-5, rtol=1e-5)
