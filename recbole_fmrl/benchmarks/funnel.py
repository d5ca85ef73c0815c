"""The case funnel_retrieval of ``python -m recbole_fmrl.benchmarks.run``: Matryoshka funnel retrieval against
exact full-size top-k, on a trained fMRLRec (``--checkpoint``; the goals are set for D = 256).

real data        the checkpoint's dataset and test split: NDCG@10 through the funnel (m, K) / exact
                 full-size NDCG@10 (RecBole's evaluator both times; goal >= 0.99 at m = 16, K = 200),
                 and top-10 latency for a batch of real test users through ``Recommender.recommend``.
large catalogue  a catalogue of ``large_items`` synthetic items: features drawn from a Gaussian with the
                 mean and covariance of the dataset's real item features, mapped by the checkpoint's
                 trained item projection (eq. 7); users are the model's representations of real test
                 users. Funnel (m = 32, approximate index) top-10 vs exact full-size top-10: the share of
                 the exact top-10 found (goal >= 0.95) and exact / funnel time per batch of users (goal
                 >= 5), timed side by side; the index is built once, its build time reported apart. For
                 reference, the same funnel through another approximate index (timed in the same rounds),
                 through an exact size-m search (the most any index can give at that K), and through
                 the approximate index at other K.
"""

import gc
import time
from dataclasses import dataclass, field

import torch

from recbole_fmrl.deploy.funnel import FunnelIndex, shortlist_and_rerank
from recbole_fmrl.extras import require

GENERATION_CHUNK = 65536  # synthetic items projected per step (bounds the feature memory)


@dataclass
class FunnelSettings:
    real_funnels: list = field(default_factory=lambda: [(16, 200, "flat"), (16, 200, "hnsw"), (16, 1000, "flat"),
                                                         (16, 2000, "flat"), (32, 200, "flat"), (32, 1000, "flat"),
                                                         (64, 200, "flat")])
    real_goal: tuple = (16, 200, "flat")  # the setting: NDCG@10 within 1 % of exact
    users: int = 256
    large_items: int = 1_000_000
    large_funnel: tuple = (32, 2000, "ivfpq")  # m, K, approximate index
    large_other_index: str = "ivf"  # the same funnel through this index too (info)
    large_shortlists: tuple = (200, 500, 1000, 5000)  # other K: the share of the exact top-10 found (info)
    ivf_nprobe: int = 500  # lists visited of the 4,000 of 1M items (None: FunnelIndex's default, a sixteenth)
    repeats: int = 5


FUNNEL_PRESETS = {
    "full": FunnelSettings(),
    "quick": FunnelSettings(repeats=3),
    "tiny": FunnelSettings(real_funnels=[(4, 10, "flat"), (8, 10, "hnsw")], real_goal=(8, 10, "hnsw"), users=8,
                           large_items=5000, large_funnel=(4, 50, "ivfpq"), large_shortlists=(20,), ivf_nprobe=None,
                           repeats=2),
}


