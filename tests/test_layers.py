"""fMRL operator, nested LayerNorm and LRU layers: nesting, exact zeros, scan == recurrence."""

import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.inputs import nested_size_list
from recbole_fmrl.model.layers import (
    FMRLLinear,
    GatedFeedForward,
    LRUBlock,
    LRUEncoder,
    LRULayer,
    NestedLayerNorm,
    count_parameters,
    doubling_sizes,
    linear_scan,
    sliced_state_dict,
)
from recbole_fmrl.model.layers.fmrl import TILED_MIN_WIDTH
from recbole_fmrl.model.layers.nested_loss import nested_cross_entropy

from conftest import perturb_outside_slice

M = [4, 8, 16, 32]
SHAPES = {  # name: (in_sizes, out_sizes)
    "square": (M, M),
    "up": (M, [3 * m for m in M]),
    "down": ([2 * m for m in M], M),
    "ragged": ([3, 5, 12], [2, 7, 9]),
}


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def per_block_reference(layer, x):
    """Eq. 3: concat over blocks j of W_j[:, :in_j] x[:in_j] + b_j, one matmul per block."""
    outputs, start = [], 0
    for in_size, out_size in zip(layer.in_sizes, layer.out_sizes):
        weight = layer.weight[start:out_size, :in_size]
        outputs.append(x[..., :in_size] @ weight.T + layer.bias[start:out_size])
        start = out_size
    return torch.cat(outputs, dim=-1)


@pytest.mark.parametrize("shape", SHAPES)
def test_fmrl_linear_is_one_masked_matmul_equal_to_per_block_loop(shape):
    layer = FMRLLinear(*SHAPES[shape])
    x = torch.randn(3, 5, layer.in_features)
    torch.testing.assert_close(layer(x), per_block_reference(layer, x), atol=1e-6, rtol=1e-6)
    # the masked entries are exactly the ones outside the per-block rectangles
    for j, (in_size, out_size) in enumerate(zip(layer.in_sizes, layer.out_sizes)):
        start = layer.out_sizes[j - 1] if j else 0
        assert not layer.zero_mask[start:out_size, :in_size].any()
        assert layer.zero_mask[start:out_size, in_size:].all()
    assert torch.equal(layer.weight[layer.zero_mask], torch.zeros(int(layer.zero_mask.sum())))


@pytest.mark.parametrize("shape", SHAPES)
def test_fmrl_linear_prefix_outputs_ignore_later_inputs(shape):
    layer = FMRLLinear(*SHAPES[shape])
    x = torch.randn(4, layer.in_features)
    for in_size, out_size in zip(layer.in_sizes, layer.out_sizes):
        changed = x.clone()
        changed[:, in_size:] = torch.randn_like(changed[:, in_size:]) * 100
        assert torch.equal(layer(x)[:, :out_size], layer(changed)[:, :out_size])


@pytest.mark.parametrize("in_sizes, out_sizes", [
    ([32, 64, 128, 256], [96, 192, 384, 768]),  # up by 3 (attention's q, k, v)
    ([64, 128, 256, 512], [32, 64, 128, 256]),  # down by 2
    ([128, 256], [128, 256]),  # two blocks: one tile each
])
def test_fmrl_linear_row_tiles_equal_the_dense_product(in_sizes, out_sizes):
    layer = FMRLLinear(in_sizes, out_sizes)
    assert layer.in_features >= TILED_MIN_WIDTH and len(layer.row_tiles) == min(len(in_sizes), 3)
    x = torch.randn(3, 5, layer.in_features)
    with torch.no_grad():  # without autograd the tiles run
        tiled = layer(x)
    dense = layer(x)  # with autograd: the one dense product
    assert dense.requires_grad and not tiled.requires_grad
    torch.testing.assert_close(tiled, dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tiled, per_block_reference(layer, x).detach(), atol=1e-5, rtol=1e-5)
    # the tiles cover every row once and every entry a row may read
    rows = torch.zeros(layer.out_features, dtype=torch.long)
    for start, end, columns in layer.row_tiles:
        rows[start:end] += 1
        assert layer.row_fan_in[start:end].max() <= columns
    assert torch.equal(rows, torch.ones_like(rows))


