"""The fMRL operator and nested LayerNorm of fMRLRec (Wang et al., arXiv 2409.16627, §3.2).

For nested sizes M = [m_1 < ... < m_K = D], every layer here maps the first m_j input dimensions to
the first m_j (or k·m_j) output dimensions without reading anything beyond them, so the size-m_j
model is literally a slice of the full one (eq. 3-5) and can be exported with :func:`sliced_state_dict`.
"""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_fmrl.errors import ConfigError
from recbole_fmrl.inputs import nested_size_list


def check_size(size, sizes, name="size"):
    """``size`` if it is one of the nested sizes ``sizes`` (a model's M), else one ConfigError naming it."""
    if isinstance(size, bool) or size not in sizes:
        raise ConfigError(f"{name} {size!r} is not one of the model's sizes {list(sizes)}")
    return int(size)


def doubling_sizes(full_size, smallest=8):
    """Default nested sizes [8, 16, 32, ..., full_size] (the paper's doubling series)."""
    sizes = []
    size = smallest
    while size < full_size:
        sizes.append(size)
        size *= 2
    return sizes + [full_size]


def sliced_state_dict(module, index):
    """State dict of the size-``M[index]`` model nested inside ``module`` (fMRLRec §3.2, eq. 3).

    Every submodule that owns parameters must be covered by a ``sliced_parameters(index)`` method of
    itself or of its parent, returning its state-dict entries (relative names) at that size. Tensors
    are copied, so saving the result stores only the small model.
    """
    sliced = {}
    for prefix, submodule in module.named_modules():
        if hasattr(submodule, "sliced_parameters"):
            for name, tensor in submodule.sliced_parameters(index).items():
                sliced[f"{prefix}.{name}" if prefix else name] = tensor.detach().clone()
    uncovered = module.state_dict().keys() - sliced.keys()
    if uncovered:
        raise TypeError(f"no slicing rule for {sorted(uncovered)}")
    return sliced


@torch.no_grad()
def first_size_index(module, n_sizes):
    """``{parameter name: tensor of its shape}`` holding, per entry, the index k of the smallest nested
    size M[k] whose model (``sliced_parameters(k)``, as :func:`sliced_state_dict`) holds the entry.

    The slicing rules are read, not restated: every parameter's data is swapped for a marker while
    the slices of sizes K-1, ..., 0 are written into it in turn (slices are views)."""
    params = dict(module.named_parameters())
    originals = {name: p.data for name, p in params.items()}
    try:
        for p in params.values():
            p.data = torch.full_like(p.data, n_sizes - 1)
        for index in reversed(range(n_sizes)):
            for submodule in module.modules():
                if hasattr(submodule, "sliced_parameters"):
                    for tensor in submodule.sliced_parameters(index).values():
                        tensor.fill_(index)
        return {name: p.data.long() for name, p in params.items()}
    finally:
        for name, p in params.items():
            p.data = originals[name]


def count_parameters(module):
    """Trainable parameters of ``module`` (any model), not counting the structurally zero fMRL entries."""
    total = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total - sum(int(layer.zero_mask.sum()) for layer in module.modules() if isinstance(layer, FMRLLinear))


TILED_MIN_WIDTH = 256  # FMRLLinear's inference runs in row tiles from this input width on


def row_tiles(in_sizes, out_sizes):
    """``[(row_start, row_end, columns)]`` covering an fMRL weight's rows: the last two blocks one tile
    each (rows ``out_sizes[j-1]:out_sizes[j]`` read ``in_sizes[j]`` columns), every block before them
    one tile reading ``in_sizes[-3]`` columns (few products, most zero entries skipped)."""
    blocks = list(zip([0] + list(out_sizes[:-1]), out_sizes, in_sizes))
    if len(blocks) <= 2:
        return blocks
    return [(0, out_sizes[-3], in_sizes[-3])] + blocks[-2:]


