"""Paper-shaped experiments on one dataset: Table 2 (models), Figure 3 (sizes), Figure 4 (parameters)
and Table 3 (modality ablation).

    python -m recbole_fmrl.experiments.compare --dataset=beauty \\
        [--models=SASRec,LRURec,UniSRec@train_stage=inductive_ft,VQRec,fMRLRec] [--config_files="a.yaml b.yaml"] \\
        [--model_config=fMRLRec=results/beauty/tune_best_fMRLRec.yaml ...] \\
        [--ablation="text,image;text;image;id"] [--params] [--force] [--out=DIR] [--key=value ...]
    python -m recbole_fmrl.experiments.compare --dataset=beauty --sizes_from=saved/fMRLRec-<time>.results.json
    python -m recbole_fmrl.experiments.compare --dataset=beauty --params [--params_sizes=128,256,512,1024,2048]

Every model runs through ``recbole_fmrl.runner.run`` with the same config files and
``--key=value`` overrides, hence the same seed, split and evaluator (``--model_config`` adds a
file for one model only, e.g. its tuned hyper-parameters; ``MODEL@key=value[@key=value]`` in
``--models`` runs a model with settings of its own, e.g. UniSRec's two fine-tuning settings). Each
finished run is cached as
``<out>/<dataset>/runs/<label>.json``; a later call reuses it when its settings (config files, their
contents and the overrides) are unchanged, unless ``--force``, and resumes a run that was
interrupted after an epoch from its ``-last.pth``. Written under ``<out>/<dataset>/``:

* ``comparison.md`` / ``comparison.csv`` — Table 2: N@5 R@5 N@10 R@10 on test (best bold, second
  underlined in the md), rows grouped as the paper's columns (ID-based, text-based, multimodal) and,
  per model, overrides, epochs run, best epoch, wall time, parameters, commit;
* ``table2.csv`` — every run cached under ``runs/``, one row per run and protocol (seen items ranked,
  RecBole's; seen items excluded), with epochs, best epoch, whether early stopping ended it, seed,
  seconds per epoch, the device it trained on and the command that trains it again;
* ``sizes.csv`` / ``sizes.png`` — Figure 3, whenever fMRLRec runs (or from ``--sizes_from``);
* ``ablation.md`` / ``ablation.csv`` — Table 3, one fMRLRec run per modality set of ``--ablation``;
  a set whose features the dataset lacks gets the row ``not available: <reason>``;
* ``params.csv`` / ``params.png`` — Figure 4 (``--params``), counted on freshly built fMRLRec models.
"""

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from recbole_fmrl.config import REPORTED_METRICS, config_keys, get_model
from recbole_fmrl.errors import FeatureFileError, PluginError, main_guarded
from recbole_fmrl.experiments import params, reports
from recbole_fmrl.files import write_json_atomic
from recbole_fmrl.flags import FlagParser, parse_value
from recbole_fmrl.inputs import check_config_files, output_folder

DEFAULT_MODELS = ("SASRec", "BERT4Rec", "FMLPRec", "LRURec", "UniSRec@train_stage=inductive_ft",
                  "UniSRec@train_stage=transductive_ft", "VQRec", "fMRLRec")
# Table 2's column groups. RecBole's sequential models learn item IDs, except those that also read
# item attributes; those are not in the paper and get a group of their own.
GROUPS = ("ID-based", "text-based", "multimodal", "attribute-aware (RecBole)")
GROUP_OF = {"UniSRec": "text-based", "VQRec": "text-based", "fMRLRec": "multimodal",
            **dict.fromkeys(("FDSA", "SASRecF", "GRU4RecF", "S3Rec", "KSR", "GRU4RecKG"), "attribute-aware (RecBole)")}
DEFAULT_ABLATION = "text,image;text;image;id"
MODALITY_NAMES = ("text", "image", "attributes", "id")

logger = reports.progress_logger("compare")


def default_runner(*args, **kwargs):
    """``runner.run``, looked up at call time (tests replace it)."""
    from recbole_fmrl.runner import run

    return run(*args, **kwargs)


