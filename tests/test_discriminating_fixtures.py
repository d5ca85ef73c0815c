"""Fixtures that tell right from wrong where the other tests' data cannot: the best epoch is not the
last, histories longer than the window, items RecBole filtered out, photos that need a retry."""

import functools
import http.server
import json
import os
import random
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from recbole_fmrl.config import Config
from recbole_fmrl.data.dataset import MultimodalSequentialDataset
from recbole_fmrl.data.loading import create_dataset
from recbole_fmrl.dataset_prep.images import download_images
from recbole_fmrl.deploy.evaluate import evaluate
from recbole_fmrl.deploy.serving import Recommender
from recbole_fmrl.errors import FeatureFileError
from recbole_fmrl.model import fMRLRec
from recbole_fmrl.runner import run
from recbole_fmrl.trainer import PluginTrainer

from conftest import write_multimodal_tiny


def test_test_metrics_come_from_the_best_checkpoint_not_the_last_epoch(tiny_config, monkeypatch):
    """Validation scores are scripted so that epoch 1 of 4 is the best (training is real): the test
    metrics, and every size's, are those of the epoch-1 weights, which differ from the last epoch's."""
    scores = iter([0.1, 0.9, 0.5, 0.3])
    validate = PluginTrainer._valid_epoch

    def scripted(self, valid_data, show_progress=False):
        _, result = validate(self, valid_data, show_progress)
        return next(scores), result

    monkeypatch.setattr(PluginTrainer, "_valid_epoch", scripted)
    config = {**tiny_config, "epochs": 4, "modalities": ["id"], "mrl_hidden_sizes": [8, 16], "n_layers": 1,
              "train_batch_size": 8, "warmup_steps": 0, "learning_rate": 0.01}
    result = run("fMRLRec", "tiny", config_dict=config)
    assert (result["best_epoch"], result["epochs_run"]) == (1, 4)

    best = evaluate(result["checkpoint"])["test_result"]
    last = evaluate(result["checkpoint"].replace(".pth", "-last.pth"))["test_result"]
    assert torch.load(result["checkpoint"], weights_only=True)["epoch"] == 1
    assert best != last  # the fixture discriminates: the last epoch's weights test differently
    assert result["test_result"] == best and result["sizes"]["16"] == best
    assert result["sizes"]["8"] == evaluate(result["checkpoint"], size=8)["test_result"]


SERVING = {
    "hidden_size": 16, "mrl_hidden_sizes": [8, 16], "n_layers": 2, "MAX_ITEM_LIST_LENGTH": 5, "use_gpu": False,
    "modalities": ["text", "id"], "feature_files": {"text": "tiny.text.npy"},
}


def test_start_keeps_only_the_last_window_of_a_long_history(tmp_path, monkeypatch):
    """``start`` with 3 windows of history equals the full forward pass over the last MAX_ITEM_LIST_LENGTH
    events, i.e. what RecBole's evaluation feeds the model, and not a scan over everything."""
    monkeypatch.chdir(tmp_path)
    config = Config("fMRLRec", "tiny", config_dict={"data_path": write_multimodal_tiny(tmp_path, 40), **SERVING})
    torch.manual_seed(0)
    model = fMRLRec(config, create_dataset(config)).eval()
    with torch.no_grad():  # slow decay: an event 10 steps back still changes the state
        for block in model.encoder.blocks:
            block.lru.params_log[0].fill_(np.log(0.02))
    rec = Recommender(model)
    history = random.Random(7).sample(range(1, rec.n_items), 15)
    window = history[-5:]
    state = rec.start(history)
    with torch.no_grad():
        full = model.full_sort_predict({model.ITEM_SEQ: torch.tensor([window]), model.ITEM_SEQ_LEN: torch.tensor([5])})[0]
    torch.testing.assert_close(rec.scores(state), full, atol=1e-5, rtol=0)
    assert state.length == (5,) and state.seen_items() == window
    everything = rec.start_many([history, history[:4]])
    torch.testing.assert_close(everything.lru[:, 0], state.lru[:, 0], atol=1e-6, rtol=0)
    with torch.no_grad():  # the fixture discriminates: a scan over all 15 events ends elsewhere
        assert not torch.allclose(model.encode(torch.tensor([history]))[0, -1], state.hidden[0], atol=1e-3)


