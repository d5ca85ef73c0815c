"""Materialising an embedded dataset writes only what the model reads, one writer at a time, and
runs started together in a fresh folder do not race over the folders they write to."""

import os
import threading

import pytest
from recbole.utils import ensure_dir

from recbole_fmrl.config import Config
from recbole_fmrl.data import embedded, encoders
from recbole_fmrl.data.loading import feature_modalities, prepare_dataset_folder
from recbole_fmrl.runner import RECBOLE_LOG_DIR, make_run_folders


def run_together(fn, n):
    """``fn()`` in ``n`` threads released at the same instant; their results (any exception is re-raised)."""
    barrier, results, errors = threading.Barrier(n), [], []

    def call():
        barrier.wait()
        try:
            results.append(fn())
        except Exception as err:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def test_an_id_model_on_fresh_beauty_never_runs_the_text_encoder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def no_encoder(*args, **kwargs):
        raise AssertionError("the text encoder ran for a model that reads no text")

    monkeypatch.setattr(encoders, "load_text_encoder", no_encoder)
    monkeypatch.setattr(encoders, "encode_texts", no_encoder)
    overrides = {"data_path": str(tmp_path), "use_gpu": False}
    assert feature_modalities(Config("LRURec", "beauty", config_dict=overrides)) == ()
    assert feature_modalities(Config("SASRec", "beauty", config_dict=overrides)) == ()
    assert feature_modalities(Config("fMRLRec", "beauty", config_dict=overrides)) == ("text",)  # beauty's default
    assert feature_modalities(Config("UniSRec", "beauty", config_dict=overrides)) == ("text",)

    folder = prepare_dataset_folder(Config("LRURec", "beauty", config_dict=overrides))
    assert sorted(os.listdir(folder)) == ["beauty.inter", "beauty.interactions.done.json", "beauty.items.tsv"]
    with open(os.path.join(folder, "beauty.inter"), encoding="utf-8") as f:
        assert sum(1 for _ in f) == 198502 + 1  # Table 1's interactions, and the header


def test_concurrent_materialisations_wait_for_one_writer(tmp_path, monkeypatch):
    writes = []
    write = embedded.write_embedded

    def counted(*args, **kwargs):
        writes.append(threading.get_ident())
        return write(*args, **kwargs)

    monkeypatch.setattr(embedded, "write_embedded", counted)
    results = run_together(lambda: embedded.ensure_embedded_dataset("toys", str(tmp_path)), 3)
    assert len(writes) == 1 and sorted(results) == [False, False, True]
    assert sorted(os.listdir(tmp_path / "toys")) == ["toys.inter", "toys.interactions.done.json", "toys.items.tsv"]
    assert embedded.ensure_embedded_dataset("toys", str(tmp_path)) is False and len(writes) == 1


@pytest.mark.parametrize("repeat", range(3))
def test_runs_started_together_in_a_fresh_folder_make_their_folders_without_racing(tmp_path, monkeypatch, repeat):
    """RecBole's ensure_dir (check, then create) raises FileExistsError when two runs create a folder
    at once; the runner creates them first with exist_ok, so RecBole's own calls find them."""
    monkeypatch.chdir(tmp_path)
    config = {"model": "LRURec", "checkpoint_dir": "saved"}

    def start():
        make_run_folders(config)
        ensure_dir(os.path.dirname(RECBOLE_LOG_DIR))  # what RecBole's init_logger and trainer do next
        ensure_dir(os.path.join(os.path.dirname(RECBOLE_LOG_DIR), config["model"]))
        ensure_dir(config["checkpoint_dir"])

    run_together(start, 8)
    assert (tmp_path / "log" / "LRURec").is_dir() and (tmp_path / "saved").is_dir()
