"""The plugin's RecBole ``Config``: plugin models first, plugin YAML defaults, numpy-2 safe, and no
``eval`` of config strings."""

import enum
import functools
import os
import re
from pathlib import Path

import numpy as np
import recbole
import torch
import yaml
from recbole.config import Config as RecBoleConfig

from recbole_fmrl import distributed
from recbole_fmrl.errors import ConfigError, PluginError
from recbole_fmrl.inputs import (
    check_config_files, check_config_values, dataset_name, literal_value, unknown_key_warnings,
)

REPORTED_METRICS = ("ndcg@5", "recall@5", "ndcg@10", "recall@10")
"""The metrics every table of the plugin reports (the paper's §4.1; ``properties/overall.yaml``)."""

RECBOLE_PROPERTIES_DIR = Path(recbole.__file__).resolve().parent / "properties"
# From a checkout: <repo>/properties. From a wheel: setup.cfg installs it as recbole_fmrl/properties.
PROPERTIES_DIR = Path(__file__).resolve().parent.parent / "properties"
if not PROPERTIES_DIR.is_dir():
    PROPERTIES_DIR = Path(__file__).resolve().parent / "properties"


def plugin_model_names():
    """Names of the models this plugin provides (``recbole_fmrl.model.__all__``)."""
    from recbole_fmrl import model

    return list(model.__all__)


def get_model(name):
    """The model class called ``name``: the plugin's first, then RecBole's.

    RecBole's own lookup fails on unknown names with an unrelated ``ModuleNotFoundError``
    (its exlib models import lightgbm/xgboost); this turns every failure into one clear line.
    """
    from recbole_fmrl import model as plugin_models

    if name in plugin_models.__all__:
        return getattr(plugin_models, name)
    from recbole.utils import get_model as recbole_get_model

    try:
        model_class = recbole_get_model(name)
    except (ValueError, ImportError, AttributeError):
        raise PluginError(
            f"unknown model '{name}': not a plugin model ({', '.join(plugin_model_names())}) "
            "nor a RecBole 1.2.1 model"
        ) from None
    return model_class


# YAML 1.1 reads 1e-4 (no dot) as a string; RecBole's loader adds this float pattern, so does ours.
YAML_FLOAT = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class ConfigYamlLoader(yaml.SafeLoader):
    """YAML's safe loader (plain values only, no Python objects) with RecBole's float pattern."""


ConfigYamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", YAML_FLOAT, list("-+0123456789."))


@functools.lru_cache(maxsize=1)
def config_keys():
    """Every config key RecBole or the plugin defines (what a command's ``--key=value`` may set):
    RecBole's documented arguments and the keys of every default YAML file, RecBole's and the
    plugin's (overall, every model, every dataset)."""
    from recbole.utils import argument_list

    keys = set(argument_list.general_arguments + argument_list.training_arguments
               + argument_list.evaluation_arguments + argument_list.dataset_arguments)
    for folder in (RECBOLE_PROPERTIES_DIR, PROPERTIES_DIR):
        for file in sorted(folder.rglob("*.yaml")):
            if file.parent.name != "tune":  # search spaces, not config files
                with open(file, encoding="utf-8") as f:
                    keys.update(yaml.load(f, Loader=ConfigYamlLoader) or {})
    # RecBole lists config_file among its arguments but nothing reads it: --config_files is the flag.
    return frozenset(keys - {"config_file"})


