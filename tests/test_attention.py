"""fMRLRec with the Transformer encoder (``encoder: transformer``): nested attention by hand, causality,
every size-m slice a standalone model (exported scores equal), exact zeros through AdamW, the key/value
cache equal to the full pass, eq. 13 by hand."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from recbole_fmrl.config import Config
from recbole_fmrl.errors import ConfigError
from recbole_fmrl.model import fMRLRec
from recbole_fmrl.model.layers import (
    AttentionBlock,
    AttentionEncoder,
    FMRLLinear,
    NestedAttention,
    sliced_state_dict,
)
from recbole_fmrl.model.layers.attention import head_runs

from conftest import perturb_outside_slice
from test_models import SIZES, build, data_path, train_steps, training_batch  # noqa: F401 (data_path: fixture)

M = [2, 4, 8, 16]  # blocks 2, 2, 4, 8
HEAD = 4  # heads of 2, 2, 4, 4, 4
CAPACITY = 7


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def encoder(sizes=M, capacity=CAPACITY, dropout=0.0):
    return AttentionEncoder([AttentionBlock(sizes, 2, dropout, dropout, HEAD) for _ in range(2)], sizes, capacity)


def transformer(data_path, **overrides):
    """fMRLRec-Transformer of test_models' tiny settings (M = [4, 8, 16], heads of 4)."""
    return build("fMRLRec", data_path, encoder="transformer", attention_head_size=4, **overrides)


def test_heads_stay_inside_their_block_and_equal_widths_run_together():
    assert head_runs([8, 16, 32, 64, 128, 256], 64) == [(0, 16, 8), (16, 32, 16), (32, 64, 32), (64, 256, 64)]
    assert head_runs(M, HEAD) == [(0, 4, 2), (4, 16, 4)]
    assert head_runs([16], 4) == [(0, 16, 4)] and head_runs([16], 64) == [(0, 16, 16)]
    assert head_runs([8, 24], 8) == [(0, 24, 8)]  # blocks of 8 and 16: heads of 8 in both
    with pytest.raises(ConfigError) as error:
        head_runs([32, 100], 64)
    assert str(error.value) == ("attention_head_size 64 must divide every block of mrl_hidden_sizes wider than it; "
                                "block [32, 100) is 68 wide")


def heads_by_hand(sizes, head_size):
    """``[(start, end)]`` of every head: a block narrower than ``head_size`` is one head, a wider one is
    cut into heads of ``head_size``."""
    heads = []
    for start, end in zip([0] + sizes[:-1], sizes):
        width = min(end - start, head_size)
        heads += [(a, a + width) for a in range(start, end, width)]
    return heads


def attention_by_hand(attention, x, sizes, head_size):
    """Causal multi-head attention of ``x`` [B, L, D], one head at a time with an explicit softmax."""
    weight, bias = attention.qkv.weight.view(-1, 3, x.size(-1)), attention.qkv.bias.view(-1, 3)
    query, key, value = (x @ weight[:, i].T + bias[:, i] for i in range(3))
    length = x.size(1)
    future = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    outputs = []
    for start, end in heads_by_hand(sizes, head_size):
        scores = query[..., start:end] @ key[..., start:end].transpose(1, 2) / math.sqrt(end - start)
        outputs.append(torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ value[..., start:end])
    return attention.out_proj(torch.cat(outputs, dim=-1))


def test_nested_attention_is_causal_multi_head_attention_with_one_softmax_per_head():
    attention = NestedAttention(M, HEAD, dropout=0.0)
    x = torch.randn(3, 6, M[-1])
    assert heads_by_hand(M, HEAD) == [(0, 2), (2, 4), (4, 8), (8, 12), (12, 16)]
    by_hand = attention_by_hand(attention, x, M, HEAD)
    query, key, value = attention.project(x)
    torch.testing.assert_close(attention.attend(query, key, value), by_hand, atol=1e-6, rtol=1e-5)
    for t in range(6):  # one query against all keys, the later ones masked: serving's attention
        future = (torch.arange(6) > t).expand(3, 6)
        torch.testing.assert_close(attention.attend_one(query[:, t], key, value, future), by_hand[:, t], atol=1e-6, rtol=1e-5)


def layer_norms_by_hand(norm, x, sizes):
    edges = [0] + sizes
    return torch.cat([F.layer_norm(x[..., a:b], (b - a,), norm.weight[a:b], norm.bias[a:b], norm.eps)
                      for a, b in zip(edges, edges[1:])], -1)