def parse_modality_sets(text):
    """``"text,image;text;id"`` -> ``[["text", "image"], ["text"], ["id"]]`` (checked)."""
    sets = []
    for part in text.split(";"):
        names = [name.strip() for name in part.split(",") if name.strip()]
        if not names:
            continue
        unknown = [name for name in names if name not in MODALITY_NAMES]
        if unknown:
            raise PluginError(f"unknown modality {unknown[0]!r} in --ablation: choose among {', '.join(MODALITY_NAMES)}")
        if len(set(names)) != len(names):
            raise PluginError(f"modality set {part!r} in --ablation names a modality twice")
        sets.append(names)
    if not sets:
        raise PluginError(f"--ablation {text!r} names no modality set (e.g. {DEFAULT_ABLATION!r})")
    return sets


def modality_label(modalities):
    return "+".join(modalities)


def parse_model_entry(entry):
    """``"UniSRec@train_stage=inductive_ft"`` -> ``("UniSRec", {"train_stage": "inductive_ft"})``."""
    model, *settings = entry.split("@")
    overrides = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key.strip() or not model.strip():
            raise PluginError(f"--models entry {entry!r}: expected MODEL or MODEL@key=value[@key=value]")
        overrides[key.strip()] = parse_value(value)
    return model.strip(), overrides


def paper_group(model):
    """The group of ``model``'s row in Table 2 (one of :data:`GROUPS`)."""
    return GROUP_OF.get(model, "ID-based")


# --------------------------------------------------------------------------- runs (cached)


def file_digest(path):
    """SHA-256 of a config file, so that editing it invalidates the cached runs that used it."""
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def run_settings(model, dataset, config_files, overrides):
    """What identifies a run in the cache: model, dataset, config files (with digests), overrides."""
    return {
        "model": model, "dataset": dataset, "config_files": list(config_files),
        "config_sha256": [file_digest(f) for f in config_files], "overrides": overrides,
    }


def interrupted_checkpoint(partial, settings):
    """The ``-last.pth`` of an interrupted run with these ``settings`` (recorded in ``partial`` when it
    started), or None: a rerun of compare continues that run instead of starting it over."""
    try:
        started = reports.read_json(partial)
    except (OSError, ValueError):
        return None
    checkpoint = started.get("checkpoint")
    if started.get("settings") != settings or not checkpoint or not Path(checkpoint).is_file():
        return None
    return started


def cached_run(label, model, dataset, config_files, overrides, out_dir, force=False, runner=None):
    """Run ``model`` (or reuse ``<out_dir>/runs/<label>.json`` when its settings match) and return
    the run record: runner.run()'s result plus ``label``, ``settings``, ``git_commit``,
    ``finished``. A run with these settings that was interrupted after an epoch (its start is
    recorded in ``runs/<label>.partial.json``) is resumed from its ``-last.pth``; ``wall_time`` then
    adds the time the interrupted part trained (``resumed_from`` names the file). Raises
    FeatureFileError when the dataset lacks the model's features."""
    runner = runner or default_runner
    path = Path(out_dir) / "runs" / f"{label}.json"
    partial = path.with_name(f"{label}.partial.json")
    settings = run_settings(model, dataset, config_files, overrides)
    if path.is_file() and not force:
        try:
            record = reports.read_json(path)
        except (OSError, ValueError):
            record = None
            logger.warning(f"{label}: unreadable cache {path}; running again")
        if record is not None and record.get("settings") == settings:
            logger.info(f"{label}: done before, skipped (cached in {path}; --force runs it again)")
            return record
        if record is not None:
            logger.info(f"{label}: settings differ from the cached run {path}; running again")
    interrupted = None if force else interrupted_checkpoint(partial, settings)
    resume, trained_before = None, 0.0
    if interrupted:
        resume = interrupted["checkpoint"]
        trained_before = interrupted.get("trained_before", 0.0) + Path(resume).stat().st_mtime - interrupted["started"]
        logger.info(f"{label}: resuming the interrupted run from {resume} (--force starts it over)")
    else:
        logger.info(f"{label}: training {model} on {dataset} ...")
    started = time.time()
    commit = reports.git_commit()  # the code this run uses (before anything can change it)

    def record_start(last_checkpoint):
        write_json_atomic(partial, {"settings": settings, "checkpoint": last_checkpoint,
                                    "started": started, "trained_before": trained_before}, indent=1, sort_keys=False)

    result = runner(model, dataset, list(config_files) or None, json.loads(json.dumps(overrides)),
                    resume=resume, on_start=record_start)
    record = {
        "label": label,
        "settings": settings,
        "git_commit": commit,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **result,
    }
    if resume:
        record["resumed_from"] = resume
        record["wall_time"] = round(record.get("wall_time", 0.0) + trained_before, 2)
    write_json_atomic(path, record, indent=1, sort_keys=False)
    partial.unlink(missing_ok=True)
    test = record.get("test_result", {})
    logger.info(
        f"{label}: finished in {time.time() - started:.1f} s, {record.get('epochs_run')} epochs, "
        + " ".join(f"{m}={test.get(m, float('nan')):.4f}" for m in REPORTED_METRICS)
    )
    return record