def test_fmrl_linear_narrow_layer_keeps_one_product():
    assert FMRLLinear(M, M).row_tiles == [(0, M[-1], M[-1])]


def test_count_parameters_skips_structural_zeros():
    layer = FMRLLinear(M, [2 * m for m in M])
    blocks = sum((2 * m - 2 * prev) * m for prev, m in zip([0] + M[:-1], M))
    assert count_parameters(layer) == blocks + 2 * M[-1] == int((layer.weight != 0).sum()) + 2 * M[-1]


def test_fmrl_linear_single_size_is_nn_linear():
    layer, reference = FMRLLinear([12], [20]), nn.Linear(12, 20)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(6, 12)
    assert torch.equal(layer(x), reference(x))
    assert not layer.zero_mask.any()
    bound = 12**-0.5  # nn.Linear's init range
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.8 * bound
    assert set(layer.state_dict()) == {"weight", "bias"}  # mask is a non-persistent buffer


def fmrl_network():
    return nn.Sequential(FMRLLinear(M, [2 * m for m in M]), nn.GELU(), FMRLLinear([2 * m for m in M], M))


def masked_entries(network):
    return torch.cat([layer.weight[layer.zero_mask] for layer in network if isinstance(layer, FMRLLinear)])


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2),
        lambda params: torch.optim.Adam(params, lr=1e-2, weight_decay=1e-2),
        lambda params: torch.optim.SGD(params, lr=1e-2, momentum=0.9, weight_decay=1e-2),
    ],
    ids=["adamw", "adam-l2", "sgd-momentum"],
)
def test_masked_weights_stay_exactly_zero_through_training(make_optimizer):
    network = fmrl_network()
    optimizer = make_optimizer(network.parameters())
    x, y = torch.randn(32, M[-1]), torch.randn(32, M[-1])
    before = [p.detach().clone() for p in network.parameters()]
    for _ in range(5):
        optimizer.zero_grad()
        F.mse_loss(network(x), y).backward()
        for layer in (network[0], network[2]):
            assert torch.equal(layer.weight.grad[layer.zero_mask], torch.zeros(int(layer.zero_mask.sum())))
            assert layer.weight.grad[~layer.zero_mask].abs().sum() > 0
        optimizer.step()
    assert masked_entries(network).abs().max() == 0
    assert all(not torch.equal(b, p) for b, p in zip(before, network.parameters()))  # it did train


def test_gradient_mask_survives_deepcopy_and_pickle():
    for network in (copy.deepcopy(fmrl_network()), pickle.loads(pickle.dumps(fmrl_network()))):
        optimizer = torch.optim.AdamW(network.parameters(), lr=1e-2, weight_decay=1e-2)
        network(torch.randn(3, M[-1])).pow(2).sum().backward()
        for layer in (network[0], network[2]):
            assert layer.weight.grad[layer.zero_mask].abs().max() == 0
        optimizer.step()
        assert masked_entries(network).abs().max() == 0


@pytest.mark.parametrize(
    "sizes, message",
    [  # the whole message: every rule's text starts with the same requirement, the rest names the rule
        ([8, 4, 16], "(nested), got [8, 4, 16]"),
        ([4, 4, 16], "(nested), got [4, 4, 16]"),
        ([4, 8], ", got [4, 8] (last is 8)"),
        ([0, 16], ", got [0, 16]"),
        ([4.5, 16], ", got [4.5, 16]"),
        ([True, 16], ", got [True, 16]"),
        ([], ", got []"),
        ("4,16", ", got '4,16'"),
    ],
)
def test_bad_nested_sizes_raise_one_line_config_error(sizes, message):
    with pytest.raises(ConfigError) as error:
        nested_size_list("mrl_hidden_sizes", sizes, 16)
    requirement = "mrl_hidden_sizes must be a strictly increasing list of positive integers ending at hidden_size=16"
    assert str(error.value) == requirement + " " * message.startswith("(") + message


