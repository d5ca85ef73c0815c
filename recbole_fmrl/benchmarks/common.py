"""Shared pieces of the benchmarks: synthetic items, model builders, timing, machine info.

Models are the plugin's real classes built from a real ``recbole_fmrl.config.Config`` (so every
default comes from the plugin's YAML files, as in training). The only stand-in is the dataset:
the models read exactly two things from it, ``num(item_field)`` and ``item_features(modality)``,
which :class:`~recbole_fmrl.data.stand_in.StandInDataset` provides with random features
(:func:`synthetic_items`); building a RecBole dataset of 12,101
items from generated files would only add minutes of preprocessing that no timed case uses.
"""

import datetime
import os
import platform
import tempfile

import torch

from recbole_fmrl.data.stand_in import StandInDataset
from recbole_fmrl.data.paper import TABLE1
from recbole_fmrl.deploy.budget import measure_many, synchronize  # noqa: F401 (the benchmarks' timing)
from recbole_fmrl.experiments.reports import git_commit

BEAUTY_ITEMS = TABLE1["beauty"][1] + 1  # item ids of Amazon Beauty (the paper's dataset), row 0 being padding
FEATURE_DIMS = {"text": 384, "image": 512}  # all-MiniLM-L6-v2 text, CLIP ViT-B/32 image


def synthetic_items(n_items, feature_dims=None, seed=0):
    """``n_items`` item ids (row 0 padding) with random features of ``feature_dims`` (default :data:`FEATURE_DIMS`)."""
    return StandInDataset(n_items, feature_dims or FEATURE_DIMS, seed=seed)


_CONFIG_DIR = None


def make_config(model, device, **overrides):
    """A real plugin Config (model YAML defaults + ``overrides``) for ``device``."""
    global _CONFIG_DIR
    from recbole_fmrl.config import Config

    if _CONFIG_DIR is None:
        _CONFIG_DIR = tempfile.mkdtemp(prefix="fmrl-bench-")
    config_dict = {
        "use_gpu": device.type == "cuda",
        "data_path": _CONFIG_DIR,  # nothing is read from it
        "checkpoint_dir": _CONFIG_DIR,
        "show_progress": False,
        **overrides,
    }
    if device.type == "cuda" and device.index is not None:
        config_dict["gpu_id"] = str(device.index)
    return Config(model=model, dataset="synthetic", config_dict=config_dict)


def build_model(model, items, device, seed=0, **overrides):
    """``model`` ('fMRLRec', 'LRURec' or 'SASRec') on the synthetic ``items``, on ``device``.

    fMRLRec defaults to modalities [text, image] and M = [8, 16, ..., hidden_size].
    """
    from recbole_fmrl.model import LRURec, SASRec, fMRLRec

    if model == "fMRLRec":
        overrides.setdefault("modalities", list(FEATURE_DIMS))
        overrides.setdefault("mrl_hidden_sizes", None)  # doubling sizes ending at hidden_size
        overrides.setdefault("eval_size", None)
    config = make_config(model, device, **overrides)
    torch.manual_seed(seed)
    model_class = {"fMRLRec": fMRLRec, "LRURec": LRURec, "SASRec": SASRec}[model]
    return model_class(config, items).to(device), config


def random_batch(model, n_items, batch_size, seq_len, device, seed=0):
    """A RecBole-like training batch: full-length sequences of random items and a random target."""
    generator = torch.Generator().manual_seed(seed)
    return {
        model.ITEM_SEQ: torch.randint(1, n_items, (batch_size, seq_len), generator=generator).to(device),
        model.ITEM_SEQ_LEN: torch.full((batch_size,), seq_len, dtype=torch.long).to(device),
        model.POS_ITEM_ID: torch.randint(1, n_items, (batch_size,), generator=generator).to(device),
    }


def make_optimizer(model, config):
    """AdamW with the model's configured learning rate and weight decay (the YAML's learner)."""
    return torch.optim.AdamW(
        model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"] or 0.0
    )


class TrainStep:
    """One train step per call: forward + CE loss + backward + AdamW step (the model's learner)."""

    def __init__(self, model, config, batch):
        self.model, self.batch = model.train(), batch
        self.optimizer = make_optimizer(model, config)

    def __call__(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model.calculate_loss(self.batch)
        loss.backward()
        self.optimizer.step()


def profile_top_ops(fn, device, steps=2, row_limit=12):
    """torch.profiler over ``steps`` calls of ``fn``: the ops with the most self time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        synchronize(device)
    events = prof.key_averages()

    def self_time(event):  # microseconds on the timed device
        if device.type == "cuda":
            return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
        return event.self_cpu_time_total

    total = sum(self_time(e) for e in events) or 1
    rows = sorted(events, key=self_time, reverse=True)[:row_limit]
    return [
        {
            "op": e.key,
            "self_ms_per_call": round(self_time(e) / 1000 / steps, 3),
            "share": round(self_time(e) / total, 4),
            "calls": e.count // steps,
        }
        for e in rows
    ]


def machine_info(device, threads):
    """What the numbers were measured on."""
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": _device_name(device),
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "git_commit": git_commit(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import recbole

        info["recbole"] = recbole.__version__
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info


def _device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name
