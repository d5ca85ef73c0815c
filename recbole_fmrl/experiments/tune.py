"""Hyper-parameter search with Ray Tune (ASHA early stopping on validation NDCG@10).

    python -m recbole_fmrl.experiments.tune --model=fMRLRec --dataset=beauty [--space=FILE] [--num_samples=N]
        [--scheduler=asha|fifo] [--epochs=E] [--address=ADDR] [--cpus_per_trial=C] [--gpus_per_trial=G]
        [--max_concurrent=K] [--config_files="a.yaml b.yaml"] [--out=DIR] [--resume] [--key=value ...]

Each trial is one ``runner.run`` (no checkpoints) in one process on at most one GPU, whose per-epoch
validation score is reported to Ray Tune, so ASHA stops bad trials early. ``--key=value`` pairs and
``--config_files`` apply to every trial (data paths are made absolute: Ray runs trials in their own
folders, on a cluster on any node). Trial resources and concurrency come from the Ray cluster's nodes
(a local Ray, or ``--address``), and the driver writes its tables from the results Ray sends back,
never from files a trial wrote on its node. Writes

* ``<out>/<dataset>/tune_<model>.csv`` — one row per trial, best first (best validation score over its epochs);
* ``<out>/<dataset>/tune_best_<model>.yaml`` — the best trial's tuned keys, for ``--config_files``;
* Ray's experiment folder under ``<out>/<dataset>/ray_tune/`` (``--storage`` to change: a folder or a
  URI such as ``s3://bucket/path`` that every node of a cluster can write).

``--resume`` continues the newest ``<model>-<time>`` experiment of that folder (Ray's ``Tuner.restore``)
instead of starting a new one: finished trials are kept, a trial that was running when the search stopped
starts again from its first epoch (trials keep no checkpoints), and the trials not yet started run.
The search space, scheduler and concurrency are the interrupted search's (give the same ``--num_samples``:
it counts the trials the search must end). A search stopped with Ctrl-C writes its tables from the trials
it has so far, marked partial (the CSV's ``status`` column, a line in the best YAML and the log); the resumed
search writes them again from all of them.

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

import contextlib
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


def trainable(sampled, model, dataset, config_files, overrides, derived, metric, mode, threads):
    """One trial: train with the sampled config, reporting every epoch the validation score, the best
    so far, the node the trial runs on and the GPUs its process sees. A trial given GPUs trains on the
    ones Ray assigned (``gpu_id``: RecBole's config would otherwise point CUDA_VISIBLE_DEVICES at GPU 0)."""
    import torch
    ray = require("ray")
    tune = require("ray.tune")

    from recbole_fmrl.runner import run

    torch.set_num_threads(max(1, threads))
    gpus = [str(gpu) for gpu in ray.get_gpu_ids()]
    node_id = ray.get_runtime_context().get_node_id()
    pick = max if mode == "max" else min
    best = None

    def report(epoch, valid_score):
        nonlocal best
        best = float(valid_score) if best is None else pick(best, float(valid_score))
        tune.report({metric: float(valid_score), f"best_{metric}": best, "epoch": int(epoch), "node_id": node_id,
                     "gpu_id": os.environ.get("CUDA_VISIBLE_DEVICES", "") if gpus else ""})

    settings = {**overrides, **resolve(sampled, derived), **({"gpu_id": ",".join(gpus)} if gpus else {})}
    run(model, dataset, config_files or None, settings, saved=False, callback=report)


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


def trial_status(result):
    """``done`` (ended by early stopping, the scheduler or its last epoch: Ray's final report carries
    ``done``), ``error``, or ``unfinished`` (started or queued, not ended: the search was stopped)."""
    if result.error:
        return "error"
    return "done" if (result.metrics or {}).get("done") else "unfinished"


def trial_rows(result_grid, metric, mode, derived):
    """One dict per trial, best first: id, status (:func:`trial_status`), best and last validation
    score, epochs, time, node, GPUs, error, the sampled values and the derived keys (``"result"``: Ray's
    Result, not written out). Read from each trial's last report as Ray sent it to the driver, not from
    files: on a cluster a trial's files are on its node."""
    rows = []
    for result in result_grid:
        metrics = result.metrics or {}
        row = {
            "trial_id": metrics.get("trial_id") or Path(result.path).name,
            "status": trial_status(result),
            metric: metrics.get(f"best_{metric}"),
            f"last_{metric}": metrics.get(metric),
            "epochs": int(metrics.get("training_iteration", 0)),
            "time_total_s": round(float(metrics.get("time_total_s", 0.0)), 2),
            "node_id": metrics.get("node_id", ""),
            "gpu_id": metrics.get("gpu_id", ""),
            "error": str(result.error).strip().splitlines()[-1][:300] if result.error else "",
            **{key: to_primitive(value) for key, value in (result.config or {}).items()},
            **{key: value for key, value in resolve(result.config or {}, derived).items() if key in derived},
            "result": result,
        }
        rows.append(row)
    missing = math.inf if mode == "min" else -math.inf
    rows.sort(key=lambda r: r[metric] if r[metric] is not None else missing, reverse=(mode == "max"))
    return rows


def trials_planned(space, num_samples):
    """How many trials the search runs: ``num_samples`` times the size of every ``grid`` key's list."""
    return num_samples * math.prod(len(spec["grid"]) for spec in space.values() if isinstance(spec, dict) and "grid" in spec)


def unfinished_note(rows, planned):
    """One line saying the search is partial (fewer than ``planned`` trials ended), or '' when it is not."""
    ended = sum(row["status"] != "unfinished" for row in rows)
    if ended >= planned:
        return ""
    return (f"partial search: {ended} of {planned} trials ended, {len(rows) - ended} unfinished "
            "(status column); --resume continues it")


def write_best_yaml(path, params, model, dataset, metric, value, trial_id, note=""):
    header = (
        f"# Best {model} trial on {dataset} by validation {metric} = {value:.4f} "
        f"(trial {trial_id}, commit {reports.git_commit()}, {time.strftime('%Y-%m-%d %H:%M')}).\n"
        + (f"# {note[0].upper()}{note[1:]}: the best trial so far.\n" if note else "")
        + f"# Use: python run_recbole_fmrl.py --model={model} --dataset={dataset} --config_files={path}\n"
    )
    write_text_atomic(path, header + yaml.safe_dump(to_primitive(params), sort_keys=True))


@contextlib.contextmanager
def visible_gpus_kept():
    """Undo RecBole's ``Config``, which sets CUDA_VISIBLE_DEVICES to ``gpu_id``: the driver's local Ray
    must see every GPU of the machine."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        yield
    finally:
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible


def init_ray(address):
    """Connect to the Ray cluster at ``address``, or start a local Ray on this machine's CPUs (and
    the GPUs Ray detects); returns the resources of each alive node (``ray.nodes()``)."""
    ray = require("ray")

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    return [node["Resources"] for node in ray.nodes() if node["Alive"]]


def trial_resources(nodes, use_gpu, cpus_per_trial=None, gpus_per_trial=None, max_concurrent=None):
    """``(cpus, gpus, concurrency)`` of the trials on a cluster whose nodes have the resources
    ``nodes`` (dicts with ``CPU``, ``GPU``). A trial runs on one node: by default 1 CPU (2 when the largest
    node has more than 4) and 1 GPU when the config uses GPUs and the cluster has some; as many at a time as
    fit on the nodes together."""
    largest = max(node.get("CPU", 0) for node in nodes)
    cpus = float(cpus_per_trial or (1 if largest <= 4 else 2))
    has_gpus = any(node.get("GPU", 0) for node in nodes)
    gpus = (1.0 if use_gpu and has_gpus else 0.0) if gpus_per_trial is None else float(gpus_per_trial)

    def fit(have, need):
        return math.floor(have / need + 1e-9) if need else math.inf

    per_node = [min(fit(node.get("CPU", 0), cpus), fit(node.get("GPU", 0), gpus)) for node in nodes]
    if not any(per_node):
        shapes = ", ".join(f"{node.get('CPU', 0):g} CPU/{node.get('GPU', 0):g} GPU" for node in nodes)
        raise PluginError(f"no node of the Ray cluster ({shapes}) has {cpus:g} CPU and {gpus:g} GPU for one trial; "
                          "lower --cpus_per_trial or --gpus_per_trial")
    return cpus, gpus, max_concurrent or int(sum(per_node))


def storage_location(storage, out_dir):
    """Ray's experiment folder: ``<out_dir>/ray_tune``, an absolute folder, or a URI (``s3://...``) as given."""
    if not storage:
        return str(out_dir / "ray_tune")
    return storage if "://" in storage else str(Path(storage).resolve())