def test_nested_sizes_accept_any_nesting_and_default_doubling():
    assert nested_size_list("mrl_hidden_sizes", [3, 10, 11, 16], 16) == [3, 10, 11, 16]
    assert doubling_sizes(64) == [8, 16, 32, 64]
    assert doubling_sizes(100) == [8, 16, 32, 64, 100]
    assert doubling_sizes(8) == [8]


@pytest.mark.parametrize("sizes", [[4, 8, 16, 32], [8, 16, 24, 32], [32]], ids=["doubling", "equal", "single"])
def test_nested_layer_norm_is_one_layer_norm_per_block(sizes):
    norm = NestedLayerNorm(sizes)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(5, 7, 32) * 3 + 1
    expected, start = [], 0
    for end in sizes:
        block = slice(start, end)
        expected.append(F.layer_norm(x[..., block], (end - start,), norm.weight[block], norm.bias[block]))
        start = end
    torch.testing.assert_close(norm(x), torch.cat(expected, -1), atol=1e-5, rtol=1e-5)
    for m in sizes:  # first m outputs ignore inputs beyond m
        changed = x.clone()
        changed[..., m:] = torch.randn_like(changed[..., m:]) * 50
        assert torch.equal(norm(x)[..., :m], norm(changed)[..., :m])


def test_nested_layer_norm_single_size_is_nn_layer_norm():
    norm, reference = NestedLayerNorm([24]), nn.LayerNorm(24)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    reference.load_state_dict(norm.state_dict())
    x = torch.randn(3, 24)
    torch.testing.assert_close(norm(x), reference(x), atol=1e-6, rtol=1e-6)


def test_linear_scan_equals_sequential_recurrence():
    decay = torch.polar(torch.rand(6), torch.rand(6) * 6.28)
    for length in (1, 2, 7, 16, 50):
        inputs = torch.randn(3, length, 6, dtype=torch.cfloat)
        hidden, expected = torch.zeros(3, 6, dtype=torch.cfloat), []
        for t in range(length):
            hidden = decay * hidden + inputs[:, t]
            expected.append(hidden)
        torch.testing.assert_close(linear_scan(inputs, decay), torch.stack(expected, 1), atol=1e-5, rtol=1e-5)


def test_lru_ring_initialisation():
    layer = LRULayer([64], r_min=0.4, r_max=0.9)
    nu, theta, gamma = layer.params_log.exp()
    radius = torch.exp(-nu)
    assert radius.min() >= 0.4 - 1e-6 and radius.max() <= 0.9 + 1e-6
    assert theta.min() >= 0 and theta.max() <= 2 * torch.pi
    torch.testing.assert_close(gamma, torch.sqrt(1 - radius**2))
    with pytest.raises(ConfigError, match="r_min"):
        LRULayer([8], r_min=0.5, r_max=0.2)


def right_padded_batch(lengths, length, dim):
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    return torch.randn(len(lengths), length, dim) * mask[..., None], mask


def test_lru_layer_parallel_scan_equals_recurrent_steps():
    layer = LRULayer(M, r_min=0.5, r_max=0.99)
    x, mask = right_padded_batch([50, 23, 1], 50, M[-1])
    outputs, state = [], torch.zeros(3, 2 * M[-1])
    for t in range(50):
        output, state = layer.step(x[:, t], state, mask[:, t])
        outputs.append(output)
    torch.testing.assert_close(layer(x, mask), torch.stack(outputs, 1), atol=1e-5, rtol=1e-5)


