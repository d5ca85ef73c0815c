"""Nested causal self-attention: fMRLRec's encoder as a Transformer whose every size-m slice is a
SASRec-style model of width m (learned positions, pre-LN blocks of attention and feed-forward).

Head layout. For M = [m_1 < ... < m_K = D], block j owns the dims [m_{j-1}, m_j). A head never
straddles a block: its queries, keys and values are dims of one block j, computed by fMRL maps (eq.
4-5) from the first m_j inputs, it attends with its own softmax, and its output lands in block j;
the output map is fMRL too. The size-m slice is therefore exactly a multi-head attention over the
heads of the first blocks, and the whole encoder sliced at m (positions [L, m], nested LayerNorms,
fMRL feed-forward) is the standalone width-m model. Inside a block the heads are
``attention_head_size`` = h dims wide, and a block narrower than h is one head: one head per block
would give the doubling series a head of D/2 dims (one attention pattern over half the width of
the full model), while heads of h keep the usual head width and many patterns at every large size
and one head per block at the small ones (M = [8..256], h = 64: heads of 8, 8, 16, 32, 64, 64, 64).
Heads of equal width in consecutive blocks run as one batched ``scaled_dot_product_attention``;
the heads' widths add up to D, so attention costs Σ_heads L²·w = L²·D, as one full-width attention.

Serving keeps, per user, the keys and values of every block (:class:`AttentionState`), so one more
item costs one query against at most L cached positions (O(L·D) per block) instead of re-encoding
the history (O(L²·D)). Positions are learned up to L = ``MAX_ITEM_LIST_LENGTH``: the model only
ever sees the last L items, so an item arriving at a full cache re-encodes the last L items, as a
full pass over the truncated history does.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.inputs import positive_ints
from recbole_fmrl.model.layers.fmrl import FMRLLinear, NestedLayerNorm
from recbole_fmrl.model.layers.lru import FeedForwardResidual
from recbole_fmrl.model.protocol import SequenceEncoder


def head_runs(sizes, head_size):
    """``[(start, end, width)]``: consecutive dims whose heads are ``width`` wide (see the module
    docstring); a block wider than ``head_size`` must be a multiple of it (else ConfigError)."""
    runs = []
    for start, end in zip([0] + sizes[:-1], sizes):
        width = min(end - start, head_size)
        if (end - start) % width:
            raise ConfigError(f"attention_head_size {head_size} must divide every block of mrl_hidden_sizes wider "
                              f"than it; block [{start}, {end}) is {end - start} wide")
        if runs and runs[-1][2] == width:
            runs[-1] = (runs[-1][0], end, width)
        else:
            runs.append((start, end, width))
    return runs


class NestedAttention(nn.Module):
    """Multi-head self-attention whose heads are the nested blocks (module docstring): Q, K, V from
    one fMRL map ``D -> 3D`` (q, k, v of dim d interleaved, so the size-m slice is the first 3m
    rows), softmax(q kᵀ / sqrt(w)) v per head of width w, then an fMRL output map."""

    def __init__(self, sizes, head_size, dropout):
        super().__init__()
        self.runs = head_runs(sizes, head_size)
        self.qkv = FMRLLinear(sizes, [3 * m for m in sizes])
        self.out_proj = FMRLLinear(sizes, sizes)
        self.dropout = dropout
        widths = torch.tensor([float(width) for start, end, width in self.runs for _ in range(start, end, width)])
        heads = torch.repeat_interleave(torch.arange(len(widths)), widths.long())  # each dim's head
        self.register_buffer("head_of_dim", F.one_hot(heads).float(), persistent=False)  # [D, heads]
        self.register_buffer("dim_scale", widths[heads].rsqrt(), persistent=False)  # 1 / sqrt(w) of its head

    def project(self, x):
        """Queries, keys and values of ``x`` [..., D], each [..., D]."""
        return self.qkv(x).unflatten(-1, (-1, 3)).movedim(-1, 0).contiguous().unbind(0)

    def attend(self, query, key, value):
        """Causal attention of ``query``, ``key``, ``value`` [B, L, D]: one batched attention per run of
        equally wide heads; output map applied, [B, L, D]."""
        dropout = self.dropout if self.training else 0.0
        outputs = []
        for start, end, width in self.runs:
            heads = [t[..., start:end].unflatten(-1, (-1, width)).transpose(1, 2) for t in (query, key, value)]
            attended = F.scaled_dot_product_attention(*heads, dropout_p=dropout, is_causal=True)
            outputs.append(attended.transpose(1, 2).flatten(-2))
        return self.out_proj(torch.cat(outputs, dim=-1))

    def attend_one(self, query, key, value, future):
        """One query per row, ``query`` [B, D], against ``key``, ``value`` [B, C, D] but where ``future``
        [B, C] is True: every head at once, as two batched products: a head's scores are its dims'
        products, ``key @ (query spread over the heads by head_of_dim)``, and each dim's output is its
        head's row of ``weightsᵀ @ value``; output map applied, [B, D]."""
        queries = (query * self.dim_scale)[..., None] * self.head_of_dim  # [B, D, heads]
        weights = (key @ queries).masked_fill(future[..., None], float("-inf")).softmax(dim=1)  # [B, C, heads]
        weights = F.dropout(weights, self.dropout, self.training)
        return self.out_proj(((weights.transpose(1, 2) @ value) * self.head_of_dim.T).sum(dim=1))


