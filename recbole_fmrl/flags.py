"""Command-line flags in RecBole's style: ``--key=value`` with underscores.

:class:`FlagParser` is ``argparse`` with three differences: a flag may also be spelt with hyphens
(``--text-fields`` reads as ``--text_fields``), ``--help`` shows every default, and a mistake is
one line ``error: …`` (exit status 2); an unknown flag names the closest known one.
"""

import argparse
import difflib
import sys


class FlagParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` for ``--key=value`` flags (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args([self._underscored(arg) for arg in args], namespace)

    def parse_args(self, args=None, namespace=None):
        namespace, extra = self.parse_known_args(args, namespace)
        if extra:
            self.error(self._chosen(namespace).unknown_flag_message(extra[0]))
        return namespace

    def _chosen(self, namespace):
        """The parser of the sub-command ``namespace`` names (this one when there is none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(namespace, action.dest, None))
                if isinstance(chosen, FlagParser):
                    return chosen._chosen(namespace)
        return self

    def unknown_flag_message(self, arg):
        """``unknown flag '--x' (did you mean --y?)`` for an argument no flag of this parser takes."""
        if not arg.startswith("-"):
            return f"unexpected argument {arg!r}"
        name = arg.split("=", 1)[0]
        flags = sorted(s for action in self._actions for s in action.option_strings if s.startswith("--"))
        close = difflib.get_close_matches(name, flags, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}?" if close else "see --help"
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


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with each flag's default, and the description as written."""
