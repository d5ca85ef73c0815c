"""Laws that hold for every input, checked with hypothesis on drawn sizes, lengths and values:
nesting (the first m outputs ignore everything beyond m), export = slice, parallel scan = recurrence,
the fused loss = the per-size sum, training windows cover every target once."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from recbole_fmrl.data import sequence_window_rows
from recbole_fmrl.model import FMLPRec
from recbole_fmrl.model.layers import (
    FMRLLinear,
    LRUBlock,
    LRUEncoder,
    LRULayer,
    NestedLayerNorm,
    linear_scan,
    nested_cross_entropy,
    sliced_state_dict,
)

# Modest and reproducible: the same examples on every run, no example database written to disk.
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, database=None)


@st.composite
def nested_sizes(draw, max_count=3, max_step=6):
    """A strictly increasing list of 1 to ``max_count`` positive sizes."""
    steps = draw(st.lists(st.integers(1, max_step), min_size=1, max_size=max_count))
    return list(np.cumsum(steps).tolist())


def generator(seed):
    return torch.Generator().manual_seed(seed)


@PROPERTY
@given(in_sizes=nested_sizes(), factor=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_fmrl_linear_prefix_ignores_later_inputs_and_its_slice_is_the_small_layer(in_sizes, factor, seed):
    out_sizes = [factor * m for m in in_sizes]
    torch.manual_seed(seed)
    layer = FMRLLinear(in_sizes, out_sizes)
    x = torch.randn(3, in_sizes[-1], generator=generator(seed))
    full = layer(x)
    for index, (m_in, m_out) in enumerate(zip(in_sizes, out_sizes)):
        changed = x.clone()
        changed[:, m_in:] = torch.randn(3, in_sizes[-1] - m_in, generator=generator(seed + 1)) * 100
        assert torch.equal(layer(changed)[:, :m_out], full[:, :m_out])
        small = FMRLLinear(in_sizes[: index + 1], out_sizes[: index + 1])
        small.load_state_dict(sliced_state_dict(layer, index))
        torch.testing.assert_close(small(x[:, :m_in]), full[:, :m_out], atol=1e-6, rtol=1e-6)


@PROPERTY
@given(sizes=nested_sizes(max_count=4), seed=st.integers(0, 2**16))
def test_nested_layer_norm_is_a_layer_norm_per_block(sizes, seed):
    norm = NestedLayerNorm(sizes)
    with torch.no_grad():
        norm.weight.normal_(generator=generator(seed))
        norm.bias.normal_(generator=generator(seed + 1))
    x = torch.randn(2, 3, sizes[-1], generator=generator(seed + 2)) * 4 + 1
    edges = [0] + sizes
    expected = torch.cat([F.layer_norm(x[..., a:b], (b - a,), norm.weight[a:b], norm.bias[a:b])
                          for a, b in zip(edges, edges[1:])], -1)
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)


def lru_encoder(sizes, seed):
    torch.manual_seed(seed)
    encoder = LRUEncoder(LRUBlock(sizes, 2, 0.0, 0.0, r_min=0.5, r_max=0.95) for _ in range(2))
    with torch.no_grad():  # a non-trivial γ, independent of |λ|
        for block in encoder.blocks:
            block.lru.params_log[2].normal_(generator=generator(seed))
    return encoder.eval()


def right_padded(lengths, width, dim, seed):
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return torch.randn(len(lengths), width, dim, generator=generator(seed)) * mask[..., None], mask


@PROPERTY
@given(sizes=nested_sizes(), lengths=st.lists(st.integers(1, 9), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_lru_encoder_first_m_outputs_are_the_exported_size_m_encoder(sizes, lengths, seed):
    """Nesting and export = slice: the size-m encoder built from ``sliced_state_dict`` reproduces the
    first m outputs of the full one, whatever the inputs beyond m are."""
    encoder = lru_encoder(sizes, seed)
    x, mask = right_padded(lengths, max(lengths), sizes[-1], seed)
    full = encoder(x, mask)
    for index, m in enumerate(sizes):
        small = LRUEncoder(LRUBlock(sizes[: index + 1], 2, 0.0, 0.0, r_min=0.5, r_max=0.95) for _ in range(2)).eval()
        small.load_state_dict(sliced_state_dict(encoder, index))
        torch.testing.assert_close(small(x[..., :m], mask), full[..., :m], atol=1e-5, rtol=1e-5)
        changed = x.clone()
        changed[..., m:] += 10 * torch.randn(changed[..., m:].shape, generator=generator(seed + 1))
        assert torch.equal(encoder(changed, mask)[..., :m], full[..., :m])


@PROPERTY
@given(length=st.integers(1, 70), width=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_linear_scan_is_the_recurrence(length, width, seed):
    g = generator(seed)
    decay = torch.polar(torch.rand(width, generator=g), 2 * torch.pi * torch.rand(width, generator=g))
    inputs = torch.complex(torch.randn(2, length, width, generator=g), torch.randn(2, length, width, generator=g))
    hidden, expected = torch.zeros(2, width, dtype=torch.cfloat), []
    for t in range(length):
        hidden = decay * hidden + inputs[:, t]
        expected.append(hidden)
    torch.testing.assert_close(linear_scan(inputs, decay), torch.stack(expected, 1), atol=1e-5, rtol=1e-5)


@PROPERTY
@given(sizes=nested_sizes(), lengths=st.lists(st.integers(1, 12), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_lru_layer_scan_equals_its_recurrent_steps(sizes, lengths, seed):
    torch.manual_seed(seed)
    layer = LRULayer(sizes, r_min=0.3, r_max=0.99)
    x, mask = right_padded(lengths, max(lengths), sizes[-1], seed)
    state, outputs = torch.zeros(len(lengths), 2 * sizes[-1]), []
    for t in range(max(lengths)):
        output, state = layer.step(x[:, t], state, mask[:, t])
        outputs.append(output)
    torch.testing.assert_close(layer(x, mask), torch.stack(outputs, 1), atol=1e-5, rtol=1e-5)


@PROPERTY
@given(sizes=nested_sizes(max_count=4), rows=st.integers(1, 70), n_items=st.integers(2, 30), seed=st.integers(0, 2**16))
def test_fused_nested_loss_and_gradient_equal_the_per_size_sum(sizes, rows, n_items, seed):
    """Eq. 14 fused and chunked (any number of rows, across chunk borders) = Σ_m CE of the size-m scores."""
    g = generator(seed)
    hidden = torch.randn(rows, sizes[-1], generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(n_items, sizes[-1], generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, n_items, (rows,), generator=g)
    naive = sum(F.cross_entropy(hidden[:, :m] @ table[:, :m].T, targets) for m in sizes)
    fused = nested_cross_entropy(hidden, table, targets, sizes)
    torch.testing.assert_close(fused, naive)
    for got, expected in zip(torch.autograd.grad(2 * fused, (hidden, table)), torch.autograd.grad(2 * naive, (hidden, table))):
        torch.testing.assert_close(got, expected)


@PROPERTY
@given(rows_per_user=st.lists(st.integers(1, 20), min_size=1, max_size=6), window=st.integers(1, 8))
def test_training_windows_cover_every_row_exactly_once(rows_per_user, window):
    """The kept row j of a user covers rows j-window+1 .. j of that user (its sequence, read position by
    position): together they cover each training row once, and each user's last row is kept."""
    users = np.repeat(np.arange(len(rows_per_user)) * 7 % 11, rows_per_user)  # user ids in no particular order
    kept = sequence_window_rows(users, window)
    covered = []
    start = 0
    for count in rows_per_user:
        mine = [j for j in kept if start <= j < start + count]
        assert start + count - 1 in mine
        covered += [r for j in mine for r in range(max(start, j - window + 1), j + 1)]
        start += count
    assert sorted(covered) == list(range(len(users)))


def test_training_windows_refuse_a_user_whose_rows_are_not_contiguous():
    with pytest.raises(ValueError) as caught:
        sequence_window_rows(np.array([0, 0, 1, 0]), 2)
    assert str(caught.value) == "the training rows of a user are not contiguous"


@PROPERTY
@given(lengths=st.lists(st.integers(1, 8), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_left_align_moves_each_history_to_the_end(lengths, seed):
    rng = np.random.default_rng(seed)
    histories = [rng.integers(1, 50, size=n).tolist() for n in lengths]
    item_seq = torch.tensor([h + [0] * (8 - len(h)) for h in histories])
    aligned = FMLPRec.left_align(item_seq, torch.tensor(lengths))
    assert aligned.tolist() == [[0] * (8 - len(h)) + h for h in histories]
