"""Evaluate any checkpoint or size-m export on the test split of its dataset; the last line
printed is the metrics as JSON.

    python -m recbole_fmrl.deploy.evaluate fMRLRec-64.pth [--dataset=NAME] [--size=M] [--exclude_seen=True]
    python -m recbole_fmrl.deploy.evaluate fMRLRec-64.pth --funnel=16,200 [--index=hnsw | --index_file=F]

``--funnel m,K`` scores through Matryoshka funnel retrieval (``recbole_fmrl.deploy.funnel``): every item at
size m through a faiss index, the top K reranked at the evaluated size, the rest ranked last; the
metrics are RecBole's, as for exact scoring. ``--exclude_seen`` picks the protocol (default: the run's
own): True leaves each user's seen items out of the ranking, False ranks them (RecBole's).
"""

import argparse
import json

import torch

from recbole_fmrl.checkpoint import read_checkpoint
from recbole_fmrl.deploy.funnel import INDEX_KINDS, FunnelIndex, check_funnel_size, model_index, shortlist_and_rerank
from recbole_fmrl.deploy.trained import item_tokens, load_trained_run
from recbole_fmrl.errors import PluginError, main_guarded
from recbole_fmrl.flags import FlagParser, add_protocol_flag
from recbole_fmrl.model.layers import check_size, count_parameters
from recbole_fmrl.model.protocol import eval_size, nested_sizes
from recbole_fmrl.trainer import get_trainer


def evaluate(path, dataset=None, size=None, funnel=None, index="flat", index_file=None, exclude_seen=None):
    """Test metrics of the model stored in ``path`` (at nested size ``size`` if given), with each
    user's seen items excluded or ranked as ``exclude_seen`` says (None: as the run was evaluated).

    ``funnel=(m, K)`` scores through the funnel with an index of kind ``index`` built from the
    model, or the one saved at ``index_file`` (refused unless built for this catalogue).
    """
    checkpoint = read_checkpoint(path)
    if dataset and dataset != checkpoint["dataset"]:
        raise PluginError(f"{path} was trained on '{checkpoint['dataset']}', not '{dataset}'")
    config, model, _, (_, _, test_data) = load_trained_run(checkpoint, path)
    if exclude_seen is not None:
        test_data.exclude_seen = exclude_seen
    if size is not None:
        model.eval_size = check_size(size, nested_sizes(model), "--size")
    if funnel is not None:
        funnel_index = funnel_index_for(model, test_data._dataset, funnel[0], index, index_file)
        model.full_sort_predict = funnel_full_sort_predict(model, funnel_index, funnel[1])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    result = dict(trainer.evaluate(test_data, load_best_model=False, show_progress=config["show_progress"]))
    return {
        "file": path,
        "model": checkpoint["model"],
        "dataset": checkpoint["dataset"],
        "size": eval_size(model, config["hidden_size"]),
        "exclude_seen": test_data.exclude_seen,
        "num_params": count_parameters(model),
        **({"funnel": {"size": funnel[0], "shortlist": funnel[1], "index": funnel_index.kind}} if funnel else {}),
        "test_result": {k: float(v) for k, v in result.items()},
    }


def funnel_index_for(model, dataset, size, kind, index_file=None):
    """The funnel index of ``model``'s size-``size`` item prefix: loaded from ``index_file`` (checked
    against ``dataset``'s item order) or built."""
    if not index_file:
        return model_index(model, item_tokens(dataset), size, kind)
    check_funnel_size(model, size)
    index = FunnelIndex.load(index_file, item_tokens(dataset))
    if index.size != size:
        raise PluginError(f"funnel index {index_file} is of size {index.size}, not {size}")
    return index


def funnel_full_sort_predict(model, index, shortlist):
    """``model.full_sort_predict`` through the funnel: the K shortlisted items get their scores at
    ``model.eval_size``, every other item -inf (ranked last), as RecBole's evaluator expects."""

    def full_sort_predict(interaction):
        size = model.eval_size
        hidden = model.forward(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])[:, :size]
        table = model.item_table()[:, :size]
        candidates, scores = shortlist_and_rerank(hidden, table, index, shortlist)
        dense = scores.new_full((hidden.size(0), table.size(0)), float("-inf"))
        kept = candidates >= 0
        rows = torch.arange(hidden.size(0), device=hidden.device).unsqueeze(1).expand_as(candidates)
        dense[rows[kept], candidates[kept]] = scores[kept]
        return dense

    return full_sort_predict


def parse_funnel(text):
    """``m,K`` -> (m, K), two positive integers."""
    try:
        size, shortlist = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected m,K (two integers, e.g. 16,200), got {text!r}") from None
    if size < 1 or shortlist < 1:
        raise argparse.ArgumentTypeError(f"m and K must be positive, got {text!r}")
    return size, shortlist


def build_parser():
    parser = FlagParser(prog="python -m recbole_fmrl.deploy.evaluate", description=__doc__)
    parser.add_argument("file", help="a checkpoint from training or an export")
    parser.add_argument("--dataset", default=None, help="the dataset it was trained on, checked (default: the one the file names)")
    parser.add_argument("--size", type=int, default=None, help="nested size to score at, fMRLRec (default: the model's eval_size)")
    parser.add_argument("--funnel", type=parse_funnel, default=None, metavar="m,K",
                        help="funnel retrieval: shortlist K items at size m, rerank at the evaluated size (default: exact scoring)")
    parser.add_argument("--index", choices=INDEX_KINDS, default="flat", help="funnel index kind (flat: exact search)")
    parser.add_argument("--index_file", default=None,
                        help="a saved funnel index to reuse, from python -m recbole_fmrl.deploy.funnel (default: build one)")
    add_protocol_flag(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    print(json.dumps(evaluate(args.file, args.dataset, args.size, args.funnel, args.index, args.index_file, args.exclude_seen)))


if __name__ == "__main__":
    main_guarded(main)
