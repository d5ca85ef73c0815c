"""Peak memory of one train step, in a fresh process (used by ``benchmarks.run``, case f).

CPU: torch's allocations are invisible to tracemalloc, so this reports the growth of the process's
peak resident set size (``getrusage`` ru_maxrss) over the first two train steps, after the model,
the batch and the optimizer exist (the step's activations, gradients and AdamW state). CUDA:
``torch.cuda.max_memory_allocated`` over the steps minus what was allocated before them.
The last line printed is the JSON result.
"""

import argparse
import gc
import json
import resource

import torch

from benchmarks.common import SyntheticItems, build_model, random_batch, train_step_fn


def max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, choices=["fMRLRec", "LRURec"])
    parser.add_argument("--hidden-size", type=int, required=True)
    parser.add_argument("--n-items", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    items = SyntheticItems(args.n_items)
    model, config = build_model(args.model, items, device, hidden_size=args.hidden_size)
    batch = random_batch(model, args.n_items, args.batch_size, args.seq_len, device)
    step = train_step_fn(model, config, batch)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(2):
            step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        result = {"step_peak_mb": (peak - before) / 2**20, "before_mb": before / 2**20, "peak_mb": peak / 2**20,
                  "method": "torch.cuda.max_memory_allocated - memory_allocated before the steps"}
    else:
        before = max_rss_mb()
        for _ in range(2):
            step()
        peak = max_rss_mb()
        result = {"step_peak_mb": peak - before, "before_mb": before, "peak_mb": peak,
                  "method": "peak RSS growth (getrusage ru_maxrss) over 2 train steps, fresh process"}
    result.update(model=args.model, hidden_size=args.hidden_size,
                  parameters=sum(p.numel() for p in model.parameters()))
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
