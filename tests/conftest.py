"""Shared fixtures: tiny atomic datasets written by the tests themselves."""

import csv
import functools
import http.server
import json
import os
import random
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recbole_fmrl.model.layers import FMRLLinear, sliced_state_dict


def pytest_collection_modifyitems(items):
    """Under ``make mutation`` only: a mutant's tests run fastest first (as timed by mutmut's first run
    over the suite), so that the first test to fail, and end the run, usually comes early."""
    stats = Path("mutmut-stats.json")
    if "MUTANT_UNDER_TEST" in os.environ and stats.is_file():
        seconds = json.loads(stats.read_text())["duration_by_test"]
        items.sort(key=lambda item: seconds.get(item.nodeid, 0.0))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster and avoids OpenMP oversubscription on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_csv(path):
    """The rows of a CSV file as dicts (header -> cell text)."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


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


def write_multimodal_tiny(root, n_items, n_users=30):
    """Dataset ``tiny`` under ``root``: ``n_users`` users with 5-12 events over ``n_items`` items, and
    random text (dim 12) and image (dim 10) feature matrices with their manifests."""
    folder = root / "tiny"
    folder.mkdir()
    rng = random.Random(0)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(n_users):
        items = rng.sample(range(1, n_items + 1), rng.randint(5, 12))
        lines += [f"u{user}\ti{item}\t{1000 + t}" for t, item in enumerate(items)]
    (folder / "tiny.inter").write_text("\n".join(lines) + "\n")
    items = sorted({line.split("\t")[1] for line in lines[1:]})
    (folder / "tiny.items").write_text("item_id\n" + "\n".join(items) + "\n")
    features = np.random.default_rng(0)
    for modality, dim in (("text", 12), ("image", 10)):
        np.save(folder / f"tiny.{modality}.npy", features.standard_normal((len(items), dim), dtype=np.float32))
        manifest = {"encoder": "random", "dim": dim, "n_items": len(items), "items_file": "tiny.items"}
        (folder / f"tiny.{modality}.npy.json").write_text(json.dumps(manifest))
    return str(root)


def perturb_outside_slice(module, index):
    """Random new values everywhere except the size-M[index] slice (masked entries stay zero)."""
    kept = sliced_state_dict(module, index)
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            tensor.add_(torch.randn_like(tensor))
            tensor[tuple(slice(0, n) for n in kept[name].shape)] = kept[name]
        for layer in module.modules():
            if isinstance(layer, FMRLLinear):
                layer.weight.masked_fill_(layer.zero_mask, 0.0)


class ImageHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the image server's folder and records every requested path."""

    requests_seen = []

    def do_GET(self):
        self.requests_seen.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def image_server(tmp_path_factory):
    """A local HTTP server with a valid JPEG, a second valid JPEG and a corrupt one (others 404)."""
    root = tmp_path_factory.mktemp("www")
    Image.new("RGB", (40, 30), (200, 30, 30)).save(root / "good.jpg", "JPEG")
    Image.new("RGB", (64, 64), (10, 120, 240)).save(root / "good2.jpg", "JPEG")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG body")
    handler = functools.partial(ImageHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def free_ports(count, span=1):
    """``count`` distinct ports free on 127.0.0.1, each the start of ``span`` free ports."""
    held, ports = [], []
    while len(ports) < count:
        block = []
        try:
            first = socket.socket()
            first.bind(("127.0.0.1", 0))
            block.append(first)
            for offset in range(1, span):
                extra = socket.socket()
                block.append(extra)
                extra.bind(("127.0.0.1", first.getsockname()[1] + offset))
        except (OSError, OverflowError):  # taken, or past port 65535
            for sock in block:
                sock.close()
            continue
        held += block
        ports.append(block[0].getsockname()[1])
    for sock in held:
        sock.close()
    return ports
