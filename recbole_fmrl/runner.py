"""Train, validate with early stopping, test the best checkpoint: RecBole's ``run_recbole`` for the plugin."""

import logging
import os
import time
import warnings
from logging import getLogger

import colorlog
import torch
from recbole.utils import init_logger, init_seed, set_color

from recbole_fmrl import distributed
from recbole_fmrl.checkpoint import read_checkpoint, run_identity
from recbole_fmrl.config import REPORTED_METRICS, Config, get_model, to_primitive
from recbole_fmrl.data import SeenExcludingEvalDataLoader, data_preparation
from recbole_fmrl.data.loading import create_dataset
from recbole_fmrl.files import write_json_atomic
from recbole_fmrl.model.layers import count_parameters
from recbole_fmrl.model.next_item_training import check_train_mode
from recbole_fmrl.model.protocol import nested_sizes, run_record, trains_on_sequences
from recbole_fmrl.trainer import get_trainer

# RecBole 1.2.1 builds its AMP scaler through the deprecated torch.cuda.amp API on every run.
warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler", category=FutureWarning)

RECBOLE_LOG_DIR = "./log/"  # where RecBole's init_logger writes (recbole.utils.logger.LOGROOT)


def build(model, dataset, config_file_list=None, config_dict=None):
    """``(config, model, dataset, (train, valid, test loaders))`` with RecBole's logger set up and the
    model initialised, as RecBole builds them."""
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    distributed.join(config)
    init_seed(config["seed"], config["reproducibility"])
    if config["torch_num_threads"]:
        torch.set_num_threads(config["torch_num_threads"])
    reset_recbole_logging()
    init_run_logger(config)
    logger = getLogger()
    for line in config.warnings:
        logger.warning(line)
    model_class = get_model(config["model"])
    check_train_mode(config["train_mode"], config["model"], trains_on_sequences(model_class))
    with distributed.main_first():  # rank 0 writes an embedded dataset's folder, the others read it
        dataset = create_dataset(config)  # first: a missing dataset fails before anything is logged
    logger.info(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + distributed.rank(), config["reproducibility"])  # dropout masks differ per process
    model = model_class(config, train_data._dataset).to(config["device"])
    logger.info(repr(model))  # the structure; not RecBole's str(), whose parameter count includes structural zeros
    logger.info(set_color("trainable parameters", "blue") + f": {count_parameters(model):,}")
    return config, model, dataset, (train_data, valid_data, test_data)


def init_run_logger(config):
    """RecBole's logger (console and log file) on rank 0; on the other processes of a data-parallel
    run, errors only, on the console (RecBole's own data parallelism logs them so too)."""
    if distributed.is_main():
        make_run_folders(config)
        init_logger(config)
        return
    console = logging.StreamHandler()
    console.setFormatter(colorlog.ColoredFormatter("%(log_color)s%(asctime)-15s %(levelname)s  %(message)s"))
    logging.basicConfig(level=logging.ERROR, handlers=[console])