def encoder_by_hand(encoder, x, sizes, head_size):
    """Positions added, then per block ``x + Attn(LN(x))``, ``x + W_down(silu(gate) ⊙ value)`` of ``LN(x)``."""
    x = x + encoder.positions[: x.size(1)]
    for block in encoder.blocks:
        x = x + attention_by_hand(block.attention, layer_norms_by_hand(block.attention_norm, x, sizes), sizes, head_size)
        up = block.ffn.up(layer_norms_by_hand(block.ffn_norm, x, sizes))
        x = x + block.ffn.down(F.silu(up[..., 0::2]) * up[..., 1::2])
    return x


def test_position_t_reads_only_items_up_to_t():
    enc = encoder().eval()
    x, mask = torch.randn(2, CAPACITY, M[-1]), torch.ones(2, CAPACITY, dtype=torch.bool)
    full = enc(x, mask)
    for t in range(CAPACITY - 1):
        changed = x.clone()
        changed[:, t + 1:] = torch.randn_like(changed[:, t + 1:]) * 10
        torch.testing.assert_close(enc(changed, mask)[:, : t + 1], full[:, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(enc(changed, mask)[:, t + 1], full[:, t + 1])


@pytest.mark.parametrize("index", range(len(M)))
def test_size_m_slice_is_the_standalone_size_m_encoder(index):
    m, enc = M[index], encoder().eval()
    x, mask = torch.randn(2, 5, M[-1]), torch.ones(2, 5, dtype=torch.bool)
    full = enc(x, mask)
    small = encoder(M[: index + 1]).eval()
    small.load_state_dict(sliced_state_dict(enc, index))  # strict: the slicing rules cover every weight
    assert small.positions.shape == (CAPACITY, m)
    torch.testing.assert_close(small(x[..., :m], mask), full[..., :m], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(encoder_by_hand(small, x[..., :m], M[: index + 1], HEAD), full[..., :m],
                               atol=1e-5, rtol=1e-5)
    perturbed = copy.deepcopy(enc)
    perturb_outside_slice(perturbed, index)
    changed = x.clone()
    changed[..., m:] += torch.randn_like(changed[..., m:])
    torch.testing.assert_close(perturbed(changed, mask)[..., :m], full[..., :m], atol=1e-6, rtol=0)
    if m < M[-1]:
        assert not torch.allclose(perturbed(changed, mask), full)


def test_steps_through_the_cache_equal_the_full_pass_and_past_capacity_the_last_window():
    enc = encoder().eval()
    x = torch.randn(2, CAPACITY + 4, M[-1])
    mask = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        state, outputs = enc.init_state(2), []
        for t in range(x.size(1)):
            before = state
            output, state = enc.step(x[:, t], state, mask)
            assert before.lengths.tolist() == [min(t, CAPACITY)] * 2  # the old state is left as it was
            outputs.append(output)
            window = x[:, max(0, t + 1 - CAPACITY): t + 1]  # the last L items, as RecBole's truncation
            torch.testing.assert_close(output, enc(window, None)[:, -1], atol=1e-5, rtol=1e-5)
        full, states = enc(x[:, :CAPACITY], None, return_state=True)
        torch.testing.assert_close(torch.stack(outputs[:CAPACITY], 1), full, atol=1e-5, rtol=1e-5)
        assert state.lengths.tolist() == [CAPACITY, CAPACITY]
        torch.testing.assert_close(state.inputs, x[:, -CAPACITY:], atol=0, rtol=0)


def test_state_after_continues_from_each_rows_length_and_padding_keeps_a_state():
    enc = encoder().eval()
    x, lengths = torch.randn(3, 5, M[-1]), torch.tensor([5, 2, 0])
    with torch.no_grad():
        _, states = enc(x, None, return_state=True)
        state = enc.state_after(states, lengths)
        assert state.kv.shape == (2, 2, 3, CAPACITY, M[-1]) and state.lengths.tolist() == [5, 2, 0]
        new = torch.randn(3, M[-1])
        output, stepped = enc.step(new, state, torch.tensor([True, True, False]))
        for row, n in enumerate([5, 2]):
            sequence = torch.cat([x[row, :n], new[row, None]])[None]
            torch.testing.assert_close(output[row], enc(sequence, None)[0, -1], atol=1e-5, rtol=1e-5)
        assert stepped.lengths.tolist() == [6, 3, 0]
        assert torch.equal(stepped.kv[:, :, 2], state.kv[:, :, 2]) and torch.equal(stepped.inputs[2], state.inputs[2])


def test_masked_fmrl_entries_stay_exactly_zero_through_adamw_with_weight_decay(data_path):
    model, _, dataset = transformer(data_path, hidden_dropout_prob=0.1, attn_dropout_prob=0.1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_steps(model, training_batch(dataset), steps=4)  # AdamW, weight_decay 1e-2
    layers = [layer for layer in model.encoder.modules() if isinstance(layer, FMRLLinear)]
    assert len(layers) == 2 * 4  # per block: qkv, output map, FFN up and down
    for layer in layers:
        assert layer.zero_mask.any() and layer.weight[layer.zero_mask].abs().max() == 0
    assert all(not torch.equal(before[name], p) for name, p in model.named_parameters())  # everything trained


def test_scores_are_eq_13_by_hand_at_every_size(data_path):
    model, _, dataset = transformer(data_path)
    model.eval()
    batch = training_batch(dataset)
    item_seq, lengths = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    table = model.item_encoder()
    with torch.no_grad():
        hidden = encoder_by_hand(model.encoder, F.embedding(item_seq, table), SIZES, 4)
        user = hidden[torch.arange(len(batch)), lengths - 1]
        for m in SIZES:
            model.eval_size = m
            torch.testing.assert_close(model.full_sort_predict(batch), user[:, :m] @ table[:, :m].T, atol=1e-5, rtol=1e-5)


def test_a_later_item_changes_no_earlier_output_of_the_model(data_path):
    model, _, dataset = transformer(data_path)
    model.eval()
    item_seq = training_batch(dataset)[model.ITEM_SEQ]
    changed = item_seq.clone()
    changed[:, 4:] = (changed[:, 4:] % 19) + 1  # other real items after position 3
    with torch.no_grad():
        torch.testing.assert_close(model.encode(changed)[:, :4], model.encode(item_seq)[:, :4], atol=1e-6, rtol=0)
        assert not torch.allclose(model.encode(changed)[:, 4], model.encode(item_seq)[:, 4])


def test_exported_size_m_model_scores_like_the_trained_models_slice(data_path):
    model, config, dataset = transformer(data_path, modalities=["text", "image", "id"])
    batch = training_batch(dataset)
    train_steps(model, batch, steps=3)
    model.eval()
    for m in SIZES:
        model.eval_size = m
        small = fMRLRec(Config("fMRLRec", "tiny", config_dict={**config.overrides(), **model.sliced_config(m)}), dataset)
        small.load_state_dict(model.sliced_state_dict(m))
        small.eval()
        assert isinstance(small.encoder, AttentionEncoder) and small.encoder.positions.shape == (10, m)
        with torch.no_grad():
            torch.testing.assert_close(small.full_sort_predict(batch), model.full_sort_predict(batch), atol=1e-5, rtol=0)
            torch.testing.assert_close(small.predict(batch), model.predict(batch), atol=1e-5, rtol=0)


def test_sequence_training_decreases_the_nested_loss(data_path):
    model, _, dataset = transformer(data_path, hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    losses = train_steps(model, training_batch(dataset), steps=60)
    assert model.train_mode == "sequence" and losses[-1] < 0.5 * losses[0], losses


def test_per_size_learning_rates_read_the_attention_slicing_rules(data_path):
    model, _, _ = transformer(data_path, mrl_lr_exponent=1.0)
    factors, parameters = model.learning_rate_multipliers(), dict(model.named_parameters())
    positions = factors[parameters["encoder.positions"]]  # (D / m)^1 for the columns of size m's block
    assert positions[:, :4].eq(4.0).all() and positions[:, 4:8].eq(2.0).all() and positions[:, 8:].eq(1.0).all()
    qkv = factors[parameters["encoder.blocks.0.attention.qkv.weight"]]  # size m_j: the first 3·m_j rows, m_j columns
    assert qkv[:12, :4].eq(4.0).all() and qkv[12:24, :8].eq(2.0).all() and qkv[24:].eq(1.0).all()


@pytest.mark.parametrize("overrides, message", [
    ({"encoder": "gru"}, "encoder must be one of ['lru', 'transformer'], got 'gru'"),
    ({"encoder": "transformer", "attention_head_size": 0}, "attention_head_size must be a positive integer, got 0"),
    ({"encoder": "transformer", "attention_head_size": 3},
     "attention_head_size 3 must divide every block of mrl_hidden_sizes wider than it; block [0, 4) is 4 wide"),
])
def test_bad_encoder_settings_raise_one_config_error_naming_the_key(data_path, overrides, message):
    with pytest.raises(ConfigError) as error:
        build("fMRLRec", data_path, **overrides)
    assert str(error.value) == message
