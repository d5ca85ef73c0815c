"""Evaluate any checkpoint or size-m export on the test split of its dataset; the last line
printed is the metrics as JSON.

    python -m recbole_fmrl.evaluate fMRLRec-64.pth [--dataset beauty] [--size m]
"""

import argparse
import json

from recbole_fmrl.checkpoint import read_checkpoint
from recbole_fmrl.errors import PluginError
from recbole_fmrl.export import build_trained
from recbole_fmrl.quick_start import count_parameters, main_guarded
from recbole_fmrl.utils import get_trainer


def evaluate(path, dataset=None, size=None):
    """Test metrics of the model stored in ``path`` (at nested size ``size`` if given)."""
    checkpoint = read_checkpoint(path)
    if dataset and dataset != checkpoint["dataset"]:
        raise PluginError(f"{path} was trained on '{checkpoint['dataset']}', not '{dataset}'")
    config, model, (_, _, test_data) = build_trained(checkpoint, path)
    if size is not None:
        if size not in getattr(model, "mrl_hidden_sizes", ()):
            raise PluginError(f"--size {size} is not one of the model's sizes {getattr(model, 'mrl_hidden_sizes', [])}")
        model.eval_size = size
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    result = dict(trainer.evaluate(test_data, load_best_model=False, show_progress=config["show_progress"]))
    return {
        "file": path,
        "model": checkpoint["model"],
        "dataset": checkpoint["dataset"],
        "size": getattr(model, "eval_size", config["hidden_size"]),
        "num_params": count_parameters(model),
        "test_result": {k: float(v) for k, v in result.items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="a checkpoint from training or an export")
    parser.add_argument("--dataset", default=None, help="the dataset it was trained on (checked)")
    parser.add_argument("--size", type=int, default=None, help="nested size to score at (fMRLRec)")
    args = parser.parse_args()
    print(json.dumps(evaluate(args.file, args.dataset, args.size)))


if __name__ == "__main__":
    main_guarded(main)