def reset_recbole_logging():
    """Drop the handlers of a previous ``init_logger``: RecBole configures logging through
    ``logging.basicConfig``, which is a no-op once handlers exist, so a second run in the same
    process (compare, tune, tests) would write into the first run's log file."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) or isinstance(handler.formatter, colorlog.ColoredFormatter):
            root.removeHandler(handler)
            handler.close()


def make_run_folders(config):
    """Create the folders a run writes to (RecBole's log folder, the checkpoint folder) before RecBole
    does: its ``ensure_dir`` checks, then creates, so two runs started together in a fresh folder
    race and one fails with ``FileExistsError``; ``exist_ok`` makes the second a no-op."""
    for folder in (os.path.join(RECBOLE_LOG_DIR, config["model"]), config["checkpoint_dir"]):
        os.makedirs(folder, exist_ok=True)


def evaluate_sizes(trainer, model, test_data, show_progress=False):
    """Test metrics at every nested size m in M (nested models only; ``{}`` for others)."""
    sizes = {}
    for size in nested_sizes(model):
        model.eval_size = size
        sizes[size] = dict(trainer.evaluate(test_data, load_best_model=False, show_progress=show_progress))
    if sizes:
        model.eval_size = size
    return sizes


def format_table(rows, first_column):
    """Rows ``{label: {metric: value}}`` as an aligned text table of the reported metrics."""
    header = f"{first_column:>10} " + " ".join(f"{m:>10}" for m in REPORTED_METRICS)
    lines = [header]
    for label, metrics in rows.items():
        lines.append(f"{label!s:>10} " + " ".join(f"{metrics.get(m, float('nan')):>10.4f}" for m in REPORTED_METRICS))
    return "\n".join(lines)


def device_name(device):
    """What a run trained on, for its seconds per epoch: ``cpu`` or e.g. ``cuda (NVIDIA H200)``."""
    device = torch.device(device)
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


def run(model, dataset, config_file_list=None, config_dict=None, saved=True, resume=None, callback=None,
        on_start=None):
    """Train ``model`` on ``dataset``, test the best checkpoint and return every result.

    Returns a dict with ``best_valid_result``, ``test_result`` (under the run's protocol,
    ``exclude_seen``), ``test_result_by_protocol`` (``seen_ranked`` and ``seen_excluded``: the best
    model tested both ways), ``sizes`` (per nested size, for fMRL models), ``epochs_run``,
    ``best_epoch``, ``stopped_early`` (early stopping ended it, not the ``epochs`` cap),
    ``seconds_per_epoch``, ``device`` (what it trained on: :func:`device_name`), ``seed``, ``wall_time``,
    ``num_params`` and ``checkpoint``.
    ``callback(epoch, valid_score)`` runs after every validation (Ray Tune reports through it).
    ``on_start(last_checkpoint)`` runs once before training with the ``-last.pth`` path that
    ``resume`` would continue from (compare records it to resume an interrupted run).
    In a data-parallel run every process calls it and gets the same results; rank 0 writes the files.
    """
    started = time.time()
    checkpoint = read_checkpoint(resume) if resume else None  # a damaged file fails before anything runs
    config, model, _, (train_data, valid_data, test_data) = build(model, dataset, config_file_list, config_dict)
    logger = getLogger()
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.identity = run_identity(train_data._dataset, model)
    if resume:
        trainer.resume_checkpoint(resume, checkpoint)
    if on_start:
        on_start(trainer.last_model_file)
    try:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=callback
        )
    except KeyboardInterrupt:
        logger.warning(f"interrupted: resume with --resume={trainer.last_model_file}")
        raise
    test_result = dict(trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"]))
    test_results = {protocol_name(config["exclude_seen"]): test_result}
    if isinstance(test_data, SeenExcludingEvalDataLoader):
        test_data.exclude_seen = not config["exclude_seen"]
        test_results[protocol_name(test_data.exclude_seen)] = dict(
            trainer.evaluate(test_data, load_best_model=False, show_progress=config["show_progress"]))
        test_data.exclude_seen = config["exclude_seen"]
    sizes = evaluate_sizes(trainer, model, test_data, config["show_progress"])
    if sizes:
        logger.info(set_color("test result per size", "yellow") + ":\n" + format_table(sizes, "size"))

    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": float(best_valid_score),
        "best_valid_result": to_primitive(best_valid_result or {}),
        "test_result": to_primitive(test_result),
        "exclude_seen": config["exclude_seen"],
        "test_result_by_protocol": to_primitive(test_results),
        "sizes": to_primitive(sizes),
        "epochs_run": len(trainer.valid_history),
        "best_epoch": trainer.best_epoch,
        "stopped_early": len(trainer.valid_history) < config["epochs"],
        "seconds_per_epoch": trainer.seconds_per_epoch,
        "device": device_name(config["device"]),
        "seed": config["seed"],
        "wall_time": round(time.time() - started, 2),
        "num_params": count_parameters(model),
        "checkpoint": trainer.saved_model_file if saved else None,
        "config": config.overrides(),
        **run_record(model),  # what the run's label names (experiments.reports.run_label)
    }
    if saved and distributed.is_main():
        write_json_atomic(trainer.saved_model_file[: -len(".pth")] + ".results.json", result, indent=1, sort_keys=False)
    logger.info(
        set_color("best valid", "yellow") + ":\n" + format_table({"valid": result["best_valid_result"]}, "")
    )
    logger.info(set_color("test result", "yellow") + ":\n" + format_table(test_results, ""))
    return result


def protocol_name(exclude_seen):
    """The key of a test result under one evaluation protocol (``exclude_seen``)."""
    return "seen_excluded" if exclude_seen else "seen_ranked"