def run_or_unavailable(label, model, dataset, config_files, overrides, out_dir, force, runner):
    """:func:`cached_run`, or the string ``"not available: <reason>"`` if features are missing."""
    try:
        return cached_run(label, model, dataset, config_files, overrides, out_dir, force, runner)
    except FeatureFileError as err:
        logger.warning(f"{label}: not available: {err}")
        return f"not available: {err}"


# --------------------------------------------------------------------------- tables


def write_sizes_from_record(record, out_dir, dataset):
    sizes = record.get("sizes") or {}
    if not sizes:
        raise PluginError(f"run of {record.get('model', '?')} has no per-size results ('sizes' is empty)")
    rows = reports.write_sizes(sizes, out_dir, title=f"{record.get('model', 'fMRLRec')} on {dataset}")
    logger.info(f"per-size results ({len(rows)} sizes) written to {Path(out_dir) / 'sizes.csv'} and sizes.png")
    return rows


# --------------------------------------------------------------------------- the experiments


def compare(dataset, models, config_files=(), overrides=None, out="results", force=False, runner=None,
            model_config_files=None):
    """Table 2: run every model in ``models`` (``MODEL`` or ``MODEL@key=value…``, see
    :func:`parse_model_entry`); write comparison.md/.csv (and sizes.* for fMRLRec). ``model_config_files``
    (``{model: [file, ...]}``) adds files for one model only, after the shared ones (e.g. its tuned
    ``tune_best_<model>.yaml``). Returns ``{entry: record or "not available: …"}``; rows are labelled
    by the model's label where it has one (``reports.model_label``, e.g. "UniSRec (text), no pre-training")."""
    overrides = dict(overrides or {})
    model_config_files = model_config_files or {}
    entries = {entry: parse_model_entry(entry) for entry in models}
    for model in [m for m, _ in entries.values()] + list(model_config_files):
        get_model(model)  # unknown names fail before anything runs
    out_dir = output_folder(out, dataset)
    results = {}
    for i, (entry, (model, settings)) in enumerate(entries.items(), 1):
        logger.info(f"({i}/{len(models)}) {entry}")
        files = list(config_files) + list(model_config_files.get(model, []))
        results[entry] = run_or_unavailable(entry, model, dataset, files, {**overrides, **settings}, out_dir, force, runner)
    order = sorted(results, key=lambda entry: GROUPS.index(paper_group(entries[entry][0])))
    rows = [(_row_label(entry, results[entry]), results[entry]) for entry in order]
    reports.write_results_tables(rows, out_dir, "comparison", "Model", f"Model comparison on {dataset} (Table 2)",
                         groups=[paper_group(entries[entry][0]) for entry in order])
    logger.info(f"comparison written to {out_dir / 'comparison.md'} and comparison.csv")
    reports.write_table2(out_dir, out)
    logger.info(f"every cached run under both protocols written to {out_dir / 'table2.csv'}")
    for model, record in results.items():
        if not isinstance(record, str) and record.get("sizes"):
            write_sizes_from_record(record, out_dir, dataset)
    return results