def fmrl_encoder(dropout):
    """Two fMRLRec blocks over the nested sizes M."""
    return LRUEncoder(LRUBlock(M, 2, dropout, dropout, r_min=0.0, r_max=0.9) for _ in range(2))


def test_lru_encoder_parallel_equals_steps_and_padding_is_harmless():
    encoder = fmrl_encoder(dropout=0.3)
    encoder.eval()
    x, mask = right_padded_batch([12, 5], 12, M[-1])
    parallel = encoder(x, mask)
    outputs, state = [], encoder.init_state(2)
    assert state.shape == (2, 2, 2 * M[-1])
    for t in range(12):
        output, state = encoder.step(x[:, t], state, mask[:, t])
        outputs.append(output)
    torch.testing.assert_close(parallel, torch.stack(outputs, 1), atol=1e-5, rtol=1e-4)
    garbage = x.clone()
    garbage[1, 5:] = torch.randn(7, M[-1]) * 10  # padded positions of the short sequence
    torch.testing.assert_close(encoder(garbage, mask)[1, :5], parallel[1, :5], atol=0, rtol=0)


@pytest.mark.parametrize("index", range(len(M)))
def test_lru_encoder_first_m_dims_depend_only_on_size_m_slice(index):
    m = M[index]
    encoder = fmrl_encoder(dropout=0.0)
    x, mask = right_padded_batch([9, 4], 9, M[-1])
    perturbed = copy.deepcopy(encoder)
    perturb_outside_slice(perturbed, index)
    changed_x = x.clone()
    changed_x[..., m:] += torch.randn_like(changed_x[..., m:])
    assert torch.equal(perturbed(changed_x, mask)[..., :m], encoder(x, mask)[..., :m])
    if m < M[-1]:
        assert not torch.allclose(perturbed(changed_x, mask), encoder(x, mask))


def test_gated_feed_forward_slice_is_the_standalone_small_layer():
    big = GatedFeedForward(M, expansion=3, dropout=0.0)
    small = GatedFeedForward(M[:2], expansion=3, dropout=0.0)
    small.load_state_dict(sliced_state_dict(big, 1))
    x = torch.randn(4, M[-1])
    torch.testing.assert_close(small(x[:, : M[1]]), big(x)[:, : M[1]], atol=1e-6, rtol=1e-6)


