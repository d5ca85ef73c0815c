"""A user's seen items, excluded from what is recommended: the one place where a (padded) history
becomes the (user, item) pairs to exclude, used by exact scoring and by the funnel."""

import torch


def seen_pairs(histories, device=None):
    """``(users, items)``, two LongTensors: every real item of ``histories`` and its user's row.

    ``histories``: per user a list of internal item ids, or a right-padded ``[B, L]`` tensor. Ids
    below 1 are padding (RecBole's 0, or -1 where a shorter row is filled) and never an item, so
    padding never excludes one.
    """
    if isinstance(histories, torch.Tensor):
        items = histories.to(device=device, dtype=torch.long)
        users = torch.arange(items.size(0), device=items.device).unsqueeze(1).expand_as(items)
    else:
        users = torch.tensor([user for user, history in enumerate(histories) for _ in history], dtype=torch.long)
        items = torch.tensor([int(item) for history in histories for item in history], dtype=torch.long)
        users, items = users.to(device), items.to(device)
    real = items >= 1
    return users[real], items[real]


def exclude_seen(scores, histories):
    """``scores`` ([B, n_items]) with -inf at every seen item of ``histories`` (in place)."""
    users, items = seen_pairs(histories, scores.device)
    return scores.index_put_((users, items), scores.new_tensor(float("-inf")))


def seen_mask(candidates, histories, n_items):
    """Boolean [B, W]: True where ``candidates[b, j]`` (item ids, -1 for none) is a seen item of user b."""
    users, items = seen_pairs(histories, candidates.device)
    rows = torch.arange(candidates.size(0), device=candidates.device).unsqueeze(1)
    return torch.isin(rows * n_items + candidates, users * n_items + items) & (candidates >= 1)
