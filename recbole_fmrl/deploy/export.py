"""Export the standalone size-m model from a trained fMRLRec checkpoint (paper §3.2: the size-m
slice of every weight is an independent size-m model).

    python -m recbole_fmrl.deploy.export saved/fMRLRec-<time>.pth --size=64 --out=fMRLRec-64.pth
"""

import os
from logging import getLogger

from recbole_fmrl.checkpoint import read_checkpoint
from recbole_fmrl.config import Config
from recbole_fmrl.deploy.trained import load_trained_run, sliced_model
from recbole_fmrl.errors import PluginError, main_guarded
from recbole_fmrl.files import torch_save_atomic
from recbole_fmrl.flags import FlagParser
from recbole_fmrl.model.layers import count_parameters
from recbole_fmrl.model.protocol import is_nested


def export_model(model, checkpoint, dataset, size):
    """The standalone size-``size`` model of ``model`` (trained as ``checkpoint`` says, on ``dataset``)
    and its config overrides: what an export holds."""
    def build(sliced):
        overrides = {**checkpoint["overrides"], **sliced}
        return type(model)(Config(checkpoint["model"], checkpoint["dataset"], config_dict=overrides), dataset)

    small_model, sliced = sliced_model(model, size, build)
    return small_model, {**checkpoint["overrides"], **sliced}


def export(checkpoint_path, size, out_path):
    """Write the size-``size`` model of ``checkpoint_path`` to ``out_path``; returns its parameter count."""
    checkpoint = read_checkpoint(checkpoint_path)
    config, model, _, (train_data, _, _) = load_trained_run(checkpoint, checkpoint_path)
    if not is_nested(model):
        raise PluginError(f"{checkpoint_path}: model {checkpoint['model']} has no nested sizes to export")
    small_model, overrides = export_model(model, checkpoint, train_data._dataset, size)
    export_state = {
        "model": checkpoint["model"],
        "dataset": checkpoint["dataset"],
        "overrides": overrides,
        "config": {**checkpoint["config"], **overrides},
        "identity": checkpoint["identity"],
        "size": size,
        "num_params": count_parameters(small_model),
        "source_checkpoint": os.path.abspath(checkpoint_path),
        "state_dict": small_model.state_dict(),
    }
    torch_save_atomic(export_state, out_path)
    getLogger().info(
        f"exported size {size} of {checkpoint_path} to {out_path}: {export_state['num_params']:,} parameters "
        f"(full model: {count_parameters(model):,})"
    )
    return export_state["num_params"]


def build_parser():
    parser = FlagParser(prog="python -m recbole_fmrl.deploy.export", description=__doc__)
    parser.add_argument("checkpoint", help="a training checkpoint of fMRLRec")
    parser.add_argument("--size", type=int, required=True, help="a size m in the model's mrl_hidden_sizes")
    parser.add_argument("--out", required=True, help="output file (.pth)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    export(args.checkpoint, args.size, args.out)


if __name__ == "__main__":
    main_guarded(main)