class FMRLLinear(nn.Module):
    """fMRL operator (eq. 4-5): one linear layer holding K nested linear maps.

    Output block j (rows ``out_sizes[j-1]:out_sizes[j]``) reads only ``input[:in_sizes[j]]``, i.e. the
    concatenation over j of ``W_j[:, :in_sizes[j]] @ x[:in_sizes[j]]`` (eq. 3), computed as ONE dense
    ``F.linear`` with a block-masked weight. Square: ``in_sizes == out_sizes == M``; up by k:
    ``out_sizes = [k·m]``; down by k: ``in_sizes = [k·m]``.

    Masked-out weights are zero from initialisation and their gradient is zeroed by a hook, so
    (decoupled) weight decay, momentum and Adam all keep them exactly zero; forward needs no mask.
    With ``in_sizes == [n]`` and ``out_sizes == [n']`` this is ``nn.Linear(n, n')`` (same init).

    Without autograd (serving, evaluation) and from ``TILED_MIN_WIDTH`` input dims on, the product
    runs per row tile (:func:`row_tiles`), each reading only the columns its rows may read, so most
    zero blocks are skipped (at the doubling series 69 % of the weight's products are done); below
    that width the three products cost more than they save (docs/performance.md).
    """

    def __init__(self, in_sizes, out_sizes, bias=True):
        super().__init__()
        self.in_sizes = nested_size_list("in_sizes", in_sizes)
        self.out_sizes = nested_size_list("out_sizes", out_sizes)
        if len(self.in_sizes) != len(self.out_sizes):
            raise ConfigError(
                f"in_sizes {self.in_sizes} and out_sizes {self.out_sizes} must have the same length"
            )
        self.in_features, self.out_features = self.in_sizes[-1], self.out_sizes[-1]
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        row_block = torch.bucketize(
            torch.arange(self.out_features), torch.tensor(self.out_sizes), right=True
        )
        self.register_buffer("row_fan_in", torch.tensor(self.in_sizes)[row_block], persistent=False)
        zero_mask = torch.arange(self.in_features)[None, :] >= self.row_fan_in[:, None]
        self.register_buffer("zero_mask", zero_mask, persistent=False)
        wide = self.in_features >= TILED_MIN_WIDTH
        self.row_tiles = row_tiles(self.in_sizes, self.out_sizes) if wide else [(0, self.out_features, self.in_features)]
        self.reset_parameters()
        self._register_gradient_mask()

    def reset_parameters(self):
        """nn.Linear's init per block: U(±1/sqrt(fan_in)), fan_in = in_sizes[j]; masked entries 0."""
        bound = self.row_fan_in.to(self.weight.dtype).rsqrt()
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0).mul_(bound[:, None]).masked_fill_(self.zero_mask, 0.0)
            if self.bias is not None:
                self.bias.uniform_(-1.0, 1.0).mul_(bound)

    def _register_gradient_mask(self):
        self.weight.register_hook(lambda grad: grad.masked_fill(self.zero_mask, 0.0))

    def __setstate__(self, state):
        # Tensor hooks are not copied by deepcopy/pickle: register the mask again.
        super().__setstate__(state)
        self._register_gradient_mask()

    def forward(self, x):
        if len(self.row_tiles) == 1 or (torch.is_grad_enabled() and self.weight.requires_grad):
            return F.linear(x, self.weight, self.bias)
        return torch.cat([
            F.linear(x[..., :cols], self.weight[start:end, :cols], None if self.bias is None else self.bias[start:end])
            for start, end, cols in self.row_tiles
        ], dim=-1)

    def sliced_parameters(self, index):
        """Weight and bias of the nested layer ``in_sizes[index] -> out_sizes[index]``."""
        rows, cols = self.out_sizes[index], self.in_sizes[index]
        params = {"weight": self.weight[:rows, :cols]}
        if self.bias is not None:
            params["bias"] = self.bias[:rows]
        return params

    def extra_repr(self):
        return f"in_sizes={self.in_sizes}, out_sizes={self.out_sizes}, bias={self.bias is not None}"


class NestedLayerNorm(nn.Module):
    """One LayerNorm per block ``sizes[j-1]:sizes[j]`` (fMRLRec §3.2), vectorised over blocks.

    The first m_j outputs depend only on the first m_j inputs. With ``sizes == [D]`` this is
    ``nn.LayerNorm(D)``.
    """

    def __init__(self, sizes, eps=1e-5):
        super().__init__()
        self.sizes = nested_size_list("sizes", sizes)
        self.eps = eps
        dim = self.sizes[-1]
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.block_sizes = [b - a for a, b in zip([0] + self.sizes[:-1], self.sizes)]
        self.block_size = self.block_sizes[0] if len(set(self.block_sizes)) == 1 else None

    def forward(self, x):
        if len(self.block_sizes) == 1:
            return F.layer_norm(x, (self.sizes[0],), self.weight, self.bias, self.eps)
        if self.block_size is not None:  # equal blocks: one reshaped layer_norm
            blocks = x.unflatten(-1, (-1, self.block_size))
            return F.layer_norm(blocks, (self.block_size,), eps=self.eps).flatten(-2) * self.weight + self.bias
        # ragged blocks (the doubling series: 8, 8, 16, 32, ...): one fused layer_norm per block
        blocks = zip(x.split(self.block_sizes, -1), self.weight.split(self.block_sizes), self.bias.split(self.block_sizes))
        return torch.cat([F.layer_norm(block, (block.size(-1),), w, b, self.eps) for block, w, b in blocks], -1)

    def sliced_parameters(self, index):
        size = self.sizes[index]
        return {"weight": self.weight[:size], "bias": self.bias[:size]}

    def extra_repr(self):
        return f"sizes={self.sizes}, eps={self.eps}"
