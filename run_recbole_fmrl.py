"""Train and test a plugin or RecBole model, RecBole-style.

    python run_recbole_fmrl.py --model=fMRLRec --dataset=sports [--config_files="a.yaml b.yaml"] [--key=value ...]
"""

import argparse

from recbole_fmrl.errors import PluginError
from recbole_fmrl.quick_start import main_guarded, run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default="fMRLRec", help="fMRLRec, LRURec, FMLPRec or any RecBole model")
    parser.add_argument("--dataset", "-d", default="beauty", help="dataset name (folder under data_path)")
    parser.add_argument("--config_files", default="", help="space-separated YAML files")
    parser.add_argument("--resume", default=None, help="continue from a '-last.pth' checkpoint")
    args, extra = parser.parse_known_args()
    overrides = {}
    for arg in extra:
        key, sep, value = arg[2:].partition("=")
        if not arg.startswith("--") or not sep:
            raise PluginError(f"unrecognised argument '{arg}': use --key=value")
        overrides[key] = value
    run(args.model, args.dataset, args.config_files.split() or None, overrides, resume=args.resume)


if __name__ == "__main__":
    main_guarded(main)
