"""Linear recurrent unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences") with fMRL projections, as used by fMRLRec (arXiv 2409.16627) and LRURec (Yue et al. 2024).

Shapes: ``x`` [B, L, D] with RecBole's right padding, ``mask`` [B, L] (True at real items). The
complex state of size D is stored as 2D reals interleaved ``[re_0, im_0, re_1, im_1, ...]``, so the
size-m model's state is ``state[..., :2m]``.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.inputs import positive_ints
from recbole_fmrl.model.layers.fmrl import FMRLLinear, NestedLayerNorm
from recbole_fmrl.model.protocol import SequenceEncoder


def linear_scan(inputs, decay):
    """``h_t = decay * h_{t-1} + inputs_t`` along dim 1 from ``h_{-1} = 0``, by Hillis-Steele doubling.

    After the step with offset k, ``h_t = sum_{s < 2k} decay^s * inputs_{t-s}``; L = 50 takes 6 steps.
    """
    hidden, power, offset = inputs, decay, 1
    while offset < inputs.size(1):
        hidden = torch.cat([hidden[:, :offset], hidden[:, offset:] + power * hidden[:, :-offset]], dim=1)
        power, offset = power * power, offset * 2
    return hidden


class LRULayer(nn.Module):
    """LRU: ``h_t = Λ h_{t-1} + γ ⊙ B x_t``, ``y_t = Re(C h_t)`` with complex diagonal
    ``Λ = exp(-exp(ν_log) + i·exp(θ_log))`` ring-initialised to ``r_min <= |λ| <= r_max`` and
    ``γ = sqrt(1 - |λ|²)`` (learned as ``γ_log`` from that value, as in the LRU and LRURec code).

    B (D -> 2N, real/imag interleaved) and C (2N -> D) are fMRL layers, so the first m outputs only
    depend on the first m inputs. The complex state has ``state_sizes[-1] = N`` units, N = D by
    default (fMRLRec); LRURec's code uses N = 2D (``state_sizes = [2D]``).
    """

    def __init__(self, sizes, r_min=0.0, r_max=0.1, bias=True, state_sizes=None):
        super().__init__()
        if not 0.0 <= r_min <= r_max or not 0.0 < r_max < 1.0:
            raise ConfigError(
                f"LRU ring needs 0 <= r_min <= r_max < 1 and r_max > 0, got r_min={r_min}, r_max={r_max}"
            )
        self.sizes = list(sizes)
        self.state_sizes = list(sizes if state_sizes is None else state_sizes)
        dim = self.state_sizes[-1]
        tiny = torch.finfo(torch.float32).tiny
        u1, u2 = torch.rand(dim).clamp_min(tiny), torch.rand(dim).clamp_min(tiny)
        radius_sq = u1 * (r_max**2 - r_min**2) + r_min**2
        nu_log = torch.log(-0.5 * torch.log(radius_sq))
        theta_log = torch.log(u2 * 2 * math.pi)
        gamma_log = 0.5 * torch.log(1.0 - radius_sq)
        self.params_log = nn.Parameter(torch.stack([nu_log, theta_log, gamma_log]))  # [3, D]
        self.in_proj = FMRLLinear(self.sizes, [2 * n for n in self.state_sizes], bias=bias)  # B
        self.out_proj = FMRLLinear([2 * n for n in self.state_sizes], self.sizes, bias=bias)  # C

    def _recurrence(self):
        nu, theta, gamma = self.params_log.exp()
        return torch.exp(torch.complex(-nu, theta)), gamma

    def _driving_input(self, x, mask, gamma):
        """``γ ⊙ B x`` as complex [..., N], zero where ``mask`` is False."""
        projected = self.in_proj(x) * mask.unsqueeze(-1).to(x.dtype)
        return torch.view_as_complex(projected.unflatten(-1, (-1, 2))) * gamma

    def _readout(self, hidden):
        return self.out_proj(torch.view_as_real(hidden).flatten(-2))

    def forward(self, x, mask, return_state=False):
        """All time steps at once with the parallel scan: [B, L, D] -> [B, L, D]; with
        ``return_state`` also the state after every step, [B, L, 2N] (the layout of :meth:`step`)."""
        decay, gamma = self._recurrence()
        hidden = linear_scan(self._driving_input(x, mask, gamma), decay)
        output = self._readout(hidden)
        return (output, torch.view_as_real(hidden).flatten(-2)) if return_state else output

    def step(self, x, state, mask):
        """One recurrent step: ``x`` [B, D], ``state`` [B, 2N] -> (``y`` [B, D], new state [B, 2N])."""
        decay, gamma = self._recurrence()
        previous = torch.view_as_complex(state.unflatten(-1, (-1, 2)))
        hidden = decay * previous + self._driving_input(x, mask, gamma)
        return self._readout(hidden), torch.view_as_real(hidden).flatten(-2)

    def sliced_parameters(self, index):
        return {"params_log": self.params_log[:, : self.state_sizes[index]]}


class GatedFeedForward(nn.Module):
    """Gated SiLU FFN ``down(silu(gate) ⊙ value)``: fMRL up D -> 2kD (gate and value interleaved, so
    the size-m slice is the first 2km rows) and fMRL down kD -> D (eq. 4-5)."""

    def __init__(self, sizes, expansion, dropout):
        super().__init__()
        self.up = FMRLLinear(sizes, [2 * expansion * m for m in sizes])
        self.down = FMRLLinear([expansion * m for m in sizes], sizes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        gate, value = self.up(x).unflatten(-1, (-1, 2)).unbind(-1)
        return self.down(self.dropout(F.silu(gate) * value))


class FeedForwardResidual:
    """The second half of fMRLRec's pre-LN block (a mixin of an ``nn.Module``): ``x + drop(FFN(LN(x)))``
    with a nested LayerNorm and the gated SiLU FFN."""

    def _add_feed_forward(self, sizes, expansion, dropout):
        self.ffn_norm = NestedLayerNorm(sizes)
        self.ffn = GatedFeedForward(sizes, expansion, dropout)
        self.ffn_dropout = nn.Dropout(dropout)

    def _feed_forward(self, x):
        return x + self.ffn_dropout(self.ffn(self.ffn_norm(x)))


class LRUBlock(FeedForwardResidual, nn.Module):
    """fMRLRec's pre-LN residual block: ``x + drop(LRU(LN(x)))``, then ``x + drop(FFN(LN(x)))``
    with nested LayerNorms and the gated SiLU FFN (the authors' code: square, ``expansion = 1``)."""

    def __init__(self, sizes, ffn_expansion, hidden_dropout, lru_dropout, r_min, r_max):
        super().__init__()
        self.lru_norm = NestedLayerNorm(sizes)
        self.lru = LRULayer(sizes, r_min, r_max)
        self.lru_dropout = nn.Dropout(lru_dropout)
        self._add_feed_forward(sizes, ffn_expansion, hidden_dropout)

    def forward(self, x, mask, return_state=False):
        y, state = self.lru(self.lru_norm(x), mask, return_state=True)
        output = self._feed_forward(x + self.lru_dropout(y))
        return (output, state) if return_state else output

    def step(self, x, state, mask):
        y, state = self.lru.step(self.lru_norm(x), state, mask)
        return self._feed_forward(x + self.lru_dropout(y)), state


class PostNormLRUBlock(nn.Module):
    """LRURec's block (Yue et al. 2024 and their code): ``h = LN(x + drop(LRU(x)))``, then
    ``LN(h + drop(W2 drop(GELU(W1 h))))`` with ``W1: D -> 4D``; the LRU state has 2D complex units."""

    def __init__(self, hidden_size, hidden_dropout, lru_dropout, r_min, r_max, inner_size=None):
        super().__init__()
        inner_size = inner_size or 4 * hidden_size
        self.lru = LRULayer([hidden_size], r_min, r_max, state_sizes=[2 * hidden_size])
        self.lru_dropout = nn.Dropout(lru_dropout)
        self.lru_norm = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, inner_size),
            nn.GELU(),
            nn.Dropout(hidden_dropout),
            nn.Linear(inner_size, hidden_size),
            nn.Dropout(hidden_dropout),
        )
        self.ffn_norm = nn.LayerNorm(hidden_size)

    def _feed_forward(self, x):
        return self.ffn_norm(x + self.ffn(x))

    def forward(self, x, mask, return_state=False):
        y, state = self.lru(x, mask, return_state=True)
        output = self._feed_forward(self.lru_norm(x + self.lru_dropout(y)))
        return (output, state) if return_state else output

    def step(self, x, state, mask):
        y, state = self.lru.step(x, state, mask)
        return self._feed_forward(self.lru_norm(x + self.lru_dropout(y))), state


