"""Train and test a plugin or RecBole model, RecBole-style.

    python run_recbole_fmrl.py --model=fMRLRec --dataset=sports [--config_files="a.yaml b.yaml"] [--key=value ...]
"""

import argparse

from recbole_fmrl.config import parse_overrides
from recbole_fmrl.errors import main_guarded
from recbole_fmrl.runner import run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default="fMRLRec", help="fMRLRec, LRURec, FMLPRec or any RecBole model")
    parser.add_argument("--dataset", "-d", default="beauty", help="dataset name (folder under data_path)")
    parser.add_argument("--config_files", default="", help="space-separated YAML files")
    parser.add_argument("--resume", default=None, help="continue from a '-last.pth' checkpoint")
    args, extra = parser.parse_known_args(argv)
    run(args.model, args.dataset, args.config_files.split() or None, parse_overrides(extra), resume=args.resume)


if __name__ == "__main__":
    main_guarded(main)