def funnel_case(bench, checkpoint_path, preset, make_row):
    """Add the rows of funnel_retrieval to ``bench`` (a ``recbole_fmrl.benchmarks.run.Bench``); ``make_row`` is its row()."""
    from recbole_fmrl.checkpoint import read_checkpoint
    from recbole_fmrl.deploy.evaluate import funnel_full_sort_predict
    from recbole_fmrl.deploy.serving import Recommender
    from recbole_fmrl.deploy.trained import item_tokens, load_trained_run
    from recbole_fmrl.trainer import get_trainer

    s = FUNNEL_PRESETS[preset]
    require("faiss").omp_set_num_threads(torch.get_num_threads())  # the same threads as torch's exact scoring
    checkpoint = read_checkpoint(checkpoint_path)
    config, model, _, (_, _, test_data) = load_trained_run(checkpoint, checkpoint_path)
    model = model.to(bench.device).eval()
    dataset = test_data._dataset
    tokens = item_tokens(dataset)
    d = model.hidden_size
    histories = first_test_histories(model, test_data, s.users)
    users = len(histories)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    # ---------------------------------------------------------------- real data: quality and latency
    exact_ndcg = dict(trainer.evaluate(test_data, load_best_model=False))["ndcg@10"]
    rec = Recommender(model, item_tokens=tokens, device=bench.device)
    state = rec.start_many(histories)
    calls, build_s = {"exact": lambda: rec.recommend(state, 10)}, {}
    for m, shortlist, kind in s.real_funnels:
        started = time.perf_counter()
        index = rec.funnel_index(m, kind)
        build_s[(m, kind)] = time.perf_counter() - started
        calls[(m, shortlist, kind)] = lambda m=m, shortlist=shortlist, kind=kind: rec.recommend(
            state, 10, funnel=(m, shortlist), index=kind)
    times = bench.time_many(calls, repeats=s.repeats)
    exact_ms = times["exact"]["median_s"] * 1000
    name = checkpoint["dataset"]
    for m, shortlist, kind in s.real_funnels:
        model.full_sort_predict = funnel_full_sort_predict(model, rec.funnel_index(m, kind), shortlist)
        ndcg = dict(trainer.evaluate(test_data, load_best_model=False))["ndcg@10"]
        del model.full_sort_predict  # back to the class's exact scoring
        funnel_ms = times[(m, shortlist, kind)]["median_s"] * 1000
        goal = (">=", 0.99) if (m, shortlist, kind) == tuple(s.real_goal) else None
        bench.add(make_row("funnel_retrieval", f"{name} test NDCG@10 funnel m={m} K={shortlist} {kind} / exact D={d}",
                           ndcg / exact_ndcg if exact_ndcg else float("nan"), goal, m=m, K=shortlist, index=kind,
                           D=d, ndcg10_funnel=ndcg, ndcg10_exact=exact_ndcg, users=users,
                           top10_ms_funnel=round(funnel_ms, 3), top10_ms_exact=round(exact_ms, 3),
                           index_build_s=round(build_s[(m, kind)], 3), n_items=rec.n_items,
                           checkpoint=checkpoint_path))
        bench.add(make_row("funnel_retrieval", f"  {name} top-10 latency funnel m={m} K={shortlist} {kind} / exact ({users} users)",
                           funnel_ms / exact_ms, m=m, K=shortlist, index=kind, D=d,
                           top10_ms_funnel=round(funnel_ms, 3), top10_ms_exact=round(exact_ms, 3)))
    hidden = state.hidden[:, :d]
    del rec, state, calls, trainer
    gc.collect()

    # ------------------------------------------------------------------- a large synthetic catalogue
    m, shortlist, kind = s.large_funnel
    started = time.perf_counter()
    table = synthetic_item_table(model, s.large_items, bench.device)  # [N + 1, D], row 0 padding
    generate_s = time.perf_counter() - started
    table_t = table.T.contiguous()  # as Recommender scores: user vectors times the transposed table
    indexes, build_s = {}, {}
    for name in (kind, s.large_other_index):
        started = time.perf_counter()
        indexes[name] = FunnelIndex.build(table, m, name, nprobe=s.ivf_nprobe)
        build_s[name] = time.perf_counter() - started
    index = indexes[kind]

    @torch.inference_mode()
    def exact():
        scores = hidden @ table_t
        scores[:, 0] = float("-inf")
        return torch.topk(scores, 10, dim=1).indices

    @torch.inference_mode()
    def funnel(shortlist=shortlist, index=index):
        candidates, scores = shortlist_and_rerank(hidden, table, index, shortlist)
        return candidates.gather(1, torch.topk(scores, 10, dim=1).indices)

    exact_top = exact()
    calls = {"exact": exact, **{name: lambda i=i: funnel(index=i) for name, i in indexes.items()}}
    times = bench.time_many(calls, repeats=s.repeats)
    t_exact = times["exact"]["median_s"]
    items = f"{s.large_items:,} items"
    for name, i in indexes.items():
        found, t_funnel = found_share(exact_top, funnel(index=i)), times[name]["median_s"]
        details = {"m": m, "K": shortlist, "index": name, "D": d, "n_items": s.large_items, "users": users,
                   "exact_ms": round(t_exact * 1000, 3), "funnel_ms": round(t_funnel * 1000, 3),
                   "index_build_s": round(build_s[name], 2), "catalogue_generation_s": round(generate_s, 2),
                   "index_mb": round(i.nbytes() / 2**20, 1), "nprobe": i.nprobe, "ef_search": i.ef_search,
                   "top10_found": found, "timings": times, "checkpoint": checkpoint_path}
        found_goal, speed_goal, indent = ((">=", 0.95), (">=", 5.0), "") if name == kind else (None, None, "  ")
        bench.add(make_row("funnel_retrieval", f"{indent}{items}: exact top-10 found by funnel m={m} K={shortlist} {name}, D={d}",
                           found, found_goal, **details))
        bench.add(make_row("funnel_retrieval", f"{indent}{items}: speed-up exact D={d} / funnel m={m} K={shortlist} {name} "
                                f"({users} users)", t_exact / t_funnel, speed_goal, **details))
    flat = FunnelIndex.build(table, m, "flat")  # the same funnel through an exact size-m search: its ceiling
    bench.add(make_row("funnel_retrieval", f"  {items}: exact top-10 found by funnel m={m} K={shortlist} flat (exact search)",
                       found_share(exact_top, funnel(shortlist, flat)), m=m, K=shortlist, index="flat", D=d,
                       n_items=s.large_items, users=users))
    del flat
    for other in s.large_shortlists:
        bench.add(make_row("funnel_retrieval", f"  {items}: exact top-10 found by funnel m={m} K={other} {kind}, D={d}",
                           found_share(exact_top, funnel(other)), m=m, K=other, index=kind, D=d,
                           n_items=s.large_items, users=users))
    del table, table_t, index, indexes
    gc.collect()


