"""Matryoshka funnel retrieval: shortlist with a size-m prefix through a faiss index, rerank at full size.

"Adaptive retrieval" of Kusupati et al., Matryoshka Representation Learning (NeurIPS 2022): with
nested representations the first m dimensions are a complete low-dimensional representation, so a
cheap size-m search can shortlist K candidates and only those K are scored at the full size D. In
fMRLRec the size-m prefix of the user vector, ``h[:m]``, and of the item table, ``E[:, :m]``, are
exactly the size-m model's representations (paper §3.2), so the shortlist is the size-m model's
top K. Exact when K covers the catalogue; otherwise one size-m search plus K·D per user.

    index = FunnelIndex.build(item_table, size=16, kind="hnsw", item_order_sha256=...)  # or model_index(...)
    index.save("fMRLRec-64.m16-hnsw.faiss")       # + a JSON manifest beside it
    FunnelIndex.load("fMRLRec-64.m16-hnsw.faiss", item_tokens)  # refuses another catalogue
    candidates, scores = shortlist_and_rerank(hidden, item_table, index, shortlist=200)

    python -m recbole_fmrl.deploy.funnel fMRLRec-64.pth --size=16 --index=hnsw   # build and save beside it

Row 0 of the item table (padding) is never indexed, so it is never recommended.
"""

import math
import os

import numpy as np
import torch

from recbole_fmrl.checkpoint import item_order_sha256
from recbole_fmrl.data.atomic_files import manifest_path, read_manifest
from recbole_fmrl.data.seen import seen_mask, seen_pairs
from recbole_fmrl.errors import PluginError, main_guarded
from recbole_fmrl.extras import require
from recbole_fmrl.files import atomic_path, write_json_atomic
from recbole_fmrl.flags import FlagParser
from recbole_fmrl.model.layers import check_size
from recbole_fmrl.model.protocol import nested_sizes

INDEX_KINDS = ("flat", "hnsw", "ivf", "ivfpq")
MANIFEST_FORMAT = "recbole_fmrl funnel index v1"
HNSW_NEIGHBORS = 32  # faiss IndexHNSWFlat's M (links per node); faiss's own examples use 32
IVF_POINTS_PER_LIST = 39  # faiss's k-means wants >= 39 training points per centroid
UNION_SHARE = 8  # rerank through the union of the shortlists when it is at most 1/8 of them


def index_path_beside(model_file, size, kind):
    """Where an index of ``model_file`` is saved by default: ``<file without .pth>.m<size>-<kind>.faiss``."""
    stem = model_file[: -len(".pth")] if model_file.endswith(".pth") else model_file
    return f"{stem}.m{size}-{kind}.faiss"


