"""``python -m recbole_fmrl.dataset_prep COMMAND --key=value ...``: the preparation commands.

* ``features`` -- item features (text, image) for any RecBole atomic dataset (:mod:`recbole_fmrl.dataset_prep.features`);
* ``amazon2023`` -- one category of Amazon Reviews 2023 as RecBole atomic files + features
  (:mod:`recbole_fmrl.dataset_prep.amazon2023`);
* ``amazon2014`` -- the paper's Amazon 2014 datasets from their raw files or the embedded tables
  (:mod:`recbole_fmrl.dataset_prep.amazon2014`);
* ``embedded`` -- an embedded dataset written ahead of its first run (:mod:`recbole_fmrl.dataset_prep.embedded`).
"""

import logging
import sys

from recbole_fmrl.dataset_prep import amazon2014, amazon2023, embedded, features
from recbole_fmrl.errors import exit_status
from recbole_fmrl.flags import FlagParser

COMMANDS = {"features": features, "amazon2023": amazon2023, "amazon2014": amazon2014, "embedded": embedded}


def build_parser():
    parser = FlagParser(prog="python -m recbole_fmrl.dataset_prep", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=FlagParser)
    for name, module in COMMANDS.items():
        module.add_arguments(commands.add_parser(name, description=module.__doc__, help=module.__doc__.split("\n")[0]))
    return parser


def main(argv=None):
    """Parse the flags and run the command; a bad input is one ``error:`` line and status 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return exit_status(lambda: COMMANDS[args.command].run(args))


if __name__ == "__main__":
    sys.exit(main())
