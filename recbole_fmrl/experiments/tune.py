"""Hyper-parameter search with Ray Tune (ASHA early stopping on validation NDCG@10).

    python -m recbole_fmrl.experiments.tune --model=fMRLRec --dataset=beauty [--space=FILE] [--num_samples=N]
        [--scheduler=asha|fifo] [--epochs=E] [--address=ADDR] [--cpus_per_trial=C] [--gpus_per_trial=G]
        [--max_concurrent=K] [--config_files="a.yaml b.yaml"] [--out=DIR] [--key=value ...]

Each trial is one ``runner.run`` (no checkpoints) whose per-epoch validation score is
reported to Ray Tune, so ASHA stops bad trials early. ``--key=value`` pairs and ``--config_files``
apply to every trial (data paths are made absolute: Ray runs trials in their own folders). Writes

* ``<out>/<dataset>/tune.csv`` — one row per trial, best first (best validation score over its epochs);
* ``<out>/<dataset>/tune_best_<model>.yaml`` — the best trial's tuned keys, for ``--config_files``;
* Ray's trial folders under ``<out>/<dataset>/ray_tune/`` (``--storage`` to change).

The search space (``--space``) is a RecBole hyper file, as ``run_hyper.py`` reads it (one line per
key: ``learning_rate loguniform -8,0`` (e^-8 … e^0), ``hidden_size choice [64,128]``,
``dropout uniform 0.1,0.5``, ``x quniform 0,10,2``), or the plugin's YAML (``properties/tune/<model>.yaml``),
which adds derived keys::

    hidden_size: {choice: [64, 128]}          # also: grid, uniform, loguniform, randint, quniform
    _dropout: {uniform: [0.1, 0.8]}           # keys starting with "_" only feed `derived`
    epochs: 50                                # a plain value is fixed
    derived:                                  # computed in the trial from sampled values
      hidden_dropout_prob: {from: _dropout}   # value = from * multiply + add
      r_max: {from: r_min, add: 0.1}
      mrl_hidden_sizes: {doubling: hidden_size, smallest: 8}   # [8, 16, ..., hidden_size]
"""

import logging
import math
import os
import re
import time
from pathlib import Path

import yaml

from recbole_fmrl.config import PROPERTIES_DIR, Config, config_keys, to_primitive
from recbole_fmrl.errors import PluginError, main_guarded
from recbole_fmrl.extras import require
from recbole_fmrl.experiments import reports
from recbole_fmrl.files import write_text_atomic
from recbole_fmrl.flags import FlagParser
from recbole_fmrl.inputs import check_config_files, literal_value, output_folder

logger = reports.progress_logger("tune")

DISTRIBUTIONS = {  # name: (number of arguments, how the arguments read)
    "choice": (None, "a non-empty list of values"),
    "grid": (None, "a non-empty list of values"),
    "uniform": (2, "[low, high]"),
    "loguniform": (2, "[low, high] with 0 < low"),
    "randint": (2, "[low, high) integers"),
    "quniform": (3, "[low, high, step]"),
}


# --------------------------------------------------------------------------- the search space


RECBOLE_HYPER_FORMS = {"choice": "[v1,v2,...]", "uniform": "low,high", "quniform": "low,high,q",
                      "loguniform": "low,high (exponents of e)"}
RECBOLE_HYPER_LINE = re.compile(rf"\s*(\S+)\s+({'|'.join(RECBOLE_HYPER_FORMS)})\s+(\S.*?)\s*")


def read_recbole_hyper_file(path, lines):
    """The space of a RecBole hyper file (``run_hyper.py``'s format: ``key kind values`` per line) in
    the YAML format's terms. As RecBole reads it: ``choice [v1,v2]`` (values read as Python
    literals, never run), ``uniform low,high``, ``quniform low,high,q``, and ``loguniform low,high``
    sampled between e^low and e^high."""
    space = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, kind, values = RECBOLE_HYPER_LINE.fullmatch(line).groups()
        values = values.replace(" ", "")
        try:
            args = literal_value(values) if kind == "choice" else [float(v) for v in values.split(",")]
        except ValueError:
            args = None
        if not isinstance(args, list) or kind != "choice" and len(args) != DISTRIBUTIONS[kind][0]:
            raise PluginError(
                f"search space {path}, line {number}: {key} {kind} takes {RECBOLE_HYPER_FORMS[kind]}, got {values!r}")
        if kind == "loguniform":
            args = [math.exp(args[0]), math.exp(args[1])]
        space[key] = {kind: args}
    return space


def is_recbole_hyper_file(lines):
    """Whether every line that is not blank or a comment reads ``key kind values`` (RecBole's format)."""
    lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return bool(lines) and all(RECBOLE_HYPER_LINE.fullmatch(line) for line in lines)


