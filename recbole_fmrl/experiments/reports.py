"""Shared helpers for the experiment scripts (``compare``, ``tune``): atomic files, the git commit,
paper-shaped tables (Table 2 / Table 3), the per-size table and plot (Figure 3) and parameter
counts of freshly built models (Figure 4)."""

import csv
import io
import json
import logging
import math
import subprocess
from pathlib import Path

from dataset_prep.atomic import atomic_path
from recbole_fmrl.quick_start import REPORTED_METRICS

METRIC_LABELS = {"ndcg@5": "N@5", "recall@5": "R@5", "ndcg@10": "N@10", "recall@10": "R@10"}
PAPER_FIGURE4_SAVING = {128: 0.0, 256: 25.16, 512: 31.39, 1024: 32.90, 2048: 33.25}
"""The saving rates (%) printed in the paper's Figure 4 for M = [2^7, ..., D]."""
PAPER_FEATURE_DIMS = {"text": 1024, "image": 1152}
"""Feature sizes of the paper's encoders: BAAI/bge-large-en-v1.5 (text), SigLIP so400m (image)."""
PAPER_ITEM_NUM = {"beauty": 12101, "sports": 18357, "toys": 11924, "clothing": 23033}
"""Items of the paper's datasets (5-core Amazon 2014), without RecBole's padding item."""


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


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


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
    atomic_write_text(path, buffer.getvalue())


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format="png")


# --------------------------------------------------------------------------- Figure 4: parameters


def structural_zeros(model):
    """Entries of trainable weights that are masked to zero by construction (fMRL layers expose a
    boolean ``zero_mask`` beside their ``weight``)."""
    zeros = 0
    for module in model.modules():
        mask, weight = getattr(module, "zero_mask", None), getattr(module, "weight", None)
        if mask is not None and weight is not None and getattr(weight, "requires_grad", False):
            zeros += int(mask.sum())
    return zeros


def dense_parameters(model, prefix=None):
    """Trainable parameter entries, masked ones included (optionally only under ``prefix``)."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if p.requires_grad and (prefix is None or name.startswith(prefix))
    )


def count_parameters(model):
    """Trainable parameters without the structurally-zero fMRL entries: the model's own
    ``count_parameters()`` if it has one, else dense count − :func:`structural_zeros`."""
    if hasattr(model, "count_parameters"):
        return int(model.count_parameters())
    return dense_parameters(model) - structural_zeros(model)


class StandInDataset:
    """The little of a RecBole dataset a model's constructor reads: ``num(item field)`` and
    ``item_features(modality)`` (zeros of the given widths); lets a real fMRLRec be built at the
    paper's scale without its data."""

    def __init__(self, item_num, feature_dims):
        self.item_num = int(item_num)
        self.feature_dims = dict(feature_dims)

    def num(self, field):
        return self.item_num

    def item_features(self, modality):
        import torch

        from recbole_fmrl.errors import FeatureFileError

        if modality not in self.feature_dims:
            raise FeatureFileError(f"no feature width given for modality '{modality}'")
        return torch.zeros(self.item_num, self.feature_dims[modality])


def build_fmrlrec(dataset, sizes, item_num, feature_dims, config_file_list=None, config_dict=None):
    """A freshly initialised fMRLRec with ``mrl_hidden_sizes = sizes`` (``hidden_size = sizes[-1]``),
    configured like ``dataset`` (its YAML, the given files and overrides)."""
    import torch

    from recbole_fmrl.config import Config
    from recbole_fmrl.model import fMRLRec

    overrides = dict(config_dict or {})
    overrides.update(
        {"hidden_size": sizes[-1], "mrl_hidden_sizes": list(sizes), "eval_size": sizes[-1], "use_gpu": False}
    )
    config = Config(model="fMRLRec", dataset=dataset, config_file_list=config_file_list, config_dict=overrides)
    with torch.device("cpu"):
        return fMRLRec(config, StandInDataset(item_num + 1, feature_dims)), config


def model_counts(model):
    """``(params, params_dense, encoder_params_dense)`` of a built fMRLRec: structural zeros not
    counted / counted, and the dense count of the sequence encoder alone (LRU blocks + final norm,
    i.e. without the item projection / ID table)."""
    return count_parameters(model), dense_parameters(model), dense_parameters(model, prefix="encoder.")


def parameter_rows(
    dataset,
    full_sizes=(128, 256, 512, 1024, 2048),
    item_num=None,
    feature_dims=None,
    config_file_list=None,
    config_dict=None,
    independent="nested",
    builder=build_fmrlrec,
):
    """Figure 4 from real models. For every D in ``full_sizes`` the series is ONE fMRLRec with
    M_D = [s in full_sizes, s <= D]; the alternative trains one model per m in M_D independently,
    each an fMRLRec with M_m (``independent="nested"``) or with M = [m] (``"single"``, a plain
    size-m model). Columns:

    * ``series``, ``independent``: trainable parameters, structurally-zero fMRL entries not counted;
      ``saving_rate`` = 1 − series / independent;
    * ``series_dense``, ``independent_dense``, ``saving_rate_dense``: the same with masked entries
      counted (every weight matrix at full D×D size);
    * ``series_encoder_dense``, ``independent_encoder_dense``: dense, sequence encoder only;
      ``paper_saving`` = independent_encoder_dense / series_encoder_dense − 1 (the extra
      parameters of the independent models relative to the series: the convention that reproduces
      the paper's Figure 4 numbers, see docs/reproducing.md).
    """
    full_sizes = sorted(int(s) for s in full_sizes)
    item_num = PAPER_ITEM_NUM.get(dataset, 1000) if item_num is None else item_num
    feature_dims = dict(PAPER_FEATURE_DIMS if feature_dims is None else feature_dims)
    cache = {}

    def counts(sizes):
        key = tuple(sizes)
        if key not in cache:
            model, _ = builder(dataset, list(sizes), item_num, feature_dims, config_file_list, config_dict)
            cache[key] = model_counts(model)
            del model
        return cache[key]

    rows = []
    for full in full_sizes:
        series_sizes = [s for s in full_sizes if s <= full]
        series = counts(series_sizes)
        singles = [
            counts([s for s in series_sizes if s <= m] if independent == "nested" else [m]) for m in series_sizes
        ]
        independent_counts = [sum(c[i] for c in singles) for i in range(3)]
        rows.append(
            {
                "D": full,
                "sizes": " ".join(str(s) for s in series_sizes),
                "series": series[0],
                "independent": independent_counts[0],
                "saving_rate": 1.0 - series[0] / independent_counts[0],
                "series_dense": series[1],
                "independent_dense": independent_counts[1],
                "saving_rate_dense": 1.0 - series[1] / independent_counts[1],
                "series_encoder_dense": series[2],
                "independent_encoder_dense": independent_counts[2],
                "paper_saving": independent_counts[2] / series[2] - 1.0,
                "paper_figure4": PAPER_FIGURE4_SAVING.get(full) if full_sizes[0] == 128 else None,
            }
        )
    return rows


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
