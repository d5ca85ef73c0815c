"""What a checkpoint or export of the plugin holds, and the checks made before one is used.

A checkpoint is a plain dict that loads with ``torch.load(weights_only=True)`` (tensors and Python
values only: no pickled objects, so loading runs no code). Its ``overrides`` are config values, read
as data by :class:`~recbole_fmrl.config.Config` (never ``eval``). Its ``identity`` says what it was
trained on (:func:`run_identity`); evaluating, exporting, serving or resuming it against a dataset
whose items differ is refused with one line (:func:`check_identity`), as are weights that do not
fit the model the settings build (:func:`restore_weights`).
"""

import hashlib
import os
import random

import numpy as np
import torch

from recbole_fmrl import distributed
from recbole_fmrl.errors import InputFileError, PluginError
from recbole_fmrl.model.protocol import identity_features

REQUIRED_KEYS = ("model", "dataset", "overrides", "state_dict", "identity")


def read_checkpoint(path):
    """The dict stored in ``path``, read with ``weights_only=True``; one error line for a missing,
    empty, truncated or damaged file, or for one that is not a checkpoint of this plugin."""
    if not os.path.isfile(path):
        raise PluginError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise InputFileError(path, "the file is empty, not a checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputFileError(
            path, f"not a readable checkpoint (truncated, damaged, or holding more than tensors and plain values): {reason}"
        ) from None
    return check_format(checkpoint, path)


def check_format(checkpoint, path):
    """``checkpoint`` if it has the keys and types of a plugin checkpoint or export, else one error line."""
    if not isinstance(checkpoint, dict):
        raise InputFileError(path, "not a checkpoint of this plugin (expected a dict)")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise InputFileError(
            path, f"not a checkpoint of this plugin, or one written before run identities: no {', '.join(missing)}"
        )
    if not (isinstance(checkpoint["model"], str) and checkpoint["model"].isidentifier()):
        raise InputFileError(path, f"model {checkpoint['model']!r} is not a model name")
    if not isinstance(checkpoint["overrides"], dict) or not isinstance(checkpoint["state_dict"], dict):
        raise InputFileError(path, "'overrides' and 'state_dict' must be dicts")
    return checkpoint


# ------------------------------------------------------------------------------------ identity


def item_order_sha256(item_tokens):
    """sha256 (hex) of a catalogue's item order: the internal id -> token list, one token per line.
    What binds a checkpoint, an export and a funnel index to the item ids they were built on."""
    return hashlib.sha256("\n".join(str(t) for t in item_tokens).encode("utf-8")).hexdigest()


def run_identity(dataset, model):
    """What a trained model is bound to: the model, the dataset's name, its item count and item order
    (sha256 of the internal id -> token list: the rows of every item table of the model) and the
    digests of the features the model reads (its ``identity_features``: e.g. the sha256 of each feature
    file's manifest)."""
    return {
        "model": type(model).__name__,
        "dataset": dataset.dataset_name,
        "item_num": int(dataset.item_num),
        "item_order_sha256": item_order_sha256(dataset.field2id_token[dataset.iid_field]),
        "feature_manifest_sha256": identity_features(model, dataset),
    }


def check_identity(stored, current, path):
    """One error line if the run ``stored`` in ``path`` does not fit ``current`` (:func:`run_identity`)."""
    if not isinstance(stored, dict):
        raise InputFileError(path, "its 'identity' is not a dict")
    if stored.get("model") != current["model"]:
        raise InputFileError(path, f"holds a {stored.get('model')} model, not {current['model']}")
    name = current["dataset"]
    if stored.get("dataset") != name:
        raise InputFileError(path, f"was trained on dataset '{stored.get('dataset')}', not '{name}'")
    if stored.get("item_num") != current["item_num"]:
        raise InputFileError(
            path, f"was trained on {stored.get('item_num')} item ids of '{name}'; the dataset now has {current['item_num']}"
        )
    if stored.get("item_order_sha256") != current["item_order_sha256"]:
        raise InputFileError(
            path, f"was trained on another item order of '{name}' (the dataset was rebuilt): its scores would "
            "belong to other items"
        )
    stored_features = stored.get("feature_manifest_sha256") or {}
    for modality, digest in current["feature_manifest_sha256"].items():
        if stored_features.get(modality) != digest:
            raise InputFileError(path, f"was trained with other {modality} features of '{name}' (their manifest changed)")


