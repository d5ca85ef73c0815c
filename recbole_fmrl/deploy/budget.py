"""Which nested size fits a latency budget on this machine: measure every size of a trained fMRLRec.

    python -m recbole_fmrl.deploy.budget saved/fMRLRec-<time>.pth --latency_ms=20 [--users=U] [--device=cpu|cuda]
        [--k=K] [--funnel_k=K] [--index=hnsw|ivf|flat] [--memory_mb=MB] [--warmup=W] [--repeats=R]

For every size m in M it serves the standalone size-m model (what ``recbole_fmrl.deploy.export`` writes)
and times top-k for a batch of ``--users`` users (``Recommender.recommend``: scoring the catalogue
and top-k from cached user states; median after warm-up), and for every m < D the Matryoshka funnel
of the full model (shortlist ``--funnel_k`` items at size m through a ``--index`` faiss index,
rerank at D; the index is built once, its build time is shown apart). Memory: ``resident`` is what
the deployment holds (weights, buffers, the cached item table, the index), ``peak`` what one top-k
call allocates on top (CUDA: the allocator's peak; CPU: the peak of torch's allocations).
It prints a table, then the largest exact size within the budget with that size's test NDCG@10
from the training run's ``<checkpoint>.results.json``.
"""

import json
import os
import random
import statistics
import time

import torch

from recbole_fmrl.deploy.funnel import INDEX_KINDS
from recbole_fmrl.errors import PluginError, main_guarded
from recbole_fmrl.flags import FlagParser
from recbole_fmrl.model.protocol import nested_sizes

MIB = 2**20


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_many(fns, device, warmup, repeats):
    """Time several functions that are compared with each other, interleaved round-robin.

    Each gets ``warmup`` untimed runs, then ``repeats`` timed samples; a sample is the third of three
    consecutive calls (two warm ones first, as ``torch.utils.benchmark.Timer.timeit(1)`` does), timed
    by the wall clock and by the process's CPU clock (CUDA synchronised around it). The rounds
    alternate between the functions (rotating which goes first), so a slow phase of a shared machine
    hits all of them alike. Returns ``{name: {median_s, min_s, max_s, cpu_median_s, ...}}`` (wall
    seconds; ``cpu_median_s``: with one thread the call's compute whatever else the machine runs,
    meaningless for CUDA work).
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    synchronize(device)
    samples, cpu_samples = {name: [] for name in names}, {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            for _ in range(2):
                fns[name]()
            synchronize(device)
            started, cpu_started = time.perf_counter(), time.process_time()
            fns[name]()
            synchronize(device)
            samples[name].append(time.perf_counter() - started)
            cpu_samples[name].append(time.process_time() - cpu_started)
    return {
        name: {
            "median_s": statistics.median(times),
            "min_s": min(times),
            "max_s": max(times),
            "cpu_median_s": statistics.median(cpu_samples[name]),
            "repeats": repeats,
            "warmup": warmup,
        }
        for name, times in samples.items()
    }


def pick_size(rows, latency_ms, memory_mb=None):
    """The exact-scoring row of the largest size whose latency (and resident memory, if
    ``memory_mb`` is given) is within budget; None when no size fits. Funnel rows are not picked:
    their quality is not in the training run's per-size results."""
    fitting = [
        row for row in rows
        if row["mode"] == "exact" and row["latency_ms"] <= latency_ms
        and (memory_mb is None or row["resident_mb"] <= memory_mb)
    ]
    return max(fitting, key=lambda row: row["size"], default=None)


def storage_bytes(tensors):
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def transient_peak_bytes(fn):
    """Highest net growth of torch's CPU allocations while ``fn()`` runs (profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    )
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return peak


def peak_working_bytes(fn, device):
    """Memory one call of ``fn`` allocates on top of what is held: the CUDA allocator's peak, or on
    CPU the peak of torch's allocations (:func:`transient_peak_bytes`; faiss's small result buffers
    are not seen)."""
    if device.type != "cuda":
        return transient_peak_bytes(fn)
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def per_size_ndcg(checkpoint_path, checkpoint):
    """{size: test NDCG@10} from the training run's ``.results.json`` (beside the checkpoint, or beside
    the export's source checkpoint); ({}, why) when there is none."""
    source = checkpoint.get("source_checkpoint") or checkpoint_path
    path = (source[: -len(".pth")] if source.endswith(".pth") else source) + ".results.json"
    if not os.path.isfile(path):
        return {}, f"no per-size results ({path} not found)"
    with open(path, encoding="utf-8") as f:
        sizes = json.load(f).get("sizes") or {}
    return {int(m): metrics.get("ndcg@10") for m, metrics in sizes.items()}, path


def random_histories(n_users, length, n_items, seed=0):
    """``n_users`` histories of ``length`` distinct random items (latency does not depend on which)."""
    rng = random.Random(seed)
    return [rng.sample(range(1, n_items), min(length, n_items - 1)) for _ in range(n_users)]


