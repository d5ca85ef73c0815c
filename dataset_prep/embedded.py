"""Write an embedded dataset now, as its first run would: ``python -m recbole_fmrl.dataset_prep embedded``.

The four Amazon 2014 datasets shipped in the package are written to ``<out>/<name>/`` on a run's
first use (:func:`recbole_fmrl.data.embedded.ensure_embedded_dataset`); this command does the same
ahead of time, e.g. so that the first run does not wait for the text encoder (``make install``
writes Beauty with its title features this way, for ``make demo``). Steps already done are skipped.

    python -m recbole_fmrl.dataset_prep embedded --dataset=beauty --out=dataset [--features=text]
"""

from recbole_fmrl.data.embedded import EMBEDDED, FEATURES, ensure_embedded_dataset
from recbole_fmrl.dataset_prep.features import comma_list
from recbole_fmrl.errors import PluginError


def add_arguments(parser):
    """The flags of ``python -m recbole_fmrl.dataset_prep embedded``."""
    parser.add_argument("--dataset", choices=sorted(EMBEDDED), required=True, help="the embedded dataset to write")
    parser.add_argument("--out", default="dataset", help="RecBole's data_path: files go to OUT/<dataset>/")
    parser.add_argument("--features", type=comma_list, default=None,
                        help="comma-separated feature files to write besides the interactions "
                             "(beauty: text, attributes; sports: attributes) (default: every one the dataset has)")


def run(args):
    """Write ``args.dataset`` under ``args.out``; prints one line saying what was done."""
    unknown = sorted(set(args.features or ()) - FEATURES[args.dataset])
    if unknown:
        has = ", ".join(sorted(FEATURES[args.dataset])) or "none"
        raise PluginError(f"--features: {args.dataset} has no {', '.join(unknown)} features (it has: {has})")
    written = ensure_embedded_dataset(args.dataset, args.out, args.features)
    print(f"embedded: {args.dataset} {'written to' if written else 'already complete in'} {args.out}/{args.dataset}")
    return 0
