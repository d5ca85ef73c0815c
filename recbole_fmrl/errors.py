"""User-facing errors: the runner prints their message as one line, without a traceback."""


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