def test_nested_loss_stays_finite_for_rows_of_very_different_scale():
    """Each row is shifted by its own largest score (log-sum-exp): a row whose scores are ~1000 below
    another's does not underflow to log(0)."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 8, generator=generator, dtype=torch.float64) * torch.tensor([[300.0], [0.1], [1.0]],
                                                                                         dtype=torch.float64)
    table = torch.randn(6, 8, generator=generator, dtype=torch.float64)
    targets = torch.tensor([2, 5, 0])
    expected = sum(F.cross_entropy(hidden[:, :m] @ table[:, :m].T, targets) for m in (2, 4, 8))
    loss = nested_cross_entropy(hidden, table, targets, [2, 4, 8])
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-12)


def test_nested_loss_of_a_target_far_below_the_top_is_the_exact_log_sum_exp():
    """float32: a target 220 below its row's top has softmax probability 0 (its −log would be inf), one
    80 below a tiny but normal one: losses and gradients are those of the float64 per-size sum."""
    hidden = torch.tensor([[20.0, 0.0, 0.0, 0.0], [7.3, 0.0, 0.0, 0.0], [0.5, -1.0, 0.3, 0.2]], requires_grad=True)
    table = torch.tensor([[10.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 2.0], [-1.0, 0.0, 1.0, 0.0]], requires_grad=True)
    targets = torch.tensor([2, 2, 1])  # rows 0 and 1: the target scores 220 and 80 below the top at both sizes
    reference = [v.detach().double().requires_grad_(True) for v in (hidden, table)]
    naive = sum(F.cross_entropy(reference[0][:, :m] @ reference[1][:, :m].T, targets) for m in (2, 4))
    fused = nested_cross_entropy(hidden, table, targets, [2, 4])
    assert torch.isfinite(fused) and fused.item() == pytest.approx(naive.item(), rel=1e-6)
    for got, expected in zip(torch.autograd.grad(fused, (hidden, table)), torch.autograd.grad(naive, reference)):
        torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-5)


def test_nested_layer_norm_refuses_sizes_that_do_not_nest():
    with pytest.raises(ConfigError) as caught:
        NestedLayerNorm([8, 4])
    assert str(caught.value) == "sizes must be a strictly increasing list of positive integers (nested), got [8, 4]"


def test_lru_layer_default_ring_is_0_to_0_1():
    """Without r_min/r_max (defaults 0 and 0.1) the eigenvalues are drawn with 0 <= |λ| <= 0.1."""
    torch.manual_seed(0)
    radius = torch.exp(-LRULayer([4, 8]).params_log[0].exp())
    assert radius.min() >= 0.0 and radius.max() <= 0.1 and radius.max() > 0.05


@pytest.mark.parametrize("in_sizes, out_sizes, message", [
    ([8, 4], [4, 8], "in_sizes must be a strictly increasing list of positive integers (nested), got [8, 4]"),
    ([4, 8], [8, 8], "out_sizes must be a strictly increasing list of positive integers (nested), got [8, 8]"),
    ([4, 8], [4, 8, 16], "in_sizes [4, 8] and out_sizes [4, 8, 16] must have the same length"),
])
def test_fmrl_linear_refuses_sizes_that_do_not_nest_or_pair(in_sizes, out_sizes, message):
    with pytest.raises(ConfigError) as caught:
        FMRLLinear(in_sizes, out_sizes)
    assert str(caught.value) == message


@pytest.mark.parametrize("r_min, r_max", [(0.5, 0.4), (0.0, 0.0), (0.0, 1.0), (0.0, 1.5), (-0.1, 0.5)])
def test_lru_ring_outside_the_unit_disc_or_empty_is_refused(r_min, r_max):
    with pytest.raises(ConfigError) as caught:
        LRULayer([4], r_min=r_min, r_max=r_max)
    assert str(caught.value) == f"LRU ring needs 0 <= r_min <= r_max < 1 and r_max > 0, got r_min={r_min}, r_max={r_max}"


def test_lru_ring_may_be_a_circle_and_phases_cover_the_whole_turn():
    """r_min == r_max is allowed (every |λ| equal); the phases θ are drawn over [0, 2π)."""
    torch.manual_seed(0)
    nu, theta, _ = LRULayer([512], r_min=0.5, r_max=0.5).params_log.exp()
    torch.testing.assert_close(torch.exp(-nu), torch.full((512,), 0.5))
    assert theta.max() <= 2 * math.pi and theta.max() > 1.9 * math.pi and theta.min() < 0.1 * math.pi


def test_lru_layer_without_bias_maps_zero_to_zero():
    torch.manual_seed(0)
    layer = LRULayer([4, 8], bias=False)
    x, mask = torch.zeros(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    assert torch.equal(layer(x, mask), torch.zeros(2, 5, 8))
    assert not torch.equal(LRULayer([4, 8])(x, mask), torch.zeros(2, 5, 8))  # with bias: B's bias drives the state


def test_fmrl_linear_bias_starts_uniform_within_each_blocks_fan_in_bound():
    """nn.Linear's init per output block: bias ~ U(±1/sqrt(fan_in)), fan_in = the block's input size."""
    torch.manual_seed(0)
    bias = FMRLLinear([4, 64], [4, 64]).bias.detach()
    assert bias[:4].abs().max() <= 0.5 and bias[4:].abs().max() <= 0.125
    assert bias[4:].min() < -0.1 and bias[4:].max() > 0.1 and 0.06 < bias[4:].std().item() < 0.085