def found_share(exact_top, funnel_top):
    """The share of the exact top-k items (rows: users) that the funnel's top-k also holds."""
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact_top, funnel_top)) / exact_top.numel()


def first_test_histories(model, test_data, n_users):
    """Histories (internal item ids, oldest first) of the first ``n_users`` users of the test split."""
    histories = []
    for interaction, *_ in test_data:
        sequences, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
        histories += [seq[:n].tolist() for seq, n in zip(sequences, lengths.tolist())]
        if len(histories) >= n_users:
            break
    return histories[:n_users]


@torch.inference_mode()
def synthetic_item_table(model, n_items, device, seed=0):
    """Item representations of ``n_items`` synthetic items (plus the padding row 0): features drawn
    from N(mean, covariance) of the model's real item features, through its trained projection."""
    encoder = model.item_encoder
    if encoder.projection is None or encoder.id_embedding is not None:
        raise SystemExit("error: the funnel case needs an fMRLRec with feature modalities only (no 'id'), "
                         "so that synthetic items can be projected")
    real = encoder.features[1:].double()
    mean = real.mean(dim=0)
    centred = real - mean
    covariance = centred.T @ centred / (real.size(0) - 1)
    jitter = 1e-6 * covariance.diagonal().mean() * torch.eye(real.size(1), dtype=torch.float64, device=real.device)
    factor = torch.linalg.cholesky(covariance + jitter).float()
    mean = mean.float()
    generator = torch.Generator(device=real.device).manual_seed(seed)
    table = torch.empty(n_items + 1, model.hidden_size, device=device)
    table[0] = encoder.projection.bias  # padding row: projection of zero features (never recommended)
    for start in range(1, n_items + 1, GENERATION_CHUNK):
        rows = min(GENERATION_CHUNK, n_items + 1 - start)
        noise = torch.randn(rows, real.size(1), generator=generator, device=real.device)
        table[start : start + rows] = encoder.projection(mean + noise @ factor.T).to(device)
    return table