def _row_label(entry, record):
    return (reports.model_label(record) or entry) if isinstance(record, dict) else entry


def comparison_run_with(modalities, dataset, config_files, overrides, out_dir):
    """The cached ``compare`` run of fMRLRec (``runs/fMRLRec.json``) if it had the same settings and
    its modalities (the dataset's default) were exactly ``modalities``: that run IS this ablation row."""
    path = Path(out_dir) / "runs" / "fMRLRec.json"
    try:
        record = reports.read_json(path)
    except (OSError, ValueError):
        return None
    settings = run_settings("fMRLRec", dataset, config_files, overrides)
    if record.get("settings") == settings and record.get("modalities") == list(modalities):
        logger.info(f"{modality_label(modalities)}: same run as the comparison's fMRLRec ({path}), reused")
        return record
    return None


def ablation(dataset, modality_sets, config_files=(), overrides=None, out="results", force=False, runner=None):
    """Table 3: one fMRLRec run per modality set; writes ablation.md/.csv. Returns ``{label: …}``."""
    out_dir = output_folder(out, dataset)
    results = {}
    for i, modalities in enumerate(modality_sets, 1):
        label = modality_label(modalities)
        logger.info(f"({i}/{len(modality_sets)}) fMRLRec with modalities {label}")
        settings = {**(overrides or {}), "modalities": list(modalities)}
        reused = None if force else comparison_run_with(modalities, dataset, config_files, overrides or {}, out_dir)
        results[label] = reused or run_or_unavailable(
            f"fMRLRec-{label}", "fMRLRec", dataset, config_files, settings, out_dir, force, runner
        )
    reports.write_results_tables(list(results.items()), out_dir, "ablation", "Modalities", f"fMRLRec modality ablation on {dataset} (Table 3)")
    logger.info(f"ablation written to {out_dir / 'ablation.md'} and ablation.csv")
    reports.write_table2(out_dir, out)
    return results


def parse_feature_dims(text):
    dims = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise PluginError(f"--feature_dims expects modality=width pairs, e.g. text=1024,image=1152; got {part!r}")
        dims[name.strip()] = int(value)
    return dims


