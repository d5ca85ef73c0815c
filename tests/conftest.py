"""Shared fixtures: tiny atomic datasets written by the tests themselves."""

import random

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster and avoids OpenMP oversubscription on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_tiny_inter(folder, name="tiny", n_users=40, n_items=30, seed=0):
    """A RecBole ``.inter`` with ``n_users`` users, 6-12 events each, chronological timestamps."""
    rng = random.Random(seed)
    path = folder / name / f"{name}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(n_users):
        items = rng.sample(range(1, n_items + 1), rng.randint(6, 12))
        lines += [f"u{user}\ti{item}\t{1000 + t}" for t, item in enumerate(items)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tiny_config(tmp_path, monkeypatch):
    """Config overrides for a fast run on a tiny dataset ``tiny`` under ``tmp_path``."""
    monkeypatch.chdir(tmp_path)  # RecBole writes log/ and log_tensorboard/ into the working directory
    write_tiny_inter(tmp_path)
    return {
        "data_path": str(tmp_path),
        "checkpoint_dir": str(tmp_path / "saved"),
        "epochs": 2,
        "train_batch_size": 64,
        "eval_batch_size": 64,
        "show_progress": False,
        "use_gpu": False,
        "hidden_size": 16,
        "MAX_ITEM_LIST_LENGTH": 10,
    }
