"""Command-line flags in RecBole's style: ``--key=value`` with underscores.

:class:`FlagParser` is ``argparse`` with these differences: a flag may also be spelt with hyphens
(``--text-fields`` reads as ``--text_fields``), ``--help`` shows every default, and a mistake is
one line ``error: …`` (exit status 2); an unknown flag names the closest known one.

A command that also takes RecBole config keys, as ``run_recbole.py`` does, passes
``config_keys`` (a function returning every known key): every other ``--key=value`` becomes
``args.overrides[key]`` (the value read by :func:`parse_value`), except a flag that is closer to one
of the command's own flags than to any config key, which is a mistyped flag (an error). A key that
is no known config key is kept: the config warns about it, naming the closest key.
"""

import argparse
import difflib
import re
import sys

import yaml

CLOSE = 0.6  # difflib's ratio from which a known name counts as "close" (difflib's default cutoff)


def parse_value(text):
    """A ``--key=value`` value read as YAML (``[text,image]``, ``0.5``, ``true``); what YAML leaves a
    string (e.g. ``1e-4``) the Config reads further as a Python literal, never as code."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.strip() not in ("~", "null", "None") else value


def parse_boolean(text):
    """A flag value that must be True or False (YAML's spellings: ``True``, ``false``, ...)."""
    value = parse_value(text)
    if not isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return value


def add_protocol_flag(parser):
    """``--exclude_seen``: the evaluation protocol of a command that scores a trained run's test split."""
    parser.add_argument("--exclude_seen", type=parse_boolean, default=None,
                        help="True: each user's seen items are excluded from the ranking; False: ranked, RecBole's "
                             "protocol (default: the run's own)")


def shown_default(value):
    """A default as ``--help`` prints it: strings that are empty or hold spaces quoted."""
    if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
        return repr(value)
    return str(value)


def _closest(name, names):
    """``(ratio, closest)`` of ``name`` among ``names`` (underscores and hyphens read alike)."""
    name = name.replace("-", "_")
    scored = ((difflib.SequenceMatcher(None, name, other.replace("-", "_")).ratio(), other) for other in names)
    return max(scored, default=(0.0, None))


class FlagParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` for ``--key=value`` flags (see the module docstring)."""

    def __init__(self, *args, config_keys=None, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        if config_keys is not None:
            kwargs.setdefault("epilog", "Any other --key=value sets that RecBole config key for the run (docs/config.md).")
        super().__init__(*args, **kwargs)
        self.config_keys = config_keys

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args([self._underscored(arg) for arg in args], namespace)

    def parse_args(self, args=None, namespace=None):
        namespace, extra = self.parse_known_args(args, namespace)
        chosen = self._chosen(namespace)
        if chosen.config_keys is not None:
            namespace.overrides = chosen.config_overrides(extra)
        elif extra:
            self.error(chosen.unknown_flag_message(extra[0]))
        return namespace

    def _chosen(self, namespace):
        """The parser of the sub-command ``namespace`` names (this one when there is none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(namespace, action.dest, None))
                if isinstance(chosen, FlagParser):
                    return chosen._chosen(namespace)
        return self

    def _own_flags(self):
        return sorted(s for action in self._actions for s in action.option_strings if s.startswith("--"))

    def config_overrides(self, extra):
        """``{key: value}`` of the ``--key=value`` arguments this command does not take itself."""
        own = {flag[2:] for flag in self._own_flags()}
        keys = set(self.config_keys()) - own if extra else set()
        overrides = {}
        for arg in extra:
            name, sep, value = arg.partition("=")
            key = name[2:]
            if not name.startswith("--") or not key:
                self.error(self.unknown_flag_message(arg))
            if key not in keys and key.replace("-", "_") in keys:
                key = key.replace("-", "_")
            if key not in keys:
                flag_ratio, _ = _closest(key, own)
                key_ratio, _ = _closest(key, keys)
                if flag_ratio >= CLOSE and flag_ratio >= key_ratio:
                    self.error(self.unknown_flag_message(arg))
            if not sep:
                self.error(f"--{key} needs a value: --{key}=VALUE")
            overrides[key] = parse_value(value)
        return overrides

    def unknown_flag_message(self, arg):
        """``unknown flag '--x' (did you mean --y?)`` for an argument no flag of this parser takes."""
        if not arg.startswith("-"):
            return f"unexpected argument {arg!r}"
        name = arg.split("=", 1)[0]
        ratio, close = _closest(name, self._own_flags())
        hint = f"did you mean {close}?" if ratio >= CLOSE else "see --help"
        return f"unknown flag {name!r} ({hint})"

    def _underscored(self, arg):
        """``--text-fields=x`` -> ``--text_fields=x`` when that spelling is a known flag."""
        if not arg.startswith("--"):
            return arg
        name, sep, value = arg.partition("=")
        spelt = "--" + name[2:].replace("-", "_")
        return spelt + sep + value if spelt != name and spelt in self._option_string_actions else arg

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help in the ``--key=VALUE`` spelling, with each flag's default (:func:`shown_default`) and the
    description as written. A flag whose default is ``None`` says in its own help what it defaults to."""

    def _format_usage(self, usage, actions, groups, prefix):
        return re.sub(r"(--\w+)\s+(?=[A-Z{])", r"\1=", super()._format_usage(usage, actions, groups, prefix))

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        value = self._format_args(action, self._get_default_metavar_for_optional(action))
        return ", ".join(f"{flag}={value}" if flag.startswith("--") else f"{flag} {value}" for flag in action.option_strings)

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or not action.option_strings:
            return help_text
        return f"{help_text} (default: {shown_default(action.default).replace('%', '%%')})"