def add_item(folder, token, inter_rows):
    """Give item ``token`` a row in tiny's items and feature files, and ``inter_rows`` interactions."""
    with open(folder / "tiny.inter", "a") as f:
        f.write("".join(f"{user}\t{token}\t{time}\n" for user, time in inter_rows))
    with open(folder / "tiny.items", "a") as f:
        f.write(f"{token}\n")
    for modality in ("text", "image"):
        matrix = np.load(folder / f"tiny.{modality}.npy")
        np.save(folder / f"tiny.{modality}.npy", np.vstack([matrix, np.full((1, matrix.shape[1]), 7.0, np.float32)]))
        manifest = json.loads((folder / f"tiny.{modality}.npy.json").read_text())
        manifest["n_items"] = len(matrix) + 1
        (folder / f"tiny.{modality}.npy.json").write_text(json.dumps(manifest))


def test_feature_rows_of_items_recbole_filtered_out_are_accepted_and_unknown_ones_refused(tmp_path, monkeypatch):
    """``i99`` has one interaction, so RecBole's ``item_inter_num_interval: [2,inf)`` drops it: its feature
    row belongs to an item of ``tiny.inter`` and is accepted; a row for ``i77``, in no interaction, is not."""
    monkeypatch.chdir(tmp_path)
    root = write_multimodal_tiny(tmp_path, 20)
    folder = tmp_path / "tiny"
    add_item(folder, "i99", [("u0", 5000)])
    config = Config("SASRec", "tiny", config_dict={
        "data_path": root, "use_gpu": False, "item_inter_num_interval": "[2,inf)",
        "feature_files": {"text": "tiny.text.npy"}})
    dataset = MultimodalSequentialDataset(config)
    assert "i99" not in dataset.field2token_id["item_id"]  # the fixture discriminates: RecBole filtered it
    features = dataset.item_features("text").numpy()
    rows = (folder / "tiny.items").read_text().split()[1:]
    matrix = np.load(folder / "tiny.text.npy")
    for token, internal in dataset.field2token_id["item_id"].items():
        if internal:
            np.testing.assert_array_equal(features[internal], matrix[rows.index(token)])

    add_item(folder, "i77", [])
    dataset = MultimodalSequentialDataset(config)
    with pytest.raises(FeatureFileError, match=r"0 dataset items have no row, 1 rows are for unknown items \(e\.g\. i77\)"):
        dataset.item_features("text")


class FlakyPhotos(http.server.BaseHTTPRequestHandler):
    """``/ok``: a photo; ``/flaky``: 503 on the first request, then a photo; ``/gone``: 404;
    ``/down``: always 500. Counts requests per path."""

    requests = {}

    def do_GET(self):
        count = self.requests[self.path] = self.requests.get(self.path, 0) + 1
        status = {"/ok": 200, "/flaky": 503 if count == 1 else 200, "/gone": 404, "/down": 500}[self.path]
        body = f"photo {self.path}".encode() if status == 200 else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def photo_server():
    FlakyPhotos.requests = {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyPhotos)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_photos_are_retried_cached_and_marked_missing(photo_server, tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr("recbole_fmrl.dataset_prep.images.time.sleep", sleeps.append)
    urls = {"A": f"{photo_server}/ok", "B": f"{photo_server}/flaky", "C": f"{photo_server}/gone", "D": "",
            "E": f"{photo_server}/down", "F": f"{photo_server}/ok"}
    cache = tmp_path / "images"
    paths = download_images(urls, str(cache), max_workers=2, retries=2)

    assert paths["A"] == paths["F"] and open(paths["A"], "rb").read() == b"photo /ok"
    assert open(paths["B"], "rb").read() == b"photo /flaky"  # 503 is transient: asked again, then fetched
    assert (paths["C"], paths["D"], paths["E"]) == (None, None, None)
    assert FlakyPhotos.requests == {"/ok": 1, "/flaky": 2, "/gone": 1, "/down": 3}  # one URL, one request
    assert sorted(sleeps) == [0.5, 0.5, 1.0]  # exponential backoff: flaky once, down twice
    markers = sorted(name for name in os.listdir(cache) if name.endswith(".missing"))
    assert len(markers) == 1 and (cache / markers[0]).read_text() == "404"  # only the permanent error

    again = download_images(urls, str(cache), max_workers=2, retries=2)
    assert again == paths
    assert FlakyPhotos.requests == {"/ok": 1, "/flaky": 2, "/gone": 1, "/down": 6}  # only the failed one is asked again