def check_weights_fit(model, state_dict, path):
    """One error line naming the first tensor of ``state_dict`` that ``model`` does not have or that
    has another shape (e.g. another ``hidden_size``)."""
    expected = model.state_dict()
    for key in sorted(set(expected) | set(state_dict)):
        if key not in state_dict or key not in expected:
            where = "is missing from the file" if key not in state_dict else "is not a weight of this model"
            raise InputFileError(path, f"weights do not fit {type(model).__name__}: '{key}' {where}")
        value = state_dict[key]
        if not isinstance(value, torch.Tensor) or value.shape != expected[key].shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputFileError(
                path, f"weights do not fit {type(model).__name__}: '{key}' is {shape} in the file, "
                f"{tuple(expected[key].shape)} in the model its settings build"
            )


def restore_weights(model, dataset, checkpoint, path):
    """Load the weights of ``checkpoint`` (read from ``path``) into ``model`` built on ``dataset``,
    after checking that the checkpoint's run fits both."""
    check_identity(checkpoint["identity"], run_identity(dataset, model), path)
    check_weights_fit(model, checkpoint["state_dict"], path)
    model.load_state_dict(checkpoint["state_dict"])
    return model


TRAINING_KEYS = ("epoch", "cur_step", "best_valid_score", "best_valid_result", "best_model_file",
                 "valid_history", "run_id", "rng_state")


def check_resume(checkpoint, path, trainer):
    """Whether ``trainer`` (built for the current run, its ``identity`` set) may continue the run of
    ``checkpoint`` (read from ``path``); returns the path of that run's best checkpoint, read from
    beside ``path``. One error line, before anything is written, when the checkpoint is of another
    model, dataset or shape, of another number of processes, its run is finished, or continuing here
    would overwrite another run's file.
    """
    missing = [key for key in TRAINING_KEYS + tuple(trainer.resumable_states) if key not in checkpoint]
    if missing:
        raise InputFileError(path, f"not a training checkpoint (an export?): no {', '.join(missing)}")
    check_world_size(checkpoint, path, distributed.world_size())
    check_identity(checkpoint["identity"], trainer.identity, path)
    check_weights_fit(trainer.model, checkpoint["state_dict"], path)
    epochs_done = checkpoint["epoch"] + 1
    if epochs_done >= trainer.epochs:
        raise InputFileError(path, f"its run already trained {epochs_done} epochs (epochs={trainer.epochs}): "
                                   "nothing to resume; raise --epochs to train longer")
    if checkpoint["cur_step"] > trainer.stopping_step:
        raise InputFileError(path, f"its run already stopped early after epoch {checkpoint['epoch']} "
                                   f"(stopping_step={trainer.stopping_step})")
    name = os.path.basename(checkpoint["best_model_file"])
    best_source = os.path.join(os.path.dirname(os.path.abspath(path)), name)
    if not os.path.isfile(best_source):
        raise InputFileError(path, f"the best checkpoint of its run, {best_source}, is missing (it is read from beside the resumed file)")
    best_target = os.path.join(trainer.checkpoint_dir, name)
    for target in (best_target, best_target[: -len(".pth")] + "-last.pth"):
        if os.path.exists(target) and not any(os.path.samefile(target, own) for own in (path, best_source)):
            if read_checkpoint(target).get("run_id") != checkpoint["run_id"]:
                raise InputFileError(path, f"resuming it would overwrite {target}, a file of another run: "
                                           "pass another --checkpoint_dir")
    return best_source


def check_world_size(checkpoint, path, world_size):
    """One error line unless the run of ``checkpoint`` trained on ``world_size`` processes (a run
    continues on as many: each process's random state, and the split of every batch, go on)."""
    trained_on = checkpoint.get("world_size", 1)  # written before data parallelism: one process
    if trained_on != world_size:
        raise InputFileError(path, f"its run trained on {trained_on} process{'es' * (trained_on > 1)}: it resumes on as "
                                   f"many, not on {world_size}")


# ------------------------------------------------------------------------------- random state


def rng_state(generators=()):
    """Every random state a training epoch draws from: torch (CPU and CUDA), numpy, Python's
    ``random`` and ``generators`` (e.g. the train data loader's shuffling), as weights_only values."""
    version, keys, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "python": [version, list(keys), gauss],
        "generators": [generator.get_state() for generator in generators],
    }


def rank_rng_state(stored, rank):
    """Process ``rank``'s random state in a checkpoint's ``rng_state``: a list of :func:`rng_state`,
    one per process in rank order (a dict: a checkpoint written before data parallelism)."""
    return stored if isinstance(stored, dict) else stored[rank]


def set_rng_state(state, generators=()):
    """Restore what :func:`rng_state` captured (the same ``generators``, in the same order)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(("MT19937", np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    for generator, saved in zip(generators, state["generators"]):
        generator.set_state(saved)
