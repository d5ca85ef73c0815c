"""Serve an fMRLRec model one event at a time from a cached per-user encoder state.

    rec = Recommender.load("fMRLRec-64.pth")   # a size-m export, a checkpoint, or a model
    state = rec.start([12, 7, 431])            # one pass over the history
    state = rec.update(state, 88)              # one step through every block
    rec.recommend(state, k=10)                 # top-10 internal item ids, seen items excluded
    rec.to_tokens(rec.recommend(state, k=10))  # the dataset's item tokens

The model's encoder (``encoder``) keeps what the next step needs, plus the user representation
after the last event ([D]); ``update`` reads only that state and the new item. LRU: a linear
recurrence, so one state per block ([n_layers, 2D] reals) and an O(1) step whatever the history's
length. Transformer: every block's keys and values of the last ``MAX_ITEM_LIST_LENGTH`` = L events,
so a step is one query against them (O(L·D)), and an event past L items re-encodes the last L.
States are immutable values (``update`` returns a new one), so they can be cached and shared freely.

Scores are those of ``model.full_sort_predict`` on the same sequence (item 0, the padding, is never
recommended). NOTE: ``start`` keeps the last ``MAX_ITEM_LIST_LENGTH`` events, the window the model
is trained and evaluated on; with the LRU, events added by ``update`` beyond that window are still in
the state (decayed by |λ|^age), where a full forward pass over the truncated window would have
dropped them (the Transformer drops them as that pass does).
"""

import numbers
import os
from dataclasses import dataclass

import torch
from torch import nn

from recbole_fmrl.deploy.funnel import FunnelIndex, model_index, shortlist_and_rerank
from recbole_fmrl.data.seen import exclude_seen as exclude_seen_items
from recbole_fmrl.deploy.trained import item_tokens as dataset_item_tokens
from recbole_fmrl.deploy.trained import load_trained
from recbole_fmrl.errors import PluginError
from recbole_fmrl.model.layers import check_size
from recbole_fmrl.model.protocol import eval_size, is_stateful, nested_sizes


@dataclass(frozen=True)
class UserState:
    """What ``Recommender`` keeps per user (or per batch of users).

    ``encoder_state``: what the encoder's ``step`` continues from after the last event (LRU: every
    block's recurrent state, [n_layers, B, 2D]; Transformer: an ``AttentionState``, the key/value cache);
    ``hidden``: user representation after the last event, [B, D];
    ``seen``: per user, the events so far as a persistent linked list ``(item, rest)`` (O(1) append,
    shared between a state and its updates), newest first; ``None`` when empty;
    ``length``: per user, the number of events;
    ``single``: True for a one-user state (``start``), whose results are not batched.
    """

    encoder_state: object
    hidden: torch.Tensor
    seen: tuple
    length: tuple
    single: bool

    @property
    def lru(self):
        """The LRU encoder's ``encoder_state``, [n_layers, B, 2D]."""
        return self.encoder_state

    @property
    def batch_size(self):
        return self.hidden.size(0)

    def seen_items(self, user=0):
        """The events of ``user`` in chronological order."""
        items, node = [], self.seen[user]
        while node is not None:
            items.append(node[0])
            node = node[1]
        return items[::-1]


