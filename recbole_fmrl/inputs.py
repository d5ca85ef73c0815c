"""Checks of what a user hands the plugin: config files and values, dataset names, interaction files.

One error style: a :class:`~recbole_fmrl.errors.PluginError` whose one-line message names the file
(and line) or the config key at fault; the commands print it as ``error: <message>`` and exit 2.
"""

import ast
import difflib
import math
import numbers
import os
import re
from pathlib import Path

import pandas as pd

from recbole_fmrl.errors import ConfigError, InputFileError, PluginError

# ------------------------------------------------------------------------------ names and files

DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def dataset_name(name):
    """``name`` if it is a dataset name (letters, digits, ``.``, ``_``, ``-``; no path), else one error.

    Dataset names become folder names under ``data_path`` and under every ``--out``: a path such as
    ``../x`` or ``/tmp/x`` would read and write outside them.
    """
    if not isinstance(name, str) or not DATASET_NAME.fullmatch(name) or ".." in name:
        raise PluginError(
            f"dataset {name!r} is not a dataset name: use letters, digits, '.', '_' and '-' only "
            "(a name, not a path; set data_path for the folder that holds it)"
        )
    return name


def output_folder(out, dataset):
    """``<out>/<dataset>``, the folder of a dataset's results (``dataset`` checked by :func:`dataset_name`)."""
    return Path(out) / dataset_name(dataset)


def check_config_files(files):
    """One clear line for the first config file that does not exist."""
    for file in files:
        if not os.path.isfile(file):
            raise PluginError(f"config file not found: {file}")


# ------------------------------------------------------------------------------ config values