def parse_sizes(text, option):
    try:
        sizes = [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        raise PluginError(f"{option} expects integers, e.g. 128,256,512; got {text!r}") from None
    if not sizes or any(s <= 0 for s in sizes) or sorted(set(sizes)) != sizes:
        raise PluginError(f"{option} must be strictly increasing positive integers, got {text!r}")
    return sizes


def parameters(dataset, full_sizes, config_files=(), overrides=None, out="results", item_num=None,
               feature_dims=None, independent="nested"):
    """Figure 4 on freshly built fMRLRec models; writes params.csv/.png and returns the rows."""
    overrides = {k: v for k, v in (overrides or {}).items() if k not in ("hidden_size", "mrl_hidden_sizes", "eval_size")}
    logger.info(f"counting parameters of fMRLRec for D in {full_sizes} ({independent} independent models)")
    rows = params.parameter_rows(dataset, full_sizes, item_num, feature_dims, list(config_files) or None,
                                  overrides, independent)
    out_dir = output_folder(out, dataset)
    reports.write_params(rows, out_dir, title=f"fMRLRec parameters ({dataset} config)")
    for row in rows:
        paper = row["paper_figure4"]
        logger.info(
            f"D={row['D']}: series {row['series']:,} vs independent {row['independent']:,}: saving "
            f"{100 * row['saving_rate']:.2f}%; paper convention {100 * row['paper_saving']:.2f}%"
            + (f" (paper: {paper:.2f}%)" if paper is not None else "")
        )
    logger.info(f"parameters written to {out_dir / 'params.csv'} and params.png")
    return rows


def build_parser():
    parser = FlagParser(prog="python -m recbole_fmrl.experiments.compare", description=__doc__, config_keys=config_keys)
    parser.add_argument("--dataset", "-d", default=None,
                        help="dataset name (an embedded one or a folder under data_path) (default: the run file's, with --sizes_from)")
    parser.add_argument("--models", default=None, help="comma-separated models, each MODEL or MODEL@key=value[@key=value] (settings for that run only) "
                        f"(default: {','.join(DEFAULT_MODELS)}, when no --ablation, --params or --sizes_from is asked)")
    parser.add_argument("--config_files", default="", help="space-separated YAML files, used for every run")
    parser.add_argument("--model_config", action="append", default=[], metavar="MODEL=FILE",
                        help="a YAML file for one model only, e.g. fMRLRec=results/beauty/tune_best_fMRLRec.yaml (repeatable)")
    parser.add_argument("--force", action="store_true", help="run again even if a cached run exists")
    parser.add_argument("--out", default="results", help="output folder (results/<dataset>/...)")
    parser.add_argument("--ablation", default=None, metavar="SETS",
                        help=f"modality sets for fMRLRec (among {', '.join(MODALITY_NAMES)}), ';'-separated, e.g. {DEFAULT_ABLATION!r} (default: no ablation)")
    parser.add_argument("--sizes_from", default=None, metavar="RUN.json",
                        help="write sizes.csv/png from a run result JSON (runs/fMRLRec.json or saved/*.results.json) (default: none)")
    parser.add_argument("--params", action="store_true", help="write params.csv/png (Figure 4) from built models")
    parser.add_argument("--params_sizes", default="128,256,512,1024,2048", help="full sizes D; series M = [first … D]")
    parser.add_argument("--params_independent", choices=("nested", "single"), default="nested",
                        help="independent size-m model: fMRLRec with M = [first … m] (nested) or M = [m] (single)")
    parser.add_argument("--feature_dims", default="text=1024,image=1152",
                        help="feature widths used by --params (the paper's bge-large and SigLIP so400m)")
    parser.add_argument("--item_num", type=int, default=None, help="items for --params' ID table (default: the paper dataset's)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    overrides = args.overrides
    if args.dataset is not None:
        output_folder(args.out, args.dataset)  # a name, not a path: checked before anything is written
    config_files = args.config_files.split()
    check_config_files(config_files)
    model_config_files = {}
    for item in args.model_config:
        model, sep, file = item.partition("=")
        if not sep or not model or not file:
            raise PluginError(f"--model_config expects MODEL=FILE, got {item!r}")
        check_config_files([file])
        model_config_files.setdefault(model, []).append(file)
    did_something = False
    if args.sizes_from:
        try:
            record = reports.read_json(args.sizes_from)
        except (OSError, ValueError) as err:
            raise PluginError(f"cannot read --sizes_from {args.sizes_from}: {err}") from None
        if not isinstance(record, dict):
            raise PluginError(f"--sizes_from {args.sizes_from} is not a run result (a JSON object)")
        dataset = args.dataset or record.get("dataset")
        if not dataset:
            raise PluginError("pass --dataset: the run file names no dataset")
        write_sizes_from_record(record, output_folder(args.out, dataset), dataset)
        did_something = True
    if not args.dataset:
        if did_something:
            return 0
        raise PluginError("no dataset given: pass --dataset=<name>")
    models = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    if not models and not (args.ablation or args.params or args.sizes_from):
        models = list(DEFAULT_MODELS)
    modality_sets = parse_modality_sets(args.ablation) if args.ablation else None
    full_sizes = parse_sizes(args.params_sizes, "--params_sizes") if args.params else None
    feature_dims = parse_feature_dims(args.feature_dims) if args.params else None
    for model in [parse_model_entry(entry)[0] for entry in models] + list(model_config_files):
        get_model(model)  # every check before the first run
    if args.params:
        parameters(args.dataset, full_sizes, config_files + model_config_files.get("fMRLRec", []), overrides,
                   args.out, args.item_num, feature_dims, args.params_independent)
    if models:
        compare(args.dataset, models, config_files, overrides, args.out, args.force, None, model_config_files)
    if modality_sets:
        files = config_files + model_config_files.get("fMRLRec", [])
        ablation(args.dataset, modality_sets, files, overrides, args.out, args.force)
    return 0


if __name__ == "__main__":
    main_guarded(main)