def load_space(path):
    """Read a search space, RecBole's hyper file (:func:`read_recbole_hyper_file`) or the plugin's
    YAML: returns ``(space, derived)`` as plain dicts, checked.

    ``space[key]`` is ``{"choice": [...]}`` / ``{"uniform": [lo, hi]}`` / ... or a fixed value;
    ``derived[key]`` is ``{"from": key, "add": a, "multiply": b}`` or ``{"doubling": key, "smallest": s}``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise PluginError(f"cannot read search space {path}: {err.strerror}") from None
    lines = text.splitlines()
    try:
        data = read_recbole_hyper_file(path, lines) if is_recbole_hyper_file(lines) else yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PluginError(f"search space {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data:
        raise PluginError(f"search space {path} must be a mapping of keys to distributions")
    derived = data.pop("derived", None) or {}
    space = {}
    for key, spec in data.items():
        if isinstance(spec, dict):
            if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
                raise PluginError(
                    f"search space {path}: {key} must be one of {{{', '.join(DISTRIBUTIONS)}: ...}} or a fixed value, got {spec!r}"
                )
            kind, args = next(iter(spec.items()))
            count, shape = DISTRIBUTIONS[kind]
            if not isinstance(args, list) or not args or (count is not None and len(args) != count):
                raise PluginError(f"search space {path}: {key}: {kind} takes {shape}, got {args!r}")
            if count is not None and not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                raise PluginError(f"search space {path}: {key}: {kind} takes numbers, got {args!r}")
            if count is not None and args[0] >= args[1] or kind == "loguniform" and args[0] <= 0:
                raise PluginError(f"search space {path}: {key}: {kind} takes {shape}, got {args!r}")
        space[key] = spec
    if not isinstance(derived, dict):
        raise PluginError(f"search space {path}: derived must be a mapping")
    for key, rule in derived.items():
        source = rule.get("from", rule.get("doubling")) if isinstance(rule, dict) else None
        allowed = {"from", "add", "multiply"} if isinstance(rule, dict) and "from" in rule else {"doubling", "smallest"}
        if source is None or not set(rule) <= allowed:
            raise PluginError(
                f"search space {path}: derived {key} must be {{from: KEY, add: A, multiply: B}} or {{doubling: KEY, smallest: S}}, got {rule!r}"
            )
        if source not in space:
            raise PluginError(f"search space {path}: derived {key} reads {source!r}, which the space does not define")
    return space, derived


def ray_space(space):
    """The space as Ray Tune sampling objects."""
    tune = require("ray.tune")

    makers = {
        "choice": lambda args: tune.choice(args),
        "grid": lambda args: tune.grid_search(args),
        "uniform": lambda args: tune.uniform(*args),
        "loguniform": lambda args: tune.loguniform(*args),
        "randint": lambda args: tune.randint(*args),
        "quniform": lambda args: tune.quniform(*args),
    }
    converted = {}
    for key, spec in space.items():
        if isinstance(spec, dict):
            kind, args = next(iter(spec.items()))
            converted[key] = makers[kind](args)
        else:
            converted[key] = spec
    return converted


def resolve(sampled, derived):
    """The trial's config keys: sampled values (``_helpers`` dropped) plus the derived ones."""
    from recbole_fmrl.model.layers import doubling_sizes

    values = {key: to_primitive(value) for key, value in sampled.items()}
    for key, rule in derived.items():
        if rule.get("doubling", rule.get("from")) not in values:
            continue  # e.g. a trial that never started
        if "doubling" in rule:
            values[key] = doubling_sizes(int(values[rule["doubling"]]), int(rule.get("smallest", 8)))
        else:
            value = values[rule["from"]] * rule.get("multiply", 1) + rule.get("add", 0)
            values[key] = round(value, 12) if isinstance(value, float) else value
    return {key: value for key, value in values.items() if not key.startswith("_")}


# --------------------------------------------------------------------------- the trial


def trainable(sampled, model, dataset, config_files, overrides, derived, metric, threads):
    """One trial: train with the sampled config, reporting the validation score every epoch."""
    import torch
    tune = require("ray.tune")

    from recbole_fmrl.runner import run

    torch.set_num_threads(max(1, threads))
    best = -math.inf

    def report(epoch, valid_score):
        nonlocal best
        best = max(best, float(valid_score))
        tune.report({metric: float(valid_score), f"best_{metric}": best, "epoch": int(epoch)})

    run(model, dataset, config_files or None, {**overrides, **resolve(sampled, derived)}, saved=False, callback=report)


# --------------------------------------------------------------------------- the driver