def measure(checkpoint_path, users=256, device="cpu", k=10, funnel_k=200, index="hnsw", warmup=2, repeats=7):
    """Rows ``{mode, size, shortlist, index, latency_ms, resident_mb, peak_mb, build_s}`` for every size."""
    from recbole_fmrl.checkpoint import read_checkpoint
    from recbole_fmrl.deploy.export import export_model
    from recbole_fmrl.deploy.serving import Recommender
    from recbole_fmrl.deploy.trained import load_trained

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PluginError("--device cuda but CUDA is not available")
    checkpoint = read_checkpoint(checkpoint_path)
    _, model, dataset = load_trained(checkpoint, checkpoint_path)
    full = Recommender.load(model, dataset=dataset, device=device)
    sizes = nested_sizes(full.model)
    if not sizes:
        raise PluginError(f"{checkpoint_path}: model {checkpoint['model']} has no nested sizes")
    histories = random_histories(users, full.max_length, full.n_items)
    servers, calls, rows = {}, {}, []
    for size in sizes:
        model = full.model if size == full.size else export_model(full.model, checkpoint, dataset, size)[0]
        rec = servers[size] = Recommender(model, device=device)
        state = rec.start_many(histories)
        calls[("exact", size)] = lambda rec=rec, state=state: rec.recommend(state, k)
        rows.append({"mode": "exact", "size": size, "shortlist": None, "index": None,
                     "resident": storage_bytes([*rec.model.parameters(), *rec.model.buffers(), rec.item_table_t])})
    full_state = full.start_many(histories)
    for size in sizes[:-1]:
        started = time.perf_counter()
        funnel_index = full.funnel_index(size, index)
        build_s = time.perf_counter() - started
        calls[("funnel", size)] = lambda size=size: full.recommend(full_state, k, funnel=(size, funnel_k), index=index)
        rows.append({"mode": "funnel", "size": size, "shortlist": funnel_k, "index": index, "build_s": build_s,
                     "resident": storage_bytes([*full.model.parameters(), *full.model.buffers(), full.item_table_t])
                     + funnel_index.nbytes()})
    times = measure_many(calls, device, warmup, repeats)
    for row in rows:
        key = (row["mode"], row["size"])
        row["latency_ms"] = times[key]["median_s"] * 1000
        row["resident_mb"] = row.pop("resident") / MIB
        row["peak_mb"] = peak_working_bytes(calls[key], device) / MIB
    return rows, checkpoint


def format_rows(rows, ndcg):
    header = f"{'mode':<7}{'m':>6}{'K':>6}  {'index':<6}{'top-k ms':>10}{'resident MB':>13}{'peak MB':>9}  {'test NDCG@10':>12}"
    lines = [header]
    for row in rows:
        quality = ndcg.get(row["size"]) if row["mode"] == "exact" else None
        lines.append(
            f"{row['mode']:<7}{row['size']:>6}{row['shortlist'] or '-':>6}  {row['index'] or '-':<6}"
            f"{row['latency_ms']:>10.2f}{row['resident_mb']:>13.3f}"
            f"{row['peak_mb']:>9.3f}"
            f"  {'-' if quality is None else format(quality, '.4f'):>12}"
        )
    return "\n".join(lines)


def build_parser():
    parser = FlagParser(prog="python -m recbole_fmrl.deploy.budget", description=__doc__)
    parser.add_argument("checkpoint", help="a training checkpoint of fMRLRec (its .results.json beside it)")
    parser.add_argument("--latency_ms", type=float, required=True, help="budget for one top-k call of --users users")
    parser.add_argument("--memory_mb", type=float, default=None, help="budget for the resident memory (default: none)")
    parser.add_argument("--users", type=int, default=256, help="users per top-k call")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--k", type=int, default=10, help="items recommended per user")
    parser.add_argument("--funnel_k", type=int, default=200, help="funnel shortlist K")
    parser.add_argument("--index", choices=INDEX_KINDS, default="hnsw", help="funnel index kind")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls (the median is shown)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("users", "k", "funnel_k", "repeats"):
        if getattr(args, name) < 1:
            raise PluginError(f"--{name} must be at least 1, got {getattr(args, name)}")
    rows, checkpoint = measure(args.checkpoint, args.users, args.device, args.k, args.funnel_k, args.index,
                               args.warmup, args.repeats)
    ndcg, source = per_size_ndcg(args.checkpoint, checkpoint)
    print(f"top-{args.k} for {args.users} users on {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats} after {args.warmup} warm-up")
    print(format_rows(rows, ndcg))
    builds = ", ".join(f"m={r['size']} {r['build_s']:.2f} s" for r in rows if r["mode"] == "funnel")
    if builds:
        print(f"build of the {args.index} funnel indexes (once per model, not in the latency): {builds}")
    budget = f"{args.latency_ms:g} ms" + (f" and {args.memory_mb:g} MB" if args.memory_mb is not None else "")
    best = pick_size(rows, args.latency_ms, args.memory_mb)
    if best is None:
        print(f"no size fits within {budget}")
        return
    quality = ndcg.get(best["size"])
    print(f"largest size within {budget}: m = {best['size']} ({best['latency_ms']:.2f} ms, "
          f"{best['resident_mb']:.1f} MB); test NDCG@10 "
          + (f"{quality:.4f} (from {source})" if quality is not None else f"unknown: {source}"))


if __name__ == "__main__":
    main_guarded(main)
