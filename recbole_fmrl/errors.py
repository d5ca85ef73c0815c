"""User-facing errors, and the one error path of every command: a :class:`PluginError` is printed
as one line, ``error: <message>``, without a traceback, and the command exits with status 2."""

import sys


class PluginError(Exception):
    """Bad input (model name, dataset, config, feature file); the message names what is wrong."""


class ConfigError(PluginError, ValueError):
    """An invalid configuration value, e.g. ``mrl_hidden_sizes`` not nested."""


class FeatureFileError(PluginError, ValueError):
    """A multimodal feature file that is missing, malformed, or does not match the dataset."""


class InputFileError(PluginError, ValueError):
    """Bad content in an input file (interactions, raw reviews, checkpoint): ``<file>[, line N]: <what>``."""

    def __init__(self, path, message, line=None):
        where = f"{path}, line {line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


def _failure_status(err):
    """A command's exit status for ``err``: a :class:`PluginError` is printed as one line
    ``error: <message>`` and gives 2, an interruption 130."""
    if isinstance(err, KeyboardInterrupt):
        return 130
    print(f"error: {err}", file=sys.stderr)
    return 2


def exit_status(main):
    """``main()``'s exit status, for commands that return one (a failure as :func:`_failure_status`)."""
    try:
        return main()
    except (PluginError, KeyboardInterrupt) as err:
        return _failure_status(err)


def main_guarded(main):
    """Run ``main()``; a failure exits with :func:`_failure_status` (``error: <message>`` and 2)."""
    try:
        return main()
    except (PluginError, KeyboardInterrupt) as err:
        sys.exit(_failure_status(err))
