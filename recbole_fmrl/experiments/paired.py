"""Per-user test metrics of trained models: the paired test between two of them (Table 2's
p-values) and how many of a model's top-10 slots go to items its user has already seen.

    python -m recbole_fmrl.experiments.paired A.pth B.pth [--exclude_seen=True] [--size_a=M] [--size_b=M] [--csv=FILE]
    python -m recbole_fmrl.experiments.paired A.pth [--size_a=M]          # one model: its per-user numbers

Both models are scored on the test split of the dataset they were trained on, with RecBole's
evaluator (:func:`per_user_ranks`); the last line printed is the result as JSON. ``--csv`` appends
the paired test as a row (:data:`PAIRED_COLUMNS`; ``a`` and ``b`` are checkpoint file names, as in
the ``checkpoint`` column of ``table2.csv``) to FILE, e.g. ``docs/results/table2_<dataset>_paired.csv``.
"""

import csv
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from recbole_fmrl.checkpoint import read_checkpoint
from recbole_fmrl.deploy.trained import load_trained_run
from recbole_fmrl.errors import PluginError, main_guarded
from recbole_fmrl.flags import FlagParser, add_protocol_flag
from recbole_fmrl.model.layers import check_size
from recbole_fmrl.model.protocol import nested_sizes
from recbole_fmrl.trainer import get_trainer

TOP_K = 10
PAIRED_COLUMNS = ("dataset", "a", "size_a", "b", "size_b", "exclude_seen", "users", "ndcg@10_a", "ndcg@10_b",
                  "difference", "t_test_p", "wilcoxon_p", "command")


@torch.no_grad()
def per_user_ranks(trainer, loader):
    """``(users, ranks, seen_in_top)``, one entry per test row: its user, the 0-based rank of its target
    among the items (those scoring strictly higher), and how many of its top-:data:`TOP_K` items the
    user has seen. Scores are RecBole's evaluator's (``_full_sort_batch_eval``: padding, and with the
    loader's ``exclude_seen`` the seen items, at -inf)."""
    trainer.model.eval()
    trainer.tot_item_num = loader._dataset.item_num  # what Trainer.evaluate sets before scoring
    users, ranks, seen_in_top = [], [], []
    for batch in loader:
        interaction, scores, _, targets = trainer._full_sort_batch_eval(batch)
        rows = torch.arange(len(targets))
        ranks.append((scores > scores[rows, targets].unsqueeze(1)).sum(dim=1))
        seen = torch.zeros_like(scores, dtype=torch.bool)
        seen[loader._dataset.seen_items(interaction)] = True
        seen_in_top.append(seen.gather(1, scores.topk(TOP_K, dim=1).indices).sum(dim=1))
        users.append(interaction[loader._dataset.uid_field])
    return torch.cat(users), torch.cat(ranks), torch.cat(seen_in_top)


def ndcg_at(ranks, k=TOP_K):
    """Per-user NDCG@k of one target at 0-based ``ranks`` (RecBole's NDCG with a single positive)."""
    ranks = ranks.double()
    return torch.where(ranks < k, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks))


def model_per_user(path, exclude_seen=None, size=None):
    """``{user: ndcg@10}`` and the mean seen items in the top 10 of the model stored in ``path``, on
    its test split (``exclude_seen``: the protocol; None = the run's own)."""
    checkpoint = read_checkpoint(path)
    config, model, _, (_, _, test_data) = load_trained_run(checkpoint, path)
    if size is not None:
        model.eval_size = check_size(size, nested_sizes(model), "--size")
    if exclude_seen is not None:
        test_data.exclude_seen = exclude_seen
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    users, ranks, seen_in_top = per_user_ranks(trainer, test_data)
    return {
        "file": path, "model": checkpoint["model"], "dataset": checkpoint["dataset"], "size": size,
        "exclude_seen": test_data.exclude_seen, "ndcg@10": dict(zip(users.tolist(), ndcg_at(ranks).tolist())),
        "seen_in_top10": float(seen_in_top.double().mean()),
    }


def paired_test(a, b):
    """Mean per-user NDCG@10 of ``a`` and ``b`` (:func:`model_per_user`) over the same users, their
    difference, and the p-values of the paired t-test and the Wilcoxon signed-rank test."""
    from scipy import stats

    if set(a["ndcg@10"]) != set(b["ndcg@10"]):
        raise PluginError(f"{a['file']} and {b['file']} were not tested on the same users (another dataset or split)")
    users = sorted(a["ndcg@10"])
    x, y = np.array([a["ndcg@10"][u] for u in users]), np.array([b["ndcg@10"][u] for u in users])
    return {"users": len(users), "ndcg@10_a": float(x.mean()), "ndcg@10_b": float(y.mean()),
            "difference": float((x - y).mean()), "t_test_p": float(stats.ttest_rel(x, y).pvalue),
            "wilcoxon_p": float(stats.wilcoxon(x, y, zero_method="zsplit").pvalue)}


def without_users(result):
    """A :func:`model_per_user` result with its per-user NDCG@10 replaced by their mean."""
    summary = {k: v for k, v in result.items() if k != "ndcg@10"}
    summary["ndcg@10_mean"] = float(np.mean(list(result["ndcg@10"].values())))
    return summary


def append_paired_row(path, a, b, paired, command):
    """One :data:`PAIRED_COLUMNS` row for the paired test of ``a`` and ``b`` (:func:`model_per_user`)
    appended to the CSV ``path`` (written with its header when new)."""
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    if new:
        path.parent.mkdir(parents=True, exist_ok=True)
    row = {"dataset": a["dataset"], "a": Path(a["file"]).name, "size_a": a["size"], "b": Path(b["file"]).name,
           "size_b": b["size"], "exclude_seen": a["exclude_seen"], **paired, "command": command}
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, PAIRED_COLUMNS, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow(row)


def build_parser():
    parser = FlagParser(prog="python -m recbole_fmrl.experiments.paired", description=__doc__)
    parser.add_argument("a", help="a checkpoint or export")
    parser.add_argument("b", nargs="?", default=None, help="a second one, on the same dataset (default: none)")
    add_protocol_flag(parser)
    parser.add_argument("--size_a", type=int, default=None, help="nested size of a, fMRLRec (default: its eval_size)")
    parser.add_argument("--size_b", type=int, default=None, help="nested size of b, fMRLRec (default: its eval_size)")
    parser.add_argument("--csv", default=None, help="append the paired test of a and b as a row to this CSV (default: none)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.csv and not args.b:
        raise PluginError("--csv needs a second checkpoint b to test against")
    a = model_per_user(args.a, args.exclude_seen, args.size_a)
    summary = {"a": without_users(a)}
    if args.b:
        b = model_per_user(args.b, args.exclude_seen, args.size_b)
        summary["b"] = without_users(b)
        summary["paired"] = paired_test(a, b)
        if args.csv:
            command = shlex.join(["python", "-m", "recbole_fmrl.experiments.paired", *(argv if argv is not None else sys.argv[1:])])
            append_paired_row(args.csv, a, b, summary["paired"], command)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main_guarded(main)