def literal_value(text):
    """A config string read as a Python literal (``"1e-4"`` -> 1e-4, ``"[1, 2]"`` -> [1, 2], ``"true"``
    -> True), else the string itself. Replaces RecBole's ``eval(text)``: nothing is executed."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return {"true": True, "false": False}.get(text.strip().lower(), text)
    if value is None or isinstance(value, (str, int, float, list, tuple, dict, bool)):
        return value
    return text


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _checked(name, value, valid, expected):
    """``value`` if ``valid``, else the one wording of every config value error."""
    if not valid:
        raise ConfigError(f"{name} must be {expected}, got {value!r}")
    return value


# The typed readers of config values, used by the models, the trainer and the data loaders: each
# returns the value if it is of its kind, else raises one ConfigError ``<name> must be <kind>, got <value>``
# (``note``: what the value means, said after the kind).
def positive_int(name, value, note=""):
    return _checked(name, value, _is_int(value) and value >= 1, "a positive integer" + note)


def positive_ints(**values):
    """:func:`positive_int` of every ``name=value``."""
    for name, value in values.items():
        positive_int(name, value)


def non_negative_int(name, value, note=""):
    return _checked(name, value, _is_int(value) and value >= 0, "a non-negative integer" + note)


def positive_number(name, value, note=""):
    return _checked(name, value, _is_number(value) and value > 0, "a positive number" + note)


def non_negative_number(name, value, note=""):
    return _checked(name, value, _is_number(value) and value >= 0, "a number >= 0" + note)


def probability(name, value, note=""):
    return _checked(name, value, _is_number(value) and 0 <= value < 1, "a probability in [0, 1)" + note)


def boolean(name, value, note=""):
    return _checked(name, value, isinstance(value, bool), "True or False" + note)


def choice(name, value, choices, note=""):
    return _checked(name, value, isinstance(value, str) and value in choices, f"one of {list(choices)}" + note)


def nested_size_list(name, sizes, full_size=None):
    """``sizes`` as a list of ints if it is a Matryoshka list of sizes (non-empty, positive integers,
    strictly increasing, ending at ``full_size`` when given), else one ConfigError."""
    expected = "a strictly increasing list of positive integers" + (
        f" ending at hidden_size={full_size}" if full_size is not None else ""
    )
    _checked(name, sizes, isinstance(sizes, (list, tuple)) and sizes, expected)
    _checked(name, list(sizes), all(isinstance(m, numbers.Integral) and not isinstance(m, bool) and m > 0 for m in sizes),
             expected)
    sizes = [int(m) for m in sizes]
    _checked(name, sizes, all(b > a for a, b in zip(sizes, sizes[1:])), expected + " (nested)")
    if full_size is not None and sizes[-1] != full_size:
        raise ConfigError(f"{name} must be {expected}, got {sizes} (last is {sizes[-1]})")
    return sizes


CONFIG_VALUE_RULES = {  # key: its reader (checked for every model when the config is read)
    "epochs": positive_int,
    "learning_rate": positive_number,
    "weight_decay": non_negative_number,
    "train_batch_size": positive_int,
    "eval_batch_size": positive_int,
    "hidden_dropout_prob": probability,
    "attn_dropout_prob": probability,
    "dropout_prob": probability,
    # KD_DAGFM passes its ``teacher`` to eval(): only a plain model name may get there.
    "teacher": lambda name, v: _checked(name, v, isinstance(v, str) and v.isidentifier(), "a model name"),
}


def check_config_values(values):
    """One :class:`ConfigError` naming the first key of ``values`` that breaks :data:`CONFIG_VALUE_RULES`."""
    for key, read in CONFIG_VALUE_RULES.items():
        if key in values and values[key] is not None:
            read(f"config key '{key}'", values[key])


def unknown_key_warnings(given, known, model):
    """One line per key of ``given`` that is not in ``known`` (a typo is otherwise silently ignored),
    naming the closest known key."""
    lines = []
    for key in sorted(set(given) - set(known)):
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "no known key is close to it"
        lines.append(f"unknown config key '{key}' (not read by {model} or RecBole): {hint}")
    return lines


# ------------------------------------------------------------------------------ interaction files


def check_inter_file(path, config):
    """A RecBole ``.inter`` file the run can use, or one :class:`InputFileError` naming file and line.

    Checks: not empty, at least one interaction, every column the run loads or orders by is in the
    header, ``:float`` columns are numbers, and no row repeats an earlier one exactly (repeated rows
    put the target item into its own history and inflate the metrics) unless the config keeps them
    (``keep_duplicate_interactions: True``, RecBole's behaviour) or removes them (``rm_dup_inter``).
    """
    sep, encoding = config["field_separator"], config["encoding"]
    with open(path, encoding=encoding) as f:
        header_line = f.readline()
    if not header_line.strip():
        raise InputFileError(path, "the file is empty (expected a header such as user_id:token, item_id:token, timestamp:float)")
    header = header_line.rstrip("\r\n").split(sep)
    column_of = {column.split(":")[0]: column for column in header}
    needed = list((config["load_col"] or {}).get("inter") or column_of)
    for field in (config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]):
        if field not in needed:
            needed.append(field)
    time_field = config["TIME_FIELD"]
    if time_field and (config["eval_args"] or {}).get("order") == "TO" and time_field not in needed:
        needed.append(time_field)
    missing = [field for field in needed if field not in column_of]
    if missing:
        raise InputFileError(
            path, f"no column '{missing[0]}' (the run loads {', '.join(needed)}); the header has {', '.join(header)}", line=1
        )
    try:
        frame = pd.read_csv(path, sep=sep, usecols=[column_of[f] for f in needed], dtype=str, encoding=encoding,
                            keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, ValueError) as err:
        raise InputFileError(path, f"not a {sep!r}-separated table: {str(err).strip().splitlines()[-1]}") from None
    if frame.empty:
        raise InputFileError(path, "no interactions: the file has a header only")
    for column in frame.columns:
        if column.endswith(":float"):
            text = frame[column].str.strip()
            bad = pd.to_numeric(text, errors="coerce").isna() & (text != "")
            if bad.any():
                row = int(bad.to_numpy().argmax())
                raise InputFileError(path, f"{column} is {frame[column].iloc[row]!r}, not a number", line=row + 2)
    if not config["keep_duplicate_interactions"] and not config["rm_dup_inter"]:
        repeated = frame.duplicated()
        if repeated.any():
            row = int(repeated.to_numpy().argmax())
            raise InputFileError(
                path,
                f"{int(repeated.sum())} interaction rows repeat an earlier row exactly (the first at line {row + 2}); "
                "repeats inflate the metrics: remove them, or set keep_duplicate_interactions: True to keep them",
            )