class Recommender:
    """Top-k next-item recommendation from an fMRLRec model with per-user recurrent states.

    ``size`` (default: the model's ``eval_size``) is the nested size scored, like ``eval_size`` for
    ``full_sort_predict``. Serving a small size from the full model still runs the full-size blocks:
    export the size-m model (``python -m recbole_fmrl.deploy.export``) to pay only for size m.
    """

    def __init__(self, model, item_tokens=None, size=None, device=None):
        if not is_stateful(model):
            raise PluginError(f"{type(model).__name__} cannot be served recurrently: it keeps no encoder state (use fMRLRec)")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.size = check_size(size if size is not None else eval_size(model, model.hidden_size),
                               nested_sizes(model) or [model.hidden_size])
        self.max_length = int(model.max_seq_length)
        self.item_tokens = list(item_tokens) if item_tokens is not None else None
        self._token_ids = None
        self._funnel_indexes = {}  # (size, kind) -> FunnelIndex
        with torch.inference_mode():
            # The catalogue's representations, computed once and stored transposed, [m, n_items]: scoring
            # one user is then a contiguous vector-matrix product (faster on CPU than against Eᵀ).
            self.item_table_t = model.item_table()[:, : self.size].T.contiguous()
        self.n_items = self.item_table_t.size(1)

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, source, dataset=None, size=None, device="cpu"):
        """A Recommender from a size-m export or training checkpoint (path or loaded dict), or a model.

        Files are read with ``torch.load(weights_only=True)`` (no code runs). The model is rebuilt
        from the stored model name, dataset name and config overrides (read as data); its item
        features and token list come from ``dataset`` (a RecBole dataset of the plugin) when given,
        else from the dataset named in the file, which is loaded as for training (its files must be
        present). A file whose run does not fit that dataset (other items, item order or features)
        is refused with one line.
        """
        if isinstance(source, nn.Module):
            return cls(source, item_tokens=dataset_item_tokens(dataset), size=size, device=device)
        from recbole_fmrl.checkpoint import check_format, read_checkpoint

        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            source = read_checkpoint(path)
        else:
            path = "the given checkpoint"
            check_format(source, path)
        _, model, dataset = load_trained(source, path, dataset)
        return cls(model, item_tokens=dataset_item_tokens(dataset), size=size, device=device)

    # ------------------------------------------------------------------------------------ states
    @torch.inference_mode()
    def start(self, history):
        """State of one user after ``history`` (internal item ids, oldest first): one pass of the encoder."""
        return self._start([history], single=True)

    @torch.inference_mode()
    def start_many(self, histories):
        """States of several users at once (ragged histories are right-padded like RecBole's)."""
        return self._start(histories, single=False)

    @torch.inference_mode()
    def update(self, state, item):
        """The state after one more event: ``item`` (an int for a one-user state, else one per user).

        One step through every block; touches only ``state`` and the item (LRU: O(1); Transformer:
        O(L) against the cached keys and values, re-encoding the last L events past L).
        """
        items = [item] if state.single else item
        items = torch.as_tensor(items, dtype=torch.long).reshape(-1)
        if items.numel() != state.batch_size:
            raise ValueError(f"update needs one item per user ({state.batch_size}), got {items.numel()}")
        self._check_ids(items)
        listed = items.tolist()
        hidden, encoder_state = self.model.step(items.to(self.device), state.encoder_state)
        return UserState(
            encoder_state=encoder_state,
            hidden=hidden,
            seen=tuple((i, node) for i, node in zip(listed, state.seen)),
            length=tuple(n + 1 for n in state.length),
            single=state.single,
        )

    # ---------------------------------------------------------------------------------- scoring
    @torch.inference_mode()
    def scores(self, state):
        """Scores of every item, [n_items] (one-user state) or [B, n_items]; as ``full_sort_predict``."""
        self._check_started(state)
        scores = self._score(state)
        return scores[0] if state.single else scores

    @torch.inference_mode()
    def recommend(self, state, k=10, exclude_seen=True, funnel=None, index="flat"):
        """Top-``k`` internal item ids, best first: [k] for a one-user state, else [B, k].

        Item 0 (padding) is never recommended; with ``exclude_seen`` neither is any item of the
        user's events. When fewer than ``k`` items are left, a one-user result is shorter and a
        batched one is filled with -1, which is padding, not an item (``to_tokens`` leaves it out).

        ``funnel=(m, K)``: Matryoshka funnel retrieval (``recbole_fmrl.deploy.funnel``): score every item at
        size m through ``index`` (a kind among ``flat``, ``hnsw``, ``ivf``, built once by
        :meth:`funnel_index`, or a loaded :class:`FunnelIndex`), keep the top K, rerank them at the
        served size. With K covering the catalogue this equals exact scoring.
        """
        self._check_started(state)
        if funnel is not None:
            return self._recommend_funnel(state, k, exclude_seen, funnel, index)
        scores = self._score(state)
        scores[:, 0] = float("-inf")
        if exclude_seen:
            exclude_seen_items(scores, self._histories(state))
        values, top = torch.topk(scores, min(k, self.n_items), dim=1)
        if state.single:
            return top[0, : int(torch.isfinite(values[0]).sum())]
        return top.masked_fill_(~torch.isfinite(values), -1)

    # ----------------------------------------------------------------------------------- funnel
    def funnel_index(self, size, kind="flat", **options):
        """The faiss index of the size-``size`` prefix of the cached item table, built on first use
        (``options``: ``FunnelIndex.build``'s) and kept per (size, kind); ``.save(path)`` writes it."""
        key = (int(size), kind)
        if key not in self._funnel_indexes:
            self._funnel_indexes[key] = model_index(self.model, self.item_tokens, size, kind, self.size, **options)
        return self._funnel_indexes[key]

    def load_funnel_index(self, path):
        """Use the index saved at ``path`` for its (size, kind); refused unless built for this catalogue."""
        index = FunnelIndex.load(path, self.item_tokens)
        if index.n_items != self.n_items or index.size > self.size:
            raise PluginError(f"funnel index {path} (size {index.size}, {index.n_items} items) does not fit this "
                              f"model (size {self.size}, {self.n_items} items)")
        self._funnel_indexes[(index.size, index.kind)] = index
        return index

    def _recommend_funnel(self, state, k, exclude_seen, funnel, index):
        size, shortlist = (int(v) for v in funnel)
        if not isinstance(index, FunnelIndex):
            index = self.funnel_index(size, index)
        elif index.size != size or index.n_items != self.n_items:
            raise PluginError(f"the given index is of size {index.size} over {index.n_items} items, not the "
                              f"funnel's size {size} over this model's {self.n_items}")
        exclude = self._histories(state) if exclude_seen else None
        candidates, scores = shortlist_and_rerank(
            state.hidden[:, : self.size], self.model.item_table()[:, : self.size], index, shortlist, exclude
        )
        missing = min(k, self.n_items) - scores.size(1)  # the shortlist is narrower than k: as many columns as exact
        if missing > 0:
            candidates = torch.nn.functional.pad(candidates, (0, missing), value=-1)
            scores = torch.nn.functional.pad(scores, (0, missing), value=float("-inf"))
        values, order = torch.topk(scores, min(k, scores.size(1)), dim=1)
        top = candidates.gather(1, order)
        if state.single:
            return top[0, : int(torch.isfinite(values[0]).sum())]
        return top.masked_fill_(~torch.isfinite(values), -1)

    # ----------------------------------------------------------------------------------- tokens
    def to_tokens(self, item_ids):
        """The dataset's item tokens of internal ids (an id, any nesting of lists, or a tensor).

        Padding is never an item: the -1 that fills a batched ``recommend`` row with fewer than ``k``
        items left (and id 0) is left out of a list, so each row holds only real items and may be
        shorter than ``k``; a single padding id gives None. An id past the catalogue is an error.
        """
        if self.item_tokens is None:
            raise PluginError("this Recommender has no item token list (load it with its dataset)")
        if isinstance(item_ids, torch.Tensor):
            item_ids = item_ids.tolist()
        if isinstance(item_ids, numbers.Integral):
            if item_ids < 1:
                return None
            if item_ids >= len(self.item_tokens):
                raise PluginError(f"item id {item_ids} is not in the catalogue (ids 1 to {len(self.item_tokens) - 1})")
            return self.item_tokens[item_ids]
        return [token for token in map(self.to_tokens, item_ids) if token is not None]

    def to_ids(self, tokens):
        """Internal ids of item tokens (a token or a list of them)."""
        if self.item_tokens is None:
            raise PluginError("this Recommender has no item token list (load it with its dataset)")
        if self._token_ids is None:
            self._token_ids = {token: i for i, token in enumerate(self.item_tokens)}
        if isinstance(tokens, str):
            if tokens not in self._token_ids:
                raise PluginError(f"unknown item token {tokens!r}")
            return self._token_ids[tokens]
        return [self.to_ids(t) for t in tokens]

    # --------------------------------------------------------------------------------- internals
    @staticmethod
    def _histories(state):
        return [state.seen_items(user) for user in range(state.batch_size)]

    def _score(self, state):
        return state.hidden[:, : self.size] @ self.item_table_t  # [B, n_items]

    def _start(self, histories, single):
        histories = [list(h)[-self.max_length :] for h in histories]
        batch = len(histories)
        if batch == 0:
            raise ValueError("no histories given")
        lengths = [len(h) for h in histories]
        width = max(max(lengths), 1)
        item_seq = torch.zeros(batch, width, dtype=torch.long)
        for user, history in enumerate(histories):
            if history:
                item_seq[user, : len(history)] = torch.as_tensor(history, dtype=torch.long)
        self._check_ids(torch.cat([item_seq[user, :n] for user, n in enumerate(lengths)]))
        item_seq = item_seq.to(self.device)
        hidden, encoder_state = self._scan(item_seq, torch.as_tensor(lengths, device=self.device))
        seen = []
        for history in histories:
            node = None
            for item in history:
                node = (int(item), node)
            seen.append(node)
        return UserState(encoder_state=encoder_state, hidden=hidden, seen=tuple(seen), length=tuple(lengths),
                         single=single)

    def _scan(self, item_seq, lengths):
        """Hidden output and the encoder's state at each user's last event, from ONE pass of the
        encoder (it returns its states, which ``state_after`` turns into what ``step`` continues from)."""
        encoded, states = self.model.encode(item_seq, return_state=True)  # [B, L, D], the states
        rows = torch.arange(item_seq.size(0), device=self.device)
        hidden = encoded[rows, (lengths - 1).clamp_min(0)]
        hidden[lengths == 0] = float("nan")  # no events: no representation to score yet
        return hidden, self.model.state_after(states, lengths)

    def _check_ids(self, items):
        if items.numel() and (int(items.min()) < 1 or int(items.max()) >= self.n_items):
            raise PluginError(f"item ids must be internal ids in [1, {self.n_items - 1}]")

    @staticmethod
    def _check_started(state):
        if any(n == 0 for n in state.length):
            raise PluginError("a user has no events yet: update the state with one before recommending")