def absolute_settings(config, overrides, config_files):
    """Overrides with absolute ``data_path``/``checkpoint_dir`` and absolute config files."""
    overrides = dict(overrides)
    overrides["data_path"] = os.path.abspath(os.path.dirname(os.path.normpath(config["data_path"])))
    overrides["checkpoint_dir"] = os.path.abspath(config["checkpoint_dir"])
    return overrides, [os.path.abspath(f) for f in config_files]


def model_keys(model, dataset):
    """Keys the model (and RecBole's trainer) understands (:meth:`Config.known_keys`)."""
    return Config(model=model, dataset=dataset, config_dict={"use_gpu": False}).known_keys()


def trial_rows(result_grid, metric, mode, derived):
    """One dict per trial, best first: id, best and last validation score, epochs, time, error,
    the sampled values and the derived keys (``"result"``: Ray's Result, not written out)."""
    rows = []
    for result in result_grid:
        frame = result.metrics_dataframe
        scores = [] if frame is None or metric not in frame else [float(v) for v in frame[metric].dropna()]
        pick = max if mode == "max" else min
        row = {
            "trial_id": (result.metrics or {}).get("trial_id") or Path(result.path).name,
            metric: pick(scores) if scores else None,
            f"last_{metric}": scores[-1] if scores else None,
            "epochs": len(scores),
            "time_total_s": round(float((result.metrics or {}).get("time_total_s", 0.0)), 2),
            "error": str(result.error).strip().splitlines()[-1][:300] if result.error else "",
            **{key: to_primitive(value) for key, value in (result.config or {}).items()},
            **{key: value for key, value in resolve(result.config or {}, derived).items() if key in derived},
            "result": result,
        }
        rows.append(row)
    missing = math.inf if mode == "min" else -math.inf
    rows.sort(key=lambda r: r[metric] if r[metric] is not None else missing, reverse=(mode == "max"))
    return rows


def write_best_yaml(path, params, model, dataset, metric, value, trial_id):
    header = (
        f"# Best {model} trial on {dataset} by validation {metric} = {value:.4f} "
        f"(trial {trial_id}, commit {reports.git_commit()}, {time.strftime('%Y-%m-%d %H:%M')}).\n"
        f"# Use: python run_recbole_fmrl.py --model={model} --dataset={dataset} --config_files={path}\n"
    )
    write_text_atomic(path, header + yaml.safe_dump(to_primitive(params), sort_keys=True))


def init_ray(address, num_cpus):
    ray = require("ray")

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


