"""Data-parallel runs on torch.distributed, one home: how a process is launched and joins its group,
which process it is, and what the processes exchange.

N processes are launched by ``run_recbole_fmrl.py --nproc=N`` (:func:`spawn`: N processes on this
machine through ``torch.multiprocessing``; ``--world_size``, ``--ip``, ``--port`` and
``--group_offset`` join the processes of several machines, as RecBole's flags do) or by ``torchrun``.
Either way a process finds its place in the variables torchrun sets (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``: :func:`launched`), and :func:`join` makes the
process group with the backend of the run's device (nccl on a GPU, gloo on the CPU) or the config
key ``dist_backend``. Outside a launch every helper answers for one process: rank 0 of 1.
"""

import contextlib
import os
import sys
import tempfile
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import ProcessException, ProcessExitedException

from recbole_fmrl.errors import PluginError
from recbole_fmrl.inputs import choice

BACKENDS = ("gloo", "nccl", "mpi", "ucc")

# Keys that say where a process runs, not what it trains: never saved with a run's settings
# (evaluate, export and serving rebuild a run from them in one process).
LAUNCH_KEYS = frozenset({"nproc", "world_size", "ip", "port", "group_offset", "offset", "local_rank", "rank",
                         "single_spec", "dist_backend"})


class Place(NamedTuple):
    """Where a launched process runs: its rank among all processes, among this machine's, and how many."""

    rank: int
    local_rank: int
    world_size: int


def launched():
    """This process's :class:`Place` when torchrun or :func:`spawn` started it as one of several
    (``WORLD_SIZE`` > 1), else None."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    return Place(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"])), world_size)


def backend(configured, device):
    """The backend of a run on ``device``: ``configured`` (the key ``dist_backend``) if set, else
    nccl on a GPU and gloo on the CPU."""
    if configured is not None:
        return choice("dist_backend", configured, BACKENDS)
    return "nccl" if device.type == "cuda" else "gloo"


def join(config):
    """Join the process group of this launch (once; nothing outside a launch)."""
    chosen = backend(config["dist_backend"], config["device"])
    if launched() is None or dist.is_initialized():
        return
    if config["device"].type == "cuda":
        torch.cuda.set_device(config["device"])
    dist.init_process_group(chosen, init_method="env://")


def leave():
    """Leave the process group (if this process is in one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if is_distributed() else 0


def world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main():
    """Whether this process is rank 0: the one that names the run and writes its files."""
    return rank() == 0


# ----------------------------------------------------------------------------- what ranks exchange


def broadcast(value):
    """Rank 0's ``value`` on every process (any picklable value)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value):
    """Every process's ``value``, as a list in rank order, on every process."""
    if not is_distributed():
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast_module(module):
    """Rank 0's parameters and buffers of ``module`` on every process."""
    if is_distributed():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def mean_over_ranks(value, device):
    """The mean over processes of a number or a tuple of numbers (e.g. an epoch's training loss)."""
    if not is_distributed():
        return value
    numbers = torch.tensor(value if isinstance(value, tuple) else [value], dtype=torch.float64, device=device)
    dist.all_reduce(numbers)
    numbers = (numbers / world_size()).tolist()
    return tuple(numbers) if isinstance(value, tuple) else numbers[0]


def share_of_batch(pairs, device):
    """W × (this process's training pairs) / (the global batch's): the factor of this process's mean
    loss that makes the data-parallel mean of the processes' gradients the gradient of the mean loss
    over the whole global batch (what one process would take). 1 in one process."""
    if not is_distributed():
        return 1.0
    total = torch.tensor([pairs], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return world_size() * pairs / float(total.item())


def shard(n_rows):
    """This process's contiguous share ``(start, stop)`` of ``n_rows`` rows: shares in rank order,
    none overlapping, together every row exactly once."""
    r, w = rank(), world_size()
    return r * n_rows // w, (r + 1) * n_rows // w


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (e.g. writes a dataset folder), the others after it has finished."""
    if not is_main():
        dist.barrier()
    yield
    if is_main() and is_distributed():
        dist.barrier()


@contextlib.contextmanager
def writes_discarded():
    """On every process but rank 0, the block runs in a scratch working directory, removed after it:
    files it writes under relative paths (RecBole's trainer opens a TensorBoard writer under
    ``log_tensorboard/``) are not the run's."""
    if is_main():
        yield
        return
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="recbole_fmrl-rank-") as scratch:
        os.chdir(scratch)
        try:
            yield
        finally:
            os.chdir(here)


# ------------------------------------------------------------------------------------ launching


def spawn(fn, args=(), kwargs=None, nproc=1, world_size=-1, ip="localhost", port=5678, group_offset=0):
    """Run ``fn(*args, **kwargs)`` on ``nproc`` processes of this machine, ranks ``group_offset`` to
    ``group_offset + nproc - 1`` of ``world_size`` (-1: ``nproc``), meeting at ``ip:port`` (rank 0's
    machine), as RecBole's ``--nproc``, ``--world_size``, ``--ip``, ``--port``, ``--group_offset``.

    Returns rank 0's result (None on the other machines). A :class:`PluginError` in any process is
    raised here once, after every process has stopped; an interrupted process (Ctrl-C) raises
    ``KeyboardInterrupt``. No process outlives the call.
    """
    world_size = nproc if world_size == -1 else world_size
    if not 0 < nproc <= world_size - group_offset or group_offset < 0:
        raise PluginError(f"--nproc={nproc} processes from rank --group_offset={group_offset} do not fit "
                          f"--world_size={world_size}")
    context = torch.multiprocessing.get_context("spawn")
    errors, results = context.SimpleQueue(), context.SimpleQueue()
    place = {"WORLD_SIZE": str(world_size), "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": str(ip),
             "MASTER_PORT": str(port)}
    processes = torch.multiprocessing.start_processes(
        _launched_process, args=(fn, args, kwargs or {}, place, group_offset, errors, results), nprocs=nproc,
        join=False, start_method="spawn")
    result = None
    try:
        while True:
            try:
                done = processes.join(timeout=1)
            except ProcessException as failure:
                if not errors.empty():
                    raise PluginError(errors.get()) from None
                if isinstance(failure, ProcessExitedException) and failure.exit_code == 130:
                    raise KeyboardInterrupt from None
                raise
            while not results.empty():  # read while waiting: a full pipe would block the writer
                result = results.get()
            if done:
                return result
    finally:
        for process in processes.processes:
            if process.is_alive():
                process.terminate()
            process.join()


def _launched_process(local_rank, fn, args, kwargs, place, group_offset, errors, results):
    """One process of :func:`spawn`: its place in torchrun's variables, then ``fn``."""
    os.environ.update(place, RANK=str(group_offset + local_rank), LOCAL_RANK=str(local_rank))
    try:
        result = fn(*args, **kwargs)
    except PluginError as err:
        errors.put(str(err))
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        leave()
    if local_rank == 0 and group_offset == 0:
        results.put(result)
