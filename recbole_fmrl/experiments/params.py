"""Figure 4 of the paper: the parameters one fMRLRec series saves against training every size
independently, counted on freshly built models (no data: :class:`~recbole_fmrl.data.stand_in.StandInDataset`)."""

import torch

from recbole_fmrl.config import Config
from recbole_fmrl.data.stand_in import StandInDataset
from recbole_fmrl.data.paper import TABLE1
from recbole_fmrl.model import fMRLRec
from recbole_fmrl.model.layers import count_parameters

PAPER_FIGURE4_SAVING = {128: 0.0, 256: 25.16, 512: 31.39, 1024: 32.90, 2048: 33.25}
"""The saving rates (%) printed in the paper's Figure 4 for M = [2^7, ..., D]."""
PAPER_FEATURE_DIMS = {"text": 1024, "image": 1152}
"""Feature sizes of the paper's encoders: BAAI/bge-large-en-v1.5 (text), SigLIP so400m (image)."""
PAPER_ITEM_NUM = {name: items for name, (_, items, _) in TABLE1.items()}
"""Items of the paper's datasets (Table 1), without RecBole's padding item."""


def dense_parameters(model, prefix=None):
    """Trainable parameter entries, masked ones included (optionally only under ``prefix``)."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if p.requires_grad and (prefix is None or name.startswith(prefix))
    )


def build_fmrlrec(dataset, sizes, item_num, feature_dims, config_file_list=None, config_dict=None):
    """A freshly initialised fMRLRec with ``mrl_hidden_sizes = sizes`` (``hidden_size = sizes[-1]``),
    configured like ``dataset`` (its YAML, the given files and overrides)."""
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
      the paper's Figure 4 numbers, as docs/results.md's "Figure 4" section explains).
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