class LRUEncoder(SequenceEncoder, nn.Module):
    """A stack of LRU blocks whose last output is the sequence representation (eq. 13: no norm after it).

    ``forward`` runs whole (right-padded) sequences with the parallel scan (``return_state=True``:
    with the recurrent state after every step); ``init_state`` and ``step`` run the same network one
    item at a time with O(1) work per item, e.g. to keep a per-user state when serving. The stacked
    state is [n_layers, B, 2N].
    """

    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.state_size = 2 * self.blocks[0].lru.state_sizes[-1]

    @classmethod
    def from_config(cls, sizes, config):
        """fMRLRec's encoder from RecBole config keys (``n_layers``, ``ffn_expansion``,
        ``hidden_dropout_prob``, ``attn_dropout_prob`` for the LRU output, ``r_min``, ``r_max``)."""
        n_layers, ffn_expansion = config["n_layers"], config["ffn_expansion"]
        positive_ints(n_layers=n_layers, ffn_expansion=ffn_expansion)
        return cls(
            LRUBlock(
                sizes,
                ffn_expansion,
                hidden_dropout=config["hidden_dropout_prob"],
                lru_dropout=config["attn_dropout_prob"],
                r_min=config["r_min"],
                r_max=config["r_max"],
            )
            for _ in range(n_layers)
        )

    def forward(self, x, mask, return_state=False):
        """[B, L, D] -> [B, L, D]; with ``return_state`` also every block's recurrent state after every
        step, [n_layers, B, L, 2N] (``state[:, b, t]`` is what :meth:`step` continues from after t)."""
        if not return_state:
            for block in self.blocks:
                x = block(x, mask)
            return x
        states = []
        for block in self.blocks:
            x, state = block(x, mask, return_state=True)
            states.append(state)
        return x, torch.stack(states)

    def state_after(self, states, lengths):
        """The state after each row's first ``lengths`` [B] items, [n_layers, B, 2N], from ``forward``'s
        ``states`` (zero where a row has no item)."""
        rows = torch.arange(states.size(1), device=states.device)
        state = states[:, rows, (lengths - 1).clamp_min(0)]
        state[:, lengths == 0] = 0.0
        return state

    def init_state(self, batch_size):
        weight = self.blocks[0].lru.params_log
        return weight.new_zeros(len(self.blocks), batch_size, self.state_size)

    def step(self, x, state, mask):
        """``x`` [B, D], ``state`` [n_layers, B, 2N] -> (output [B, D], new state)."""
        new_states = []
        for block, block_state in zip(self.blocks, state):
            x, block_state = block.step(x, block_state, mask)
            new_states.append(block_state)
        return x, torch.stack(new_states)