class Config(RecBoleConfig):
    """RecBole's Config, extended like RecBole-GNN's.

    * ``model`` may name a plugin model (fMRLRec, LRURec, FMLPRec) or any RecBole model;
    * defaults are read from RecBole's YAML, then ``properties/overall.yaml``,
      ``properties/model/<Model>.yaml`` and ``properties/dataset/<dataset>.yaml``;
    * the command line is NOT read implicitly (``run_recbole_fmrl.py`` passes its
      ``--key=value`` pairs as ``config_dict``), so library calls are reproducible;
    * ``compatibility_settings`` works on numpy 2;
    * nothing is executed: YAML is read with the safe loader and string values (command line,
      ``config_dict``, a checkpoint's stored settings) as Python literals, where RecBole calls
      ``eval`` on them; values are checked (:func:`~recbole_fmrl.inputs.check_config_values`) and
      ``warnings`` lists the keys no part of the run reads, each with the closest known key.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        check_config_files(config_file_list or [])
        try:
            super().__init__(model, dataset, config_file_list, config_dict)
        except (ValueError, NotImplementedError) as err:  # RecBole's own checks (metrics, topk, eval_args)
            if isinstance(err, PluginError):
                raise
            raise ConfigError(f"invalid config: {str(err).strip().splitlines()[0]}") from None
        check_config_values(self.final_config_dict)
        self.warnings = unknown_key_warnings(self.external_config_dict, self.known_keys(), self.model)

    def known_keys(self):
        """Keys some part of the run reads: every default (RecBole's and the plugin's YAML for this
        model and dataset) and RecBole's documented arguments."""
        documented = {key for keys in self.parameters.values() for key in keys}
        return set(self.internal_config_dict) | documented | {"model", "dataset"}

    def _build_yaml_loader(self):
        return ConfigYamlLoader

    def _convert_config_dict(self, config_dict):
        """String values as Python literals (:func:`~recbole_fmrl.inputs.literal_value`), never ``eval``."""
        return {key: literal_value(value) if isinstance(value, str) else value for key, value in config_dict.items()}

    def compatibility_settings(self):
        """RecBole still uses the numpy aliases removed in numpy 2 (np.float, np.bool, ...)."""
        for alias, target in {
            "bool": bool, "int": int, "float": float, "complex": complex,
            "object": object, "str": str, "long": int, "unicode": str,
        }.items():
            if alias not in np.__dict__:
                setattr(np, alias, target)

    def _load_cmd_line(self):
        return {}

    def _init_device(self):
        """RecBole's device (a GPU when ``gpu_id`` names a visible one), except that ``use_gpu: False``
        trains on the CPU (RecBole 1.2.1 reads it only for its GPU memory log). A process of a
        data-parallel launch (:func:`~recbole_fmrl.distributed.launched`) uses the GPU of its local
        rank among those ``gpu_id`` lists, and RecBole's own data parallelism stays off
        (``single_spec``: the plugin's trainer and loaders do it). ``nproc`` as a config key is
        refused: processes are started by ``run_recbole_fmrl.py --nproc=N`` or torchrun."""
        nproc = self.final_config_dict.get("nproc", 1)
        if nproc not in (None, 1):
            raise ConfigError(
                f"nproc={nproc}: a run's processes are started by run_recbole_fmrl.py --nproc={nproc} or by torchrun "
                "(README: Several GPUs and machines), not by a config key")
        super()._init_device()
        if not self.final_config_dict["use_gpu"]:
            self.final_config_dict["device"] = torch.device("cpu")
        place = distributed.launched()
        if place is not None:
            self.final_config_dict["local_rank"] = place.local_rank
            if self.final_config_dict["device"].type == "cuda":
                visible = torch.cuda.device_count()
                if place.local_rank >= visible:
                    raise ConfigError(
                        f"process {place.local_rank} of this machine needs GPU {place.local_rank}, but gpu_id "
                        f"'{self.final_config_dict['gpu_id']}' makes {visible} visible: list one GPU per process "
                        "(e.g. --gpu_id=0,1)")
                self.final_config_dict["device"] = torch.device("cuda", place.local_rank)

    def _set_default_parameters(self):
        """RecBole's, except that ``ml-100k`` is read from the user's ``data_path`` when one is given
        (RecBole always reads its bundled copy, e.g. without the feature files made for it)."""
        super()._set_default_parameters()
        if self.dataset == "ml-100k" and "data_path" in self.external_config_dict:
            self.final_config_dict["data_path"] = os.path.join(self.external_config_dict["data_path"], self.dataset)

    def _load_config_files(self, file_list):
        try:
            return super()._load_config_files(file_list)
        except Exception as err:  # yaml errors: name the file
            raise PluginError(f"cannot read config file {file_list}: {err}".splitlines()[0]) from None

    def _get_model_and_dataset(self, model, dataset):
        model = model if model is not None else self.external_config_dict.get("model")
        dataset = dataset if dataset is not None else self.external_config_dict.get("dataset")
        if model is None:
            raise PluginError("no model given: pass --model=<name>")
        if dataset is None:
            raise PluginError("no dataset given: pass --dataset=<name>")
        dataset_name(dataset)
        model_class = get_model(model) if isinstance(model, str) else model
        return model_class.__name__, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        """Precedence, lowest first: RecBole's defaults, the plugin's overall.yaml, RecBole's
        dataset YAML (e.g. ml-100k's columns), the plugin's model YAML, the plugin's dataset YAML."""
        super()._load_internal_config_dict(model, model_class, dataset)
        recbole_dataset_file = RECBOLE_PROPERTIES_DIR / "dataset" / f"{dataset}.yaml"
        for file in (
            PROPERTIES_DIR / "overall.yaml",
            recbole_dataset_file,
            PROPERTIES_DIR / "model" / f"{model}.yaml",
            PROPERTIES_DIR / "dataset" / f"{dataset}.yaml",
        ):
            if file.is_file():
                loaded = self._update_internal_config_dict(file) or {}
                if file.parent.name == "dataset":
                    self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]

    def overrides(self):
        """The user's settings (files, dict, command line) as plain values, to rebuild this Config in
        one process: the keys of a data-parallel launch (``distributed.LAUNCH_KEYS``) left out."""
        return to_primitive({key: value for key, value in self.external_config_dict.items()
                             if key not in distributed.LAUNCH_KEYS})

    def to_dict(self):
        """Every final setting as plain Python values (safe for ``torch.load(weights_only=True)``)."""
        return to_primitive(self.final_config_dict)


def to_primitive(value):
    """Convert config values (enums, devices, numpy scalars, tuples) into plain Python types."""
    if isinstance(value, dict):
        return {str(k): to_primitive(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_primitive(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.device):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