def tune_model(model, dataset, space_file, num_samples=10, scheduler="asha", address=None, epochs=None,
               config_files=(), overrides=None, out="results", cpus_per_trial=None, gpus_per_trial=None,
               max_concurrent=None, storage=None):
    """Run the search; write tune.csv and tune_best_<model>.yaml; return the sorted trial rows."""
    ray = require("ray")
    import torch
    tune = require("ray.tune")
    schedulers = require("ray.tune.schedulers")

    from recbole_fmrl.data.loading import prepare_dataset_folder

    overrides = dict(overrides or {})
    if epochs is not None:
        overrides["epochs"] = int(epochs)
    overrides.setdefault("show_progress", False)
    space, derived = load_space(space_file)
    # Checks the input (one-line errors) and prepares an embedded dataset once, before any trial.
    config = Config(model=model, dataset=dataset, config_file_list=list(config_files) or None, config_dict=dict(overrides))
    prepare_dataset_folder(config)
    overrides, config_files = absolute_settings(config, overrides, config_files)
    metric = config["valid_metric"].lower()
    mode = "max" if config["valid_metric_bigger"] else "min"
    known = model_keys(model, dataset)
    tuned_keys = [k for k in space if not k.startswith("_")] + [k for k in derived if k not in space]
    unknown = sorted(k for k in tuned_keys if k not in known)
    if unknown:
        raise PluginError(f"search space {space_file} sets keys {model} does not use: {', '.join(unknown)}")

    cpus = os.cpu_count() or 1
    use_gpu = torch.cuda.is_available() and config["use_gpu"]
    gpus_per_trial = (1.0 if use_gpu else 0.0) if gpus_per_trial is None else float(gpus_per_trial)
    cpus_per_trial = cpus_per_trial or (1 if cpus <= 4 else 2)
    concurrency = max_concurrent or max(1, cpus // cpus_per_trial)
    if gpus_per_trial > 0:
        concurrency = min(concurrency, max(1, int(torch.cuda.device_count() / gpus_per_trial)))
    if gpus_per_trial == 0:
        overrides["use_gpu"] = False
    out_dir = output_folder(Path(out).resolve(), dataset)
    storage = Path(storage).resolve() if storage else out_dir / "ray_tune"
    logger.info(
        f"tuning {model} on {dataset}: {num_samples} samples of {space_file}, {scheduler} on {metric} ({mode}), "
        f"{concurrency} at a time with {cpus_per_trial} CPU / {gpus_per_trial:g} GPU each; Ray results in {storage}"
    )
    scheduler_obj = (
        schedulers.ASHAScheduler(metric=metric, mode=mode, grace_period=1, max_t=int(config["epochs"]), time_attr="training_iteration")
        if scheduler == "asha"
        else schedulers.FIFOScheduler()
    )
    trial = tune.with_parameters(
        trainable, model=model, dataset=dataset, config_files=config_files, overrides=overrides,
        derived=derived, metric=metric, threads=int(cpus_per_trial),
    )
    started = time.time()
    try:
        init_ray(address, None if address else cpus)
        tuner = tune.Tuner(
            tune.with_resources(trial, {"cpu": cpus_per_trial, "gpu": gpus_per_trial}),
            param_space=ray_space(space),
            tune_config=tune.TuneConfig(
                num_samples=num_samples, scheduler=scheduler_obj,
                max_concurrent_trials=concurrency,
            ),
            run_config=tune.RunConfig(name=f"{model}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(storage), verbose=0),
        )
        result_grid = tuner.fit()
        rows = trial_rows(result_grid, metric, mode, derived)
    finally:
        ray.shutdown()
    logger.info(f"{len(rows)} trials in {time.time() - started:.1f} s")

    header = ["trial_id", metric, f"last_{metric}", "epochs", "time_total_s", "error", *space,
              *(k for k in derived if k not in space)]
    reports.write_csv(out_dir / "tune.csv", header, [[_cell(row.get(h)) for h in header] for row in rows])
    logger.info(f"trials written to {out_dir / 'tune.csv'}")
    if not rows or rows[0][metric] is None:
        raise PluginError(f"no trial reported {metric}; see the trial errors in {out_dir / 'tune.csv'}")
    best = rows[0]
    params = resolve(best["result"].config, derived)
    best_file = out_dir / f"tune_best_{model}.yaml"
    write_best_yaml(best_file, params, model, dataset, metric, best[metric], best["trial_id"])
    logger.info(f"best {metric} = {best[metric]:.4f} (trial {best['trial_id']}): {params}; written to {best_file}")
    return rows


def _cell(value):
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return to_primitive(value)


def build_parser():
    parser = FlagParser(prog="python -m recbole_fmrl.experiments.tune", description=__doc__, config_keys=config_keys)
    parser.add_argument("--model", "-m", required=True, help="model to tune (fMRLRec, LRURec, SASRec, ...)")
    parser.add_argument("--dataset", "-d", required=True, help="dataset name")
    parser.add_argument("--space", default=None, help="search space: a RecBole hyper file or the plugin's YAML (default: properties/tune/<model>.yaml)")
    parser.add_argument("--num_samples", type=int, default=10, help="trials to sample (x grid size for grid keys)")
    parser.add_argument("--scheduler", choices=("asha", "fifo"), default="asha", help="asha stops weak trials early; fifo runs every trial to the end")
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs per trial, ASHA's max_t (default: the config's epochs, e.g. 300 for fMRLRec)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster, e.g. auto or ray://host:10001 (default: a local Ray)")
    parser.add_argument("--cpus_per_trial", type=float, default=None, help="CPUs per trial (default: 1 on up to 4 cores, else 2)")
    parser.add_argument("--gpus_per_trial", type=float, default=None, help="GPUs per trial (default: 1 when the config uses a visible GPU, else 0)")
    parser.add_argument("--max_concurrent", type=int, default=None, help="trials at a time (default: as the CPUs and GPUs allow)")
    parser.add_argument("--config_files", default="", help="space-separated YAML files, used for every trial")
    parser.add_argument("--out", default="results", help="output folder (<out>/<dataset>/tune.csv, tune_best_<model>.yaml)")
    parser.add_argument("--storage", default=None, help="Ray's results folder (default: <out>/<dataset>/ray_tune)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.num_samples < 1:
        raise PluginError("--num_samples must be at least 1")
    space = args.space or str(PROPERTIES_DIR / "tune" / f"{args.model}.yaml")
    if not os.path.isfile(space):
        raise PluginError(f"search space not found: {space} (pass --space=<file>)")
    config_files = args.config_files.split()
    check_config_files(config_files)
    tune_model(args.model, args.dataset, space, args.num_samples, args.scheduler, args.address, args.epochs,
               config_files, args.overrides, args.out, args.cpus_per_trial, args.gpus_per_trial, args.max_concurrent,
               args.storage)
    return 0


if __name__ == "__main__":
    main_guarded(main)
