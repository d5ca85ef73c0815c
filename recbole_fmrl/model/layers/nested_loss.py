"""Eq. 14 of fMRLRec (arXiv 2409.16627): the cross-entropy of the nested scores summed over sizes,
fused and chunked so that all sizes together cost about one full-size cross-entropy.

The size-m scores are ``h[:, :m] · E[:, :m]ᵀ`` (eq. 13). Over the blocks ``M[j-1]:M[j]`` they are
running sums of block products, so one pass over the blocks yields every size's scores; the
gradient of block j collects the score gradients of all sizes m >= M[j] (a suffix sum). Rows are
processed in chunks, so the K score matrices of a chunk stay in cache and the [N, n_items] score
matrices of the whole batch are never stored. The loss is the last operation of a training step,
so the gradients are computed in the same pass as the loss (softmax − one-hot, while the chunk's
scores are in cache) and the backward pass only scales them: no score is computed twice.

Each size's softmax is one fused ``torch.softmax`` (one exponential per score, the row kept in
cache), and its cross-entropy is read off it, −log p(target); a row whose target probability
underflows (its score far below the row's largest) takes the exact log-sum-exp instead. What the
sizes cannot share is one softmax over the catalogue each: |M| exponentials per score.
"""

import torch

ROWS_PER_CHUNK = 32


def _blocks(sizes):
    return list(zip([0] + list(sizes[:-1]), sizes))


def _target_nll(probs, scores, rows, targets):
    """Σ_i −log ``probs[i, targets[i]]`` (the softmax of ``scores``); a row whose target probability is
    below the smallest normal float (inexact or 0) takes log-sum-exp(scores) − its target's score."""
    picked = probs[rows, targets]
    nll = picked.log().neg_()
    low = picked < torch.finfo(probs.dtype).tiny
    if low.any():
        nll[low] = torch.logsumexp(scores[low], dim=1) - scores[rows[low], targets[low]]
    return nll.sum()


class NestedCrossEntropy(torch.autograd.Function):
    """``Σ_m c_m mean_i CE(h_i[:m] · E[:, :m]ᵀ, y_i)``; its gradients are computed by ``forward``."""

    @staticmethod
    def forward(ctx, hidden, table, targets, sizes, weights, seen):
        table_t = table.T.contiguous()
        grad_hidden, grad_table_t = torch.empty_like(hidden), torch.zeros_like(table_t)
        total = hidden.new_zeros(())
        for start in range(0, hidden.size(0), ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            chunk, chunk_targets = hidden[rows], targets[rows]
            chunk_seen = None if seen is None else seen[rows]
            index = torch.arange(chunk.size(0), device=hidden.device)
            scores, grads = None, []  # scores: the running size-m scores of the chunk
            for (a, b), weight in zip(_blocks(sizes), weights):
                if scores is None:
                    scores = chunk[:, a:b] @ table_t[a:b]
                    if chunk_seen is not None:  # left out of every size's softmax: -inf stays -inf
                        scores.scatter_(1, chunk_seen, float("-inf"))
                else:
                    scores.addmm_(chunk[:, a:b], table_t[a:b])
                probs = torch.softmax(scores, dim=1)
                total += weight * _target_nll(probs, scores, index, chunk_targets)
                probs[index, chunk_targets] -= 1.0  # d CE / d scores = softmax − one-hot
                if weight != 1.0:
                    probs.mul_(weight)
                grads.append(probs)
            for k in range(len(grads) - 2, -1, -1):  # block k feeds every size >= k
                grads[k] += grads[k + 1]
            for (a, b), grad in zip(_blocks(sizes), grads):
                grad_hidden[rows, a:b] = grad @ table_t[a:b].T
                grad_table_t[a:b].addmm_(chunk[:, a:b].T, grad)
        ctx.save_for_backward(grad_hidden, grad_table_t)
        return total / hidden.size(0)

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_table_t = ctx.saved_tensors
        scale = grad_output / grad_hidden.size(0)
        return grad_hidden * scale, (grad_table_t * scale).T, None, None, None, None


def nested_cross_entropy(hidden, table, targets, sizes, weights=None, seen=None):
    """Eq. 14 for representations ``hidden`` [N, D], item table ``table`` [n_items, D] and
    ``targets`` [N]: the sum over m in ``sizes`` of the mean cross-entropy of the size-m scores,
    each weighted by ``weights`` (MRL's relative importance c_m; None = 1 for every size, the paper).
    ``seen`` [N, L]: items left out of each row's softmax (never its target)."""
    weights = [1.0] * len(sizes) if weights is None else [float(w) for w in weights]
    return NestedCrossEntropy.apply(hidden, table, targets, list(sizes), weights, seen)


def sampled_cross_entropy(hidden, table, targets, negatives, sizes=None, weights=None, bias=None, seen=None):
    """Sampled softmax: the CE of each row's target against sampled negative items only.

    ``negatives``: item ids [S] shared by every row, or [N, S] per row. Row i's logits are
    ``[s(y_i), s(n_1), …, s(n_S)]`` with s(j) = ``hidden_i · table_j`` (+ ``bias_j``); a negative
    equal to the row's target is masked out, so negatives that are the whole catalogue give the full
    CE. With ``sizes`` (eq. 14 over the sampled columns): the sum over m of ``weights[m]`` × the CE
    of the size-m scores ``hidden_i[:m] · table_j[:m]`` (running sums over the blocks
    ``sizes[k-1]:sizes[k]``, as in :func:`nested_cross_entropy`). A negative in the row's ``seen``
    items [N, L] is masked out too.
    """
    sizes = [hidden.size(1)] if sizes is None else list(sizes)
    weights = [1.0] * len(sizes) if weights is None else [float(w) for w in weights]
    positives, sampled = table[targets], table[negatives]
    blocks = []
    for a, b in _blocks(sizes):
        negative_scores = (hidden[:, a:b] @ sampled[:, a:b].T if negatives.dim() == 1
                           else torch.einsum("nd,nsd->ns", hidden[:, a:b], sampled[:, :, a:b]))
        blocks.append(torch.cat([(hidden[:, a:b] * positives[:, a:b]).sum(dim=1, keepdim=True), negative_scores], 1))
    logits = torch.stack(blocks).cumsum(dim=0)  # [K, N, 1 + S]: the scores at every size
    negatives = negatives.expand(len(targets), -1)
    if bias is not None:
        logits = logits + torch.cat([bias[targets].unsqueeze(1), bias[negatives]], dim=1)
    left_out = negatives == targets[:, None]
    if seen is not None:
        left_out = left_out | (negatives.unsqueeze(2) == seen.unsqueeze(1)).any(dim=2)
    masked = torch.cat([torch.zeros_like(targets, dtype=torch.bool).unsqueeze(1), left_out], 1)
    logits = logits.masked_fill(masked, float("-inf"))
    zeros = torch.zeros_like(targets)
    return sum(w * torch.nn.functional.cross_entropy(size_logits, zeros) for w, size_logits in zip(weights, logits))