def latest_experiment(storage, model):
    """The newest ``<model>-<time>`` experiment folder Ray can restore in the local folder ``storage``."""
    tune = require("ray.tune")

    if "://" in storage:
        raise PluginError(f"--resume reads a local experiment folder, not {storage}")
    folders = sorted(p for p in Path(storage).glob(f"{model}-*") if p.is_dir() and tune.Tuner.can_restore(str(p)))
    if not folders:
        raise PluginError(f"--resume: no {model} search to continue in {storage}")
    return str(folders[-1])


def tune_model(model, dataset, space_file, num_samples=10, scheduler="asha", address=None, epochs=None,
               config_files=(), overrides=None, out="results", cpus_per_trial=None, gpus_per_trial=None,
               max_concurrent=None, storage=None, resume=False):
    """Run the search (``resume``: continue the newest one of ``model`` in the storage folder); write
    tune_<model>.csv and tune_best_<model>.yaml; return the sorted trial rows."""
    ray = require("ray")
    tune = require("ray.tune")
    schedulers = require("ray.tune.schedulers")

    from recbole_fmrl.data.loading import prepare_dataset_folder

    overrides = dict(overrides or {})
    if epochs is not None:
        overrides["epochs"] = int(epochs)
    overrides.setdefault("show_progress", False)
    space, derived = load_space(space_file)
    with visible_gpus_kept():
        # Checks the input (one-line errors) and prepares an embedded dataset once, before any trial.
        config = Config(model=model, dataset=dataset, config_file_list=list(config_files) or None, config_dict=dict(overrides))
        prepare_dataset_folder(config)
        known = model_keys(model, dataset)
    overrides, config_files = absolute_settings(config, overrides, config_files)
    metric = config["valid_metric"].lower()
    mode = "max" if config["valid_metric_bigger"] else "min"
    tuned_keys = [k for k in space if not k.startswith("_")] + [k for k in derived if k not in space]
    unknown = sorted(k for k in tuned_keys if k not in known)
    if unknown:
        raise PluginError(f"search space {space_file} sets keys {model} does not use: {', '.join(unknown)}")

    if gpus_per_trial is not None and float(gpus_per_trial) > 1:
        raise PluginError(f"--gpus_per_trial={gpus_per_trial:g}: a trial is one process on one GPU (a fraction "
                          "shares one); docs/tuning.md, Ray cluster")
    out_dir = output_folder(Path(out).resolve(), dataset)
    storage = storage_location(storage, out_dir)
    experiment = latest_experiment(storage, model) if resume else None
    scheduler_obj = (
        schedulers.ASHAScheduler(metric=metric, mode=mode, grace_period=1, max_t=int(config["epochs"]), time_attr="training_iteration")
        if scheduler == "asha"
        else schedulers.FIFOScheduler()
    )
    started = time.time()
    try:
        nodes = init_ray(address)
        cpus_per_trial, gpus_per_trial, concurrency = trial_resources(
            nodes, config["use_gpu"], cpus_per_trial, gpus_per_trial, max_concurrent)
        if gpus_per_trial == 0:
            overrides["use_gpu"] = False
        logger.info(
            f"tuning {model} on {dataset}: {num_samples} samples of {space_file}, {scheduler} on {metric} ({mode}), "
            f"{concurrency} at a time on {len(nodes)} node(s) with {cpus_per_trial:g} CPU / {gpus_per_trial:g} GPU "
            f"each; Ray results in {storage}"
        )
        trial = tune.with_parameters(
            trainable, model=model, dataset=dataset, config_files=config_files, overrides=overrides,
            derived=derived, metric=metric, mode=mode, threads=int(cpus_per_trial),
        )
        trial = tune.with_resources(trial, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        if experiment:
            logger.info(f"continuing the search in {experiment}")
            tuner = tune.Tuner.restore(experiment, trial, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trial,
                param_space=ray_space(space),
                tune_config=tune.TuneConfig(
                    num_samples=num_samples, scheduler=scheduler_obj,
                    max_concurrent_trials=concurrency,
                ),
                run_config=tune.RunConfig(name=f"{model}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=storage, verbose=0),
            )
        result_grid = tuner.fit()
        rows = trial_rows(result_grid, metric, mode, derived)
    finally:
        ray.shutdown()
    logger.info(f"{len(rows)} trials in {time.time() - started:.1f} s")

    header = ["trial_id", "status", metric, f"last_{metric}", "epochs", "time_total_s", "node_id", "gpu_id", "error", *space,
              *(k for k in derived if k not in space)]
    table = out_dir / f"tune_{model}.csv"
    reports.write_csv(table, header, [[_cell(row.get(h)) for h in header] for row in rows])
    logger.info(f"trials written to {table}")
    note = unfinished_note(rows, trials_planned(space, num_samples))
    if note:
        logger.warning(f"{note}; the tables hold the trials so far")
    if not rows or rows[0][metric] is None:
        raise PluginError(f"no trial reported {metric}; see the trial errors in {table}")
    best = rows[0]
    params = resolve(best["result"].config, derived)
    best_file = out_dir / f"tune_best_{model}.yaml"
    write_best_yaml(best_file, params, model, dataset, metric, best[metric], best["trial_id"], note)
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
    parser.add_argument("--address", default=None, help="an existing Ray cluster, e.g. auto, host:6379 or ray://host:10001 (default: a local Ray)")
    parser.add_argument("--cpus_per_trial", type=float, default=None, help="CPUs per trial (default: 1 where the cluster's largest node has up to 4, else 2)")
    parser.add_argument("--gpus_per_trial", type=float, default=None, help="GPUs per trial, at most 1 (default: 1 when the config uses GPUs and the cluster has some, else 0)")
    parser.add_argument("--max_concurrent", type=int, default=None, help="trials at a time (default: as many as fit on the cluster's nodes)")
    parser.add_argument("--config_files", default="", help="space-separated YAML files, used for every trial")
    parser.add_argument("--out", default="results", help="output folder (<out>/<dataset>/tune_<model>.csv, tune_best_<model>.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue the newest search of this model in the storage folder (finished trials kept)")
    parser.add_argument("--storage", default=None, help="Ray's experiment folder, or a URI such as s3://bucket/path; on a cluster one every node can write (default: <out>/<dataset>/ray_tune)")
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
               args.storage, args.resume)
    return 0


if __name__ == "__main__":
    main_guarded(main)
