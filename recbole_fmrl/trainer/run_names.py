"""Run file names: RecBole names a run by model and time to the second; two runs started in the same
second get distinct stems through an exclusive claim file, released once a run file holds the name."""

import atexit
import os
from pathlib import Path

RUN_FILE_SUFFIXES = (".pth", "-last.pth", ".results.json")  # the files of one run, after its stem


def unused_model_file(path):
    """``path`` (``<stem>.pth``), or ``<stem>-2.pth``, ... when a run started in the same second
    already owns that stem (RecBole names runs by model and time to the second).

    A stem is owned by any file of a run (``RUN_FILE_SUFFIXES``) or by its claim, which this function
    creates exclusively (``O_EXCL``): two processes choosing at once never get the same name. The
    claim goes once the run has saved a file (:func:`release_claim`) or its process exits."""
    base = path[: -len(".pth")]
    stem, n = base, 1
    while True:
        if not any(os.path.exists(stem + suffix) for suffix in RUN_FILE_SUFFIXES):
            try:
                os.close(os.open(claim_file(stem + ".pth"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                atexit.register(release_claim, stem + ".pth")
                return stem + ".pth"
        n += 1
        stem = f"{base}-{n}"


def claim_file(model_file):
    folder, name = os.path.split(model_file[: -len(".pth")])
    return os.path.join(folder, f".{name}.claim")


def release_claim(model_file):
    Path(claim_file(model_file)).unlink(missing_ok=True)
