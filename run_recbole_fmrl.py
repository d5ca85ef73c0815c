"""Train and test a plugin or RecBole model, RecBole-style (RecBole's run_recbole.py for the plugin).

    python run_recbole_fmrl.py --model=fMRLRec --dataset=beauty [--config_files="a.yaml b.yaml"] [--key=value ...]
    python run_recbole_fmrl.py --model=fMRLRec --dataset=beauty --resume=saved/fMRLRec-<time>-last.pth
"""

from recbole_fmrl.config import config_keys
from recbole_fmrl.errors import main_guarded
from recbole_fmrl.flags import FlagParser
from recbole_fmrl.runner import run


def build_parser():
    parser = FlagParser(prog="run_recbole_fmrl.py", description=__doc__, config_keys=config_keys)
    parser.add_argument("--model", "-m", default="fMRLRec", help="a plugin model (fMRLRec, LRURec, FMLPRec, UniSRec, VQRec) or any RecBole model")
    parser.add_argument("--dataset", "-d", default="beauty", help="an embedded dataset or a folder <data_path>/<dataset>/ of RecBole atomic files")
    parser.add_argument("--config_files", default="", help="space-separated YAML files")
    parser.add_argument("--resume", default=None, help="continue the run of a '-last.pth' checkpoint (default: a new run)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    run(args.model, args.dataset, args.config_files.split() or None, args.overrides, resume=args.resume)


if __name__ == "__main__":
    main_guarded(main)