class AttentionBlock(FeedForwardResidual, nn.Module):
    """fMRLRec's pre-LN residual block with attention in place of the LRU: ``x + drop(Attn(LN(x)))``,
    then ``x + drop(FFN(LN(x)))`` (nested LayerNorms, gated SiLU FFN). ``attn_dropout`` drops
    attention weights and ``hidden_dropout`` the attention output, as SASRec's."""

    def __init__(self, sizes, ffn_expansion, hidden_dropout, attn_dropout, head_size):
        super().__init__()
        self.attention_norm = NestedLayerNorm(sizes)
        self.attention = NestedAttention(sizes, head_size, attn_dropout)
        self.attention_dropout = nn.Dropout(hidden_dropout)
        self._add_feed_forward(sizes, ffn_expansion, hidden_dropout)

    def forward(self, x):
        """[B, L, D] -> (output [B, L, D], keys [B, L, D], values [B, L, D]); causal."""
        query, key, value = self.attention.project(self.attention_norm(x))
        y = self.attention.attend(query, key, value)
        return self._feed_forward(x + self.attention_dropout(y)), key, value

    def step(self, x, cache, rows, position, future):
        """One item per row, ``x`` [B, D] at ``position`` [B]: writes its key and value into ``cache``
        [2, B, C, D] (in place) and attends to the cached positions but where ``future`` [B, C]."""
        query, key, value = self.attention.project(self.attention_norm(x))
        cache[:, rows, position] = torch.stack([key, value])
        y = self.attention.attend_one(query, cache[0], cache[1], future)
        return self._feed_forward(x + self.attention_dropout(y))


@dataclass(frozen=True)
class AttentionState:
    """What :meth:`AttentionEncoder.step` continues from, per row: ``inputs`` [B, C, D] (the block
    inputs before positions), ``kv`` [n_layers, 2, B, C, D] (every block's keys and values) and
    ``lengths`` [B], the positions filled (at most C = L); entries past a row's length are unused."""

    inputs: torch.Tensor
    kv: torch.Tensor
    lengths: torch.Tensor


