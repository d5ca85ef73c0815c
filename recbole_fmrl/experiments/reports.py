"""What the experiment scripts (``compare``, ``tune``) write: paper-shaped tables (Table 2 / Table 3:
CSV and markdown), the per-size table and plot (Figure 3), the parameter table and plot (Figure 4),
with their provenance (the git commit) and progress lines. Every file is written crash-safe."""

import csv
import io
import json
import logging
import math
import subprocess
from pathlib import Path

from recbole_fmrl.config import REPORTED_METRICS
from recbole_fmrl.extras import require
from recbole_fmrl.files import atomic_path, write_text_atomic

METRIC_LABELS = {"ndcg@5": "N@5", "recall@5": "R@5", "ndcg@10": "N@10", "recall@10": "R@10"}


# --------------------------------------------------------------------------- files and provenance


def progress_logger(name):
    """A logger that prints ``[name] message`` to stderr whatever RecBole does to the root logger."""
    logger = logging.getLogger(f"recbole_fmrl.{name}")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"[{name}] %(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def git_commit(folder=None):
    """Short commit of the checkout holding this package (``-dirty`` if tracked files changed);
    ``"unknown"`` outside a git checkout or without git."""
    folder = folder or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0 or not commit.stdout.strip():
            return "unknown"
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=folder, capture_output=True, timeout=10)
        return commit.stdout.strip() + ("-dirty" if dirty.returncode == 1 else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_csv(path, header, rows):
    """Rows (lists) as a CSV written atomically; floats keep full precision (``repr``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    write_text_atomic(path, buffer.getvalue())


# --------------------------------------------------------------------------- Table 2 / Table 3


def rank_marks(values):
    """``"best"``/``"second"``/``None`` per value: the largest distinct value is best, the next
    largest second (ties share the mark); missing values (None/NaN) get no mark."""
    present = sorted({v for v in values if v is not None and not math.isnan(v)}, reverse=True)
    best = present[0] if present else None
    second = present[1] if len(present) > 1 else None
    marks = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            marks.append(None)
        elif v == best:
            marks.append("best")
        elif v == second:
            marks.append("second")
        else:
            marks.append(None)
    return marks


def markdown_escape(text):
    """Text safe inside a markdown table cell (no column breaks, no HTML tags)."""
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def metric_table_markdown(rows, first_column, metrics=REPORTED_METRICS, decimals=4):
    """Markdown table of ``rows`` = ``[(label, {metric: value} or "reason")]``: best per column
    bold, second underlined (``<u>…</u>``); a string instead of metrics spans the row as text."""
    header = f"| {first_column} | " + " | ".join(METRIC_LABELS.get(m, m) for m in metrics) + " |"
    lines = [header, "|" + "---|" * (len(metrics) + 1)]
    columns = {
        m: rank_marks([r.get(m) if isinstance(r, dict) else None for _, r in rows]) for m in metrics
    }
    for i, (label, result) in enumerate(rows):
        if not isinstance(result, dict):
            lines.append(f"| {markdown_escape(label)} | {markdown_escape(result)} |" + " |" * (len(metrics) - 1))
            continue
        cells = []
        for m in metrics:
            value = result.get(m)
            if value is None:
                cells.append("–")
                continue
            text = f"{value:.{decimals}f}"
            mark = columns[m][i]
            cells.append(f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text)
        lines.append(f"| {markdown_escape(label)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


DETAIL_COLUMNS = ("epochs_run", "best_epoch", "wall_time", "num_params", "git_commit")


def _details(record):
    settings = record.get("settings", {})
    overrides = settings.get("overrides", {})
    return {
        **{column: record.get(column) for column in DETAIL_COLUMNS},
        "config_files": " ".join(settings.get("config_files", [])),
        "overrides": json.dumps(overrides, sort_keys=True),
    }


def results_table(rows, first_column, groups=None):
    """CSV header and rows for ``rows = [(label, record or "not available: …")]``; with ``groups``
    (one per row), a ``group`` column after the first."""
    header = [first_column, *REPORTED_METRICS, *DETAIL_COLUMNS, "config_files", "overrides", "status"]
    table = []
    for label, record in rows:
        if isinstance(record, str):
            table.append([label, *([None] * (len(header) - 2)), record])
            continue
        test = record.get("test_result", {})
        details = _details(record)
        table.append([label, *(test.get(m) for m in REPORTED_METRICS), *(details[c] for c in header[5:-1]), "ok"])
    if groups is not None:
        header.insert(1, "group")
        table = [[row[0], group, *row[1:]] for row, group in zip(table, groups)]
    return header, table


def write_results_tables(rows, out_dir, stem, first_column, title, groups=None):
    """``<stem>.csv`` and ``<stem>.md``: the paper-shaped metric table and the run details. With
    ``groups`` (one per row, rows already in group order) the md table gets a heading row per group."""
    out_dir = Path(out_dir)
    header, table = results_table(rows, first_column, groups)
    write_csv(out_dir / f"{stem}.csv", header, table)
    metric_rows = []
    for i, (label, record) in enumerate(rows):
        if groups is not None and (i == 0 or groups[i] != groups[i - 1]):
            metric_rows.append((f"**{groups[i]}**", ""))
        metric_rows.append((label, record if isinstance(record, str) else record.get("test_result", {})))
    lines = [f"# {title}", "", "Test set, full ranking; best per column in **bold**, second <u>underlined</u>.", ""]
    lines.append(metric_table_markdown(metric_rows, first_column))
    details = [(label, _details(record)) for label, record in rows if not isinstance(record, str)]
    if details:
        lines += ["## Runs", "", f"| {first_column} | epochs run | best epoch | wall time (s) | parameters | commit | config files | overrides |"]
        lines.append("|---|---|---|---|---|---|---|---|")
        for label, d in details:
            params = f"{d['num_params']:,}" if isinstance(d["num_params"], int) else d["num_params"]
            lines.append(
                f"| {markdown_escape(label)} | {d['epochs_run']} | {d['best_epoch']} | {d['wall_time']} | {params} | "
                f"{d['git_commit']} | {markdown_escape(d['config_files']) or '–'} | {markdown_escape(d['overrides'])} |"
            )
        lines.append("")
    write_text_atomic(out_dir / f"{stem}.md", "\n".join(lines))


# --------------------------------------------------------------------------- Figure 3: per-size results


def size_rows(sizes, metrics=REPORTED_METRICS, drop_metrics=("ndcg@10", "recall@10")):
    """Rows of the per-size table from run()'s ``sizes`` (``{"8": {"ndcg@10": …}, …}``), smallest
    first, each with ``<metric>_drop`` = metric(previous size)/metric(size) − 1, the relative change
    when the size is halved (previous size = m/2 for the doubling series; None for the smallest)."""
    ordered = sorted(((int(size), values) for size, values in sizes.items()), key=lambda item: item[0])
    rows = []
    previous = None
    for size, values in ordered:
        row = {"size": size, **{m: values.get(m) for m in metrics}}
        for m in drop_metrics:
            if previous is None or not values.get(m) or previous.get(m) is None:
                row[f"{m}_drop"] = None
            else:
                row[f"{m}_drop"] = previous[m] / values[m] - 1.0
        rows.append(row)
        previous = values
    return rows


def write_sizes(sizes, out_dir, title=None, metrics=REPORTED_METRICS, drop_metrics=("ndcg@10", "recall@10")):
    """``sizes.csv`` and ``sizes.png`` (Figure 3: NDCG@10 and Recall@10 against size, log2 x-axis)."""
    rows = size_rows(sizes, metrics, drop_metrics)
    if not rows:
        raise ValueError("no per-size results to write")
    header = ["size", *metrics, *(f"{m}_drop" for m in drop_metrics)]
    write_csv(Path(out_dir) / "sizes.csv", header, [[row[h] for h in header] for row in rows])

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = [row["size"] for row in rows]
    for metric, marker in (("ndcg@10", "o"), ("recall@10", "s")):
        ax.plot(x, [row[metric] for row in rows], marker=marker, label=METRIC_LABELS[metric].replace("N@", "NDCG@").replace("R@", "Recall@"))
    ax.set_xscale("log", base=2)
    ax.set_xticks(x)
    ax.set_xticklabels([str(s) for s in x])
    ax.set_xlabel("model size m")
    ax.set_ylabel("metric")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save_figure(fig, Path(out_dir) / "sizes.png")
    plt.close(fig)
    return rows


def _pyplot():
    require("matplotlib").use("Agg")
    return require("matplotlib.pyplot")


def _save_figure(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format="png")


# --------------------------------------------------------------------------- Figure 4: parameters


PARAMS_HEADER = [
    "D", "sizes", "series", "independent", "saving_rate", "series_dense", "independent_dense",
    "saving_rate_dense", "series_encoder_dense", "independent_encoder_dense", "paper_saving", "paper_figure4",
]


def write_params(rows, out_dir, title=None):
    """``params.csv`` and ``params.png`` (Figure 4). Left: parameters of the series vs the sum of
    the independent models against D (log2 x-axis); right: the saving rates, with the paper's."""
    write_csv(Path(out_dir) / "params.csv", PARAMS_HEADER, [[row[h] for h in PARAMS_HEADER] for row in rows])
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = [row["D"] for row in rows]
    left.plot(x, [row["independent"] / 1e6 for row in rows], marker="s", label="independent models (sum)")
    left.plot(x, [row["series"] / 1e6 for row in rows], marker="o", label="one fMRLRec series")
    left.set_ylabel("trainable parameters (millions)")
    right.plot(x, [100 * row["saving_rate"] for row in rows], marker="o", label="1 − series/independent")
    right.plot(x, [100 * row["saving_rate_dense"] for row in rows], marker="^", label="same, masked entries counted")
    right.plot(x, [100 * row["paper_saving"] for row in rows], marker="s", label="paper convention (encoder, dense)")
    paper = [(row["D"], row["paper_figure4"]) for row in rows if row["paper_figure4"] is not None]
    if paper:
        right.plot(*zip(*paper), linestyle="none", marker="x", color="black", label="paper Figure 4")
    right.set_ylabel("saving rate (%)")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(x)
        ax.set_xticklabels([str(s) for s in x])
        ax.set_xlabel(f"largest size D (M = [{x[0]} … D])")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save_figure(fig, Path(out_dir) / "params.png")
    plt.close(fig)


# --------------------------------------------------------------------------- Table 2, one row per run and protocol


TABLE2_COLUMNS = ("model", "dataset", *REPORTED_METRICS, "exclude_seen", "valid_exclude_seen", "epochs", "best_epoch",
                  "converged", "seed", "seconds_per_epoch", "device", "hidden_size", "num_params", "git_commit", "checkpoint",
                  "command")
TRAINS_ON_SEQUENCES_BY_DEFAULT = ("LRURec", "fMRLRec")  # their YAML's train_mode: sequence


def model_label(record):
    """The name of a run's model in a comparison table: the baselines trained here without their
    pre-training say so (UniSRec with its inputs, by ``train_stage``); a record written with a
    ``table_label`` keeps it."""
    model = record["model"]
    if record.get("table_label"):
        return record["table_label"]
    if model == "UniSRec" and record.get("train_stage"):
        inputs = "text" if record["train_stage"] == "inductive_ft" else "text + ID"
        return f"UniSRec ({inputs}), no pre-training"
    if model == "VQRec":
        return "VQRec, no pre-training"
    return None


TABLE2_DROPOUT = 0.2  # the dropout every Table 2 run shares (the eSASRec recipe, docs/table2.md); labels name another


def run_label(record):
    """A run's row label: its model (with its :func:`model_label` or modalities) and how it was trained
    where that is not the model's default (dropout: not Table 2's), e.g. ``SASRec (every position, sampled softmax 256)``."""
    model, overrides = record["model"], record.get("config") or {}
    label = model_label(record) or model
    if overrides.get("encoder") == "transformer":
        label += "-Transformer"
    if record.get("modalities"):
        label += f" [{', '.join(record['modalities'])}]"
    default_mode = "sequence" if model in TRAINS_ON_SEQUENCES_BY_DEFAULT else "prefix"
    mode = overrides.get("train_mode", default_mode)
    details = []
    if mode != default_mode or model == "SASRec":
        details.append("prefixes" if mode == "prefix" else "one masked sequence per user" if model == "BERT4Rec"
                       else "every position")
    negatives = overrides.get("softmax_negatives") or 0
    if negatives:
        details.append(f"sampled softmax {negatives}" + ("" if overrides.get("shared_negatives", True) else " per position"))
    elif model == "SASRec" and mode == "sequence":
        details.append("full CE")
    if overrides.get("train_exclude_seen"):
        details.append("seen items out of the training softmax")
    if overrides.get("n_layers") is not None:
        details.append(f"{overrides['n_layers']} block{'s' if overrides['n_layers'] != 1 else ''}")
    if overrides.get("mrl_loss_weights") is not None:
        details.append(f"loss weights {overrides['mrl_loss_weights']}")
    if overrides.get("mrl_lr_exponent"):
        details.append(f"rate exponent {overrides['mrl_lr_exponent']}")
    if len(overrides.get("mrl_hidden_sizes") or ()) == 1:
        details.append(f"one size {overrides['mrl_hidden_sizes'][0]}, not nested")
    if overrides.get("r_min") is not None or overrides.get("r_max") is not None:
        details.append(f"ring r_min {overrides.get('r_min', 'default')}, r_max {overrides.get('r_max', 'default')}")
    if overrides.get("hidden_dropout_prob", TABLE2_DROPOUT) != TABLE2_DROPOUT:
        details.append(f"dropout {overrides['hidden_dropout_prob']}")
    return label + (f" ({', '.join(details)})" if details else "")


def reproducing_command(record, out):
    """The ``compare`` command that trains ``record``'s run again (its cached label, its settings)."""
    import shlex

    settings = record["settings"]
    command = ["python", "-m", "recbole_fmrl.experiments.compare", f"--dataset={settings['dataset']}",
               f"--models={record['label']}", f"--out={out}"]
    if settings["config_files"]:
        command.append(f"--config_files={' '.join(settings['config_files'])}")
    entry_settings = dict(part.partition("=")[::2] for part in record["label"].split("@")[1:])
    for key, value in settings["overrides"].items():
        if key not in entry_settings:
            command.append(f"--{key}={value if isinstance(value, str) else json.dumps(value)}")
    return shlex.join(command)


def table2_rows(records, out):
    """One row per run and evaluation protocol (``exclude_seen`` False: seen items ranked; True:
    excluded), in :data:`TABLE2_COLUMNS` order."""
    rows = []
    for record in records:
        overrides = record.get("config") or {}
        for protocol, test in sorted((record.get("test_result_by_protocol") or {}).items()):
            rows.append([
                run_label(record), record["dataset"], *(test.get(m) for m in REPORTED_METRICS),
                protocol == "seen_excluded", bool(record.get("exclude_seen")), record.get("epochs_run"),
                record.get("best_epoch"), bool(record.get("stopped_early")), record.get("seed"),
                record.get("seconds_per_epoch"), record.get("device"), overrides.get("hidden_size"), record.get("num_params"),
                record.get("git_commit"), record.get("checkpoint") and Path(record["checkpoint"]).name,
                reproducing_command(record, out),
            ])
    return rows


def write_table2(out_dir, out):
    """``<out_dir>/table2.csv`` from every finished run cached under ``<out_dir>/runs/`` (runs made
    before both protocols were tested have no row). Returns the rows."""
    records = []
    for path in sorted(Path(out_dir, "runs").glob("*.json")):
        if not path.name.endswith(".partial.json"):
            records.append(read_json(path))
    rows = table2_rows(records, out)
    write_csv(Path(out_dir) / "table2.csv", TABLE2_COLUMNS, rows)
    return rows