class FunnelIndex:
    """A faiss inner-product index over the size-``size`` prefix of items 1..n-1 (item 0 is padding).

    ``kind``: ``flat`` (exact ``IndexFlatIP``), ``hnsw`` (``IndexHNSWFlat``, graph search with
    ``ef_search`` candidates, at least K), ``ivf`` (``IndexIVFFlat`` over ``ivf_lists`` k-means
    lists, ``nprobe`` of them visited per query) or ``ivfpq`` (the same lists holding 4-bit product
    codes of each list's residuals, every two coordinates, scanned with SIMD by ``IndexIVFPQFastScan``:
    faster and smaller than ``ivf`` for a little recall, which the exact rerank of the shortlist
    partly recovers; measured in docs/performance.md).
    The approximate kinds index the L2 transform of :func:`_euclidean_transform` (one more
    coordinate), on which they find inner products far better than with faiss's inner-product
    metric (k-means cells and graph neighbours are distance notions).
    """

    def __init__(self, index, size, kind, n_items, item_order_sha256=None, ef_search=None, nprobe=None):
        self.index = index
        self.size = int(size)
        self.kind = kind
        self.n_items = int(n_items)
        self.item_order_sha256 = item_order_sha256
        self.ef_search = ef_search
        self.nprobe = nprobe

    @classmethod
    def build(cls, item_table, size, kind="flat", item_order_sha256=None, ef_search=64, ivf_lists=None,
              nprobe=None, seed=0):
        """Index the first ``size`` columns of ``item_table`` ([n_items, >= size], row 0 = padding).

        ``ivf_lists`` defaults to 4·sqrt(n) (faiss's guideline), at most n/39; ``nprobe`` to
        a sixteenth of the lists.
        """
        if kind not in INDEX_KINDS:
            raise PluginError(f"unknown index kind {kind!r}; choose among {list(INDEX_KINDS)}")
        if not 1 <= size <= item_table.size(1):
            raise PluginError(f"funnel size {size} is outside the item table's width {item_table.size(1)}")
        vectors = _as_faiss_array(item_table[1:, :size])
        n_indexed = vectors.shape[0]
        if kind == "flat":
            index = _faiss().IndexFlatIP(size)
        else:  # graph and k-means partitions are built for distances: search the MIPS-to-L2 transform
            width = size + 1 + (size + 1) % 2 if kind == "ivfpq" else size + 1  # product codes: pairs
            vectors = _euclidean_transform(vectors, width)
            if kind == "hnsw":
                index = _faiss().IndexHNSWFlat(width, HNSW_NEIGHBORS)
            else:
                lists = ivf_lists or max(1, min(round(4 * math.sqrt(n_indexed)), n_indexed // IVF_POINTS_PER_LIST))
                nprobe = nprobe or max(1, lists // 16)
                if kind == "ivf":
                    index = _faiss().IndexIVFFlat(_faiss().IndexFlatL2(width), width, lists)
                else:
                    index = _faiss().IndexIVFPQFastScan(_faiss().IndexFlatL2(width), width, lists, width // 2, 4)
                    index.by_residual = True  # codes of the offset from the list's centroid: far finer
                index.cp.seed = seed
                index.train(vectors)
        index.add(vectors)
        return cls(index, size, kind, item_table.size(0), item_order_sha256,
                   ef_search=ef_search if kind == "hnsw" else None, nprobe=nprobe if kind.startswith("ivf") else None)

    def search(self, queries, shortlist):
        """Item ids of the ``shortlist`` best inner products of ``queries`` ([B, size]), best first,
        as a LongTensor [B, shortlist] on the queries' device; -1 where the index found fewer."""
        shortlist = min(int(shortlist), self.n_items - 1)
        params = None
        if self.kind == "hnsw":
            params = _faiss().SearchParametersHNSW(efSearch=max(self.ef_search, shortlist))
        elif self.kind.startswith("ivf"):
            params = _faiss().SearchParametersIVF(nprobe=self.nprobe)
        queries = _as_faiss_array(queries)
        if self.kind != "flat":  # the transform's query side: zero coordinates
            padding = np.zeros((queries.shape[0], self.index.d - queries.shape[1]), dtype=np.float32)
            queries = np.concatenate([queries, padding], axis=1)
        _, labels = self.index.search(queries, shortlist, params=params)
        ids = torch.from_numpy(labels)
        ids = torch.where(ids >= 0, ids + 1, ids)  # row r of the index is item r + 1
        return ids.to(queries.device)

    def nbytes(self):
        """Size of the serialized index (what it holds in memory, to within faiss's bookkeeping)."""
        return int(_faiss().serialize_index(self.index).nbytes)

    # ------------------------------------------------------------------------------- files
    def save(self, path):
        """Write the index (faiss format) and ``<path>.json``: size, kind, item count, item order hash."""
        if self.item_order_sha256 is None:
            raise PluginError("this index has no item order hash (build it from a model loaded with its dataset)")
        with atomic_path(path) as tmp:
            _faiss().write_index(self.index, tmp)
        manifest = {
            "format": MANIFEST_FORMAT,
            "size": self.size,
            "kind": self.kind,
            "n_items": self.n_items,
            "item_order_sha256": self.item_order_sha256,
            "ef_search": self.ef_search,
            "nprobe": self.nprobe,
            "faiss": _faiss().__version__,
        }
        write_json_atomic(manifest_path(path), manifest)
        return path

    @classmethod
    def load(cls, path, item_tokens):
        """The index saved at ``path``, refused (one line) unless it was built for ``item_tokens``."""
        manifest_file = manifest_path(path)
        if not os.path.isfile(path):
            raise PluginError(f"funnel index not found: {path}")
        try:
            manifest = read_manifest(path)
        except (OSError, ValueError) as err:
            raise PluginError(f"unreadable funnel index manifest {manifest_file}: {err}") from None
        if manifest is None:
            raise PluginError(f"funnel index {path} has no manifest {manifest_file}")
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise PluginError(f"{manifest_file} is not a funnel index manifest ({MANIFEST_FORMAT})")
        if item_tokens is None:
            raise PluginError(f"cannot check {path} against the catalogue: the model has no item token list")
        expected = item_order_sha256(item_tokens)
        if manifest.get("item_order_sha256") != expected:
            raise PluginError(
                f"funnel index {path} was built for another catalogue: item order sha256 "
                f"{str(manifest.get('item_order_sha256'))[:12]}… in {manifest_file}, {expected[:12]}… for this "
                f"model's {len(item_tokens)} items; rebuild it (python -m recbole_fmrl.deploy.funnel)"
            )
        index = _faiss().read_index(path)
        return cls(index, manifest["size"], manifest["kind"], manifest["n_items"], expected,
                   ef_search=manifest.get("ef_search"), nprobe=manifest.get("nprobe"))


def shortlist_and_rerank(hidden, item_table, index, shortlist, exclude=None):
    """The funnel: ``index`` shortlists ``shortlist`` items per user with ``hidden[:, :m]``, then those
    are scored at the full size as ``hidden · item_table[item]``.

    ``hidden``: [B, D]; ``item_table``: [n_items, D] (the same D); ``exclude``: per user, item ids
    never to return (the user's seen items: lists, or a right-padded tensor whose padding excludes
    nothing, :mod:`~recbole_fmrl.data.seen`), skipped before the shortlist is cut at K.
    Returns (candidates [B, W] with -1 for no item, full-size scores [B, W] with -inf there), W ≥ K.
    """
    users = seen_pairs(exclude, hidden.device)[0] if exclude is not None else hidden.new_zeros(0, dtype=torch.long)
    extra = int(torch.bincount(users).max()) if users.numel() else 0
    candidates = index.search(hidden[:, : index.size], shortlist + extra)
    valid = candidates >= 0
    if extra:
        valid &= ~seen_mask(candidates, exclude, index.n_items)
    valid &= valid.cumsum(dim=1) <= shortlist  # the first K that are left, in shortlist order
    scores = rerank(hidden, item_table, candidates.clamp_min(0))
    return candidates.masked_fill(~valid, -1), scores.masked_fill(~valid, float("-inf"))


def rerank(hidden, item_table, candidates):
    """Full-size scores ``hidden[b] · item_table[candidates[b, j]]``, [B, W].

    Each user's rows are gathered and scored on their own (memory-bound, B·W·D reads; one user's
    rows stay in the CPU cache, where one [B, W, D] gather of a large catalogue would not).
    When the users' shortlists overlap much (their union at most 1/:data:`UNION_SHARE` of all
    candidates, e.g. K = 1000 of Beauty's 12,101 items for 256 users) one matrix product with the
    union is cheaper (on one CPU thread the two cost the same near 1/8 at D = 256).
    """
    if candidates.size(0) >= UNION_SHARE:  # the union holds at least W items: below this it never pays
        union, position = torch.unique(candidates, return_inverse=True)
        if UNION_SHARE * union.numel() <= candidates.numel():
            return (hidden @ item_table[union].T).gather(1, position)
    scores = hidden.new_empty(candidates.shape)
    for user in range(candidates.size(0)):
        torch.mv(item_table.index_select(0, candidates[user]), hidden[user], out=scores[user])
    return scores


def _euclidean_transform(vectors, width):
    """Items ``x`` -> ``[x, sqrt(R² - |x|²), 0…]`` (``width`` columns) with R the largest norm
    (Bachrach et al., RecSys 2014): for a query ``[q, 0…]``, ``|q' - x'|² = |q|² + R² - 2 q·x``, so the
    nearest items in L2 are exactly the largest inner products, and L2 indexes (HNSW graphs, k-means
    lists) apply unchanged."""
    squared = np.square(vectors, dtype=np.float64).sum(axis=1)
    transformed = np.zeros((vectors.shape[0], width), dtype=np.float32)
    transformed[:, : vectors.shape[1]] = vectors
    transformed[:, vectors.shape[1]] = np.sqrt(np.maximum(squared.max() - squared, 0.0))
    return transformed


def _faiss():
    """faiss, installed by the extra [serve]."""
    return require("faiss")


def _as_faiss_array(tensor):
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())


def check_funnel_size(model, size, served_size=None):
    """One error line unless ``size`` is one of ``model``'s sizes and at most the size it reranks at
    (``served_size``, default the model's ``eval_size``)."""
    check_size(size, nested_sizes(model), "funnel size")
    served_size = served_size or model.eval_size
    if size > served_size:
        raise PluginError(f"funnel size {size} is larger than the served size {served_size}")


def model_index(model, item_tokens, size, kind="flat", served_size=None, **options):
    """The funnel index of ``model``'s size-``size`` item prefix (``size`` one of its sizes, at most the
    ``served_size`` it reranks at), bound to the catalogue ``item_tokens`` (None: not savable)."""
    check_funnel_size(model, size, served_size)
    model.eval()
    with torch.inference_mode():
        table = model.item_table()
    order = item_order_sha256(item_tokens) if item_tokens is not None else None
    return FunnelIndex.build(table, size, kind, order, **options)


def build_parser():
    parser = FlagParser(prog="python -m recbole_fmrl.deploy.funnel", description=__doc__)
    parser.add_argument("file", help="a training checkpoint or a size-m export")
    parser.add_argument("--size", type=int, required=True, help="the prefix size m that is indexed")
    parser.add_argument("--index", choices=INDEX_KINDS, default="hnsw", help="index kind")
    parser.add_argument("--out", default=None, help="index file (default: beside FILE, <stem>.m<size>-<kind>.faiss)")
    return parser


def main(argv=None):
    from recbole_fmrl.checkpoint import read_checkpoint
    from recbole_fmrl.deploy.trained import load_trained, item_tokens

    args = build_parser().parse_args(argv)
    _, model, dataset = load_trained(read_checkpoint(args.file), args.file)
    index = model_index(model, item_tokens(dataset), args.size, args.index)
    path = index.save(args.out or index_path_beside(args.file, args.size, args.index))
    print(f"wrote {path} and {path}.json ({index.n_items - 1} items, size {args.size}, {args.index})")


if __name__ == "__main__":
    main_guarded(main)
