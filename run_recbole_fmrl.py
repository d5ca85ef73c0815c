"""Train and test a plugin or RecBole model, RecBole-style (RecBole's run_recbole.py for the plugin).

    python run_recbole_fmrl.py --model=fMRLRec --dataset=beauty [--config_files="a.yaml b.yaml"] [--key=value ...]
    python run_recbole_fmrl.py --model=fMRLRec --dataset=beauty --resume=saved/fMRLRec-<time>-last.pth
    python run_recbole_fmrl.py --model=fMRLRec --dataset=beauty --nproc=2 --gpu_id=0,1   (one run, 2 GPUs)
    torchrun --nproc_per_node=2 run_recbole_fmrl.py --model=fMRLRec --dataset=beauty --gpu_id=0,1
"""

from recbole_fmrl import distributed
from recbole_fmrl.checkpoint import check_world_size, read_checkpoint
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
    parser.add_argument("--nproc", type=int, default=1, help="processes of one data-parallel run on this machine (one per GPU)")
    parser.add_argument("--world_size", type=int, default=-1, help="processes on all machines (-1: --nproc)")
    parser.add_argument("--ip", default="localhost", help="address of the machine of rank 0")
    parser.add_argument("--port", type=int, default=5678, help="free port on the machine of rank 0")
    parser.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    run_args = (args.model, args.dataset, args.config_files.split() or None, args.overrides)
    if args.nproc == 1 and args.world_size <= 0:
        try:
            run(*run_args, resume=args.resume)  # one process, or one of a torchrun launch
        finally:
            distributed.leave()
        return
    world_size = args.nproc if args.world_size == -1 else args.world_size
    if args.resume:  # refused before any process starts
        check_world_size(read_checkpoint(args.resume), args.resume, world_size)
    distributed.spawn(run, run_args, {"resume": args.resume}, nproc=args.nproc, world_size=world_size, ip=args.ip,
                      port=args.port, group_offset=args.group_offset)


if __name__ == "__main__":
    main_guarded(main)