class AttentionEncoder(SequenceEncoder, nn.Module):
    """Learned positions (sliced like every weight: [L, m] at size m) added to the inputs, then a
    stack of :class:`AttentionBlock`; the last block's output is the sequence representation (eq. 13).

    The interface of :class:`~recbole_fmrl.model.layers.lru.LRUEncoder`: ``forward(x, mask,
    return_state)``, ``state_after``, ``init_state`` and ``step`` (here a key/value cache).
    """

    def __init__(self, blocks, sizes, max_length):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.sizes = list(sizes)
        self.positions = nn.Parameter(torch.empty(max_length, self.sizes[-1]))
        nn.init.trunc_normal_(self.positions, std=0.02, a=-0.04, b=0.04)  # as the ID embedding

    @classmethod
    def from_config(cls, sizes, config):
        """fMRLRec's Transformer encoder from RecBole config keys (``n_layers``, ``ffn_expansion``,
        ``hidden_dropout_prob``, ``attn_dropout_prob``, ``attention_head_size``, ``MAX_ITEM_LIST_LENGTH``)."""
        n_layers, ffn_expansion, head_size = config["n_layers"], config["ffn_expansion"], config["attention_head_size"]
        positive_ints(n_layers=n_layers, ffn_expansion=ffn_expansion, attention_head_size=head_size)
        blocks = [
            AttentionBlock(sizes, ffn_expansion, config["hidden_dropout_prob"], config["attn_dropout_prob"], head_size)
            for _ in range(n_layers)
        ]
        return cls(blocks, sizes, config["MAX_ITEM_LIST_LENGTH"])

    @property
    def capacity(self):
        """L: the positions the model has, hence the longest history it reads."""
        return self.positions.size(0)

    def forward(self, x, mask, return_state=False):
        """[B, L, D] -> [B, L, D], position t reading positions <= t. ``mask`` is not needed: RecBole's
        padding comes after every real item. With ``return_state`` also an :class:`AttentionState` of
        every position (:meth:`state_after` picks each row's)."""
        hidden, caches = x + self.positions[: x.size(1)], []
        for block in self.blocks:
            hidden, key, value = block(hidden)
            if return_state:
                caches.append(torch.stack([key, value]))
        if not return_state:
            return hidden
        lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long, device=x.device)
        return hidden, AttentionState(inputs=x, kv=torch.stack(caches), lengths=lengths)

    def state_after(self, states, lengths):
        """The state after each row's first ``lengths`` [B] items, from ``forward``'s ``states``."""
        pad = self.capacity - states.inputs.size(1)
        return AttentionState(inputs=F.pad(states.inputs, (0, 0, 0, pad)), kv=F.pad(states.kv, (0, 0, 0, pad)),
                              lengths=lengths.clone())

    def init_state(self, batch_size):
        """The empty cache of ``batch_size`` rows."""
        inputs = self.positions.new_zeros(batch_size, self.capacity, self.sizes[-1])
        kv = inputs.new_zeros(len(self.blocks), 2, *inputs.shape)
        lengths = torch.zeros(batch_size, dtype=torch.long, device=inputs.device)
        return AttentionState(inputs=inputs, kv=kv, lengths=lengths)

    def step(self, x, state, mask):
        """One more item per row, ``x`` [B, D] -> (output [B, D], new state); equal to ``forward`` at that
        position. A row of a full cache (L items) re-encodes its last L items; a row where ``mask`` is
        False (padding) keeps its state. ``state`` is left as it is."""
        rows = torch.arange(x.size(0), device=x.device)
        position = state.lengths.clamp_max(self.capacity - 1)
        future = torch.arange(self.capacity, device=x.device) > position[:, None]
        inputs, kv = state.inputs.index_put((rows, position), x), state.kv.clone()
        output = x + self.positions[position]
        for block, cache in zip(self.blocks, kv):
            output = block.step(output, cache, rows, position, future)
        full = mask & (state.lengths == self.capacity)
        if full.any():
            window = torch.cat([state.inputs[full, 1:], x[full, None]], dim=1)
            encoded, encoded_state = self(window, None, return_state=True)
            output[full], inputs[full], kv[:, :, full] = encoded[:, -1], window, encoded_state.kv
        lengths = (state.lengths + mask.long()).clamp_max(self.capacity)
        if not mask.all():
            inputs = torch.where(mask[:, None, None], inputs, state.inputs)
            kv = torch.where(mask[:, None, None], kv, state.kv)
        return output, AttentionState(inputs=inputs, kv=kv, lengths=lengths)

    def sliced_parameters(self, index):
        return {"positions": self.positions[:, : self.sizes[index]]}
