"""Eq. 14 of fMRLRec (arXiv 2409.16627): the cross-entropy of the nested scores summed over sizes,
fused and chunked so that all sizes together cost about one full-size cross-entropy.

The size-m scores are ``h[:, :m] · E[:, :m]ᵀ`` (eq. 13). Over the blocks ``M[j-1]:M[j]`` they are
running sums of block products, so one pass over the blocks yields every size's scores; the
gradient of block j collects the score gradients of all sizes m >= M[j] (a suffix sum). Rows are
processed in chunks, so the K score matrices of a chunk stay in cache and the [N, n_items] score
matrices of the whole batch are never stored.
"""

import torch

ROWS_PER_CHUNK = 32


def _blocks(sizes):
    return list(zip([0] + list(sizes[:-1]), sizes))


def _chunk_scores(hidden, table_t, sizes):
    """Scores of every size for the rows of ``hidden``: a list of K [rows, n_items] tensors."""
    scores, running = [], None
    for a, b in _blocks(sizes):
        block = hidden[:, a:b] @ table_t[a:b] if running is None else torch.addmm(running, hidden[:, a:b], table_t[a:b])
        scores.append(block)
        running = block
    return scores


class NestedCrossEntropy(torch.autograd.Function):
    """``Σ_m mean_i CE(h_i[:m] · E[:, :m]ᵀ, y_i)`` with its gradient, recomputing scores per chunk."""

    @staticmethod
    def forward(ctx, hidden, table, targets, sizes):
        table_t = table.T.contiguous()
        log_normalisers = hidden.new_empty(len(sizes), hidden.size(0))
        total = hidden.new_zeros(())
        for start in range(0, hidden.size(0), ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            chunk_targets = targets[rows, None]
            for k, scores in enumerate(_chunk_scores(hidden[rows], table_t, sizes)):
                log_probs = torch.log_softmax(scores, dim=1)
                log_normalisers[k, rows] = scores[:, 0] - log_probs[:, 0]
                total -= log_probs.gather(1, chunk_targets).sum()
        ctx.save_for_backward(hidden, table_t, targets, log_normalisers)
        ctx.sizes = sizes
        return total / hidden.size(0)

    @staticmethod
    def backward(ctx, grad_output):
        hidden, table_t, targets, log_normalisers = ctx.saved_tensors
        grad_hidden, grad_table_t = torch.zeros_like(hidden), torch.zeros_like(table_t)
        scale = float(grad_output) / hidden.size(0)
        for start in range(0, hidden.size(0), ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            chunk = hidden[rows]
            index = torch.arange(chunk.size(0), device=hidden.device)
            grads = _chunk_scores(chunk, table_t, ctx.sizes)
            for k, scores in enumerate(grads):  # d CE / d scores = softmax - one-hot, in place
                scores.sub_(log_normalisers[k, rows, None]).exp_()
                scores[index, targets[rows]] -= 1.0
            for k in range(len(grads) - 2, -1, -1):  # block k feeds every size >= k
                grads[k] += grads[k + 1]
            for (a, b), grad in zip(_blocks(ctx.sizes), grads):
                grad_hidden[rows, a:b] = torch.mm(grad, table_t[a:b].T).mul_(scale)
                grad_table_t[a:b].addmm_(chunk[:, a:b].T, grad, alpha=scale)
        return grad_hidden, grad_table_t.T, None, None


def nested_cross_entropy(hidden, table, targets, sizes):
    """Eq. 14 for representations ``hidden`` [N, D], item table ``table`` [n_items, D] and
    ``targets`` [N]: the sum over m in ``sizes`` of the mean cross-entropy of the size-m scores."""
    return NestedCrossEntropy.apply(hidden, table, targets, list(sizes))
