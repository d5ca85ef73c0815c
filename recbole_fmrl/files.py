"""Crash-safe file writes, the one home of every writer in the project (trainer, dataset preparation,
reports, benchmarks, funnel indexes).

Every file is written to a temporary name in the same folder and moved into place with
``os.replace``, so an interrupted run leaves either the old file or the new one, never half of one.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success move it onto ``path``, else delete it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text_atomic(path, text):
    """Write ``text`` (UTF-8, line endings as given) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj, indent=2, sort_keys=True):
    """Write ``obj`` as indented JSON (one trailing newline) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def save_npy_atomic(path, array):
    """Save a numpy array to ``path`` (``.npy`` format) atomically."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def torch_save_atomic(obj, path):
    """``torch.save`` to a temp file, then rename: an interrupted save never corrupts ``path``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def copy_atomic(source, path):
    """Copy the file ``source`` to ``path`` (temp file, then rename)."""
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)


def sha256_file(path):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive_lock(path, on_wait=None):
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block: other
    processes and threads asking for it wait until it is released (``on_wait()`` runs once if this
    one has to wait). The lock goes with the process, so a killed writer never leaves it held."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
