"""Every command: ``--help`` prints the defaults the code uses, a mistyped flag is one ``error:`` line
naming the closest flag, and the spellings README and Makefile used before (hyphens) still work."""

import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

from recbole_fmrl.flags import shown_default

REPO = Path(__file__).resolve().parent.parent


def _runner_script():
    spec = importlib.util.spec_from_file_location("run_recbole_fmrl_script", REPO / "run_recbole_fmrl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def module(name):
    return _runner_script() if name == "run_recbole_fmrl.py" else importlib.import_module(name)


# file, module, sub-command, the required arguments, a mistyped flag and the flag it names, the
# functions the command calls (a flag named as one of their parameters has that parameter's default)
COMMANDS = [
    ("run_recbole_fmrl.py", "run_recbole_fmrl.py", [], [], "--modle=SASRec", "--model", []),
    ("recbole_fmrl/experiments/compare.py", "recbole_fmrl.experiments.compare", [], [],
     "--model_configs=fMRLRec=x.yaml", "--model_config", ["compare", "parameters", "ablation"]),
    ("recbole_fmrl/experiments/tune.py", "recbole_fmrl.experiments.tune", [], ["--model=fMRLRec", "--dataset=tiny"],
     "--num_sample=2", "--num_samples", ["tune_model"]),
    ("recbole_fmrl/experiments/paired.py", "recbole_fmrl.experiments.paired", [], ["x.pth"],
     "--exclude_sen=True", "--exclude_seen", ["model_per_user"]),
    ("recbole_fmrl/deploy/export.py", "recbole_fmrl.deploy.export", [], ["x.pth", "--size=8", "--out=y.pth"],
     "--outt=z.pth", "--out", ["export"]),
    ("recbole_fmrl/deploy/evaluate.py", "recbole_fmrl.deploy.evaluate", [], ["x.pth"],
     "--index-fil=x.faiss", "--index_file", ["evaluate"]),
    ("recbole_fmrl/deploy/funnel.py", "recbole_fmrl.deploy.funnel", [], ["x.pth", "--size=8"], "--indx=flat", "--index", []),
    ("recbole_fmrl/deploy/budget.py", "recbole_fmrl.deploy.budget", [], ["x.pth", "--latency_ms=10"],
     "--funnelk=5", "--funnel_k", ["measure"]),
    ("recbole_fmrl/benchmarks/run.py", "recbole_fmrl.benchmarks.run", [], [], "--case=fmrl_layer", "--cases", []),
    ("dataset_prep/__main__.py", "recbole_fmrl.dataset_prep.__main__", ["features"], ["--dataset=d"],
     "--text_feilds=title", "--text_fields", ["recbole_fmrl.dataset_prep.features.make_features"]),
    ("dataset_prep/__main__.py", "recbole_fmrl.dataset_prep.__main__", ["amazon2023"], ["--category=C", "--raw_dir=r"],
     "--no-imags", "--no_images", []),
    ("dataset_prep/__main__.py", "recbole_fmrl.dataset_prep.__main__", ["amazon2014"], [],
     "--raw-dri=r", "--raw_dir", ["recbole_fmrl.dataset_prep.amazon2014.prepare_dataset"]),
    ("dataset_prep/amazon2014.py", "recbole_fmrl.dataset_prep.amazon2014", [], [], "--tables-dri=t", "--tables_dir", []),
    ("dataset_prep/s3rec_attributes.py", "recbole_fmrl.dataset_prep.s3rec_attributes", [],
     ["--name=beauty", "--item2attributes=a", "--datamaps=b", "--sequences=c"], "--tabels_dir=t", "--tables_dir", []),
]
IDS = [" ".join([c[1].rsplit(".", 1)[-1], *c[2]]) for c in COMMANDS]


def test_every_command_is_covered():
    files = {str(path.relative_to(REPO)) for path in REPO.glob("**/*.py")
             if not {".venv", "mutants", "tests"} & set(path.relative_to(REPO).parts)
             and 'if __name__ == "__main__":' in path.read_text()}
    assert files == {c[0] for c in COMMANDS}


def printed_defaults(help_text):
    """``{flag: printed default or None}`` for every flag listed in a ``--help`` text."""
    entries = []  # [invocation, help] per flag; a long invocation puts its help on the next lines
    for line in help_text.split("\noptions:\n", 1)[1].splitlines():
        if line.startswith("  -"):
            invocation, _, help_part = line.strip().partition("  ")
            entries.append([invocation, help_part.strip()])
        elif line.startswith("    ") and entries:
            entries[-1][1] = f"{entries[-1][1]} {line.strip()}".strip()
    defaults = {}
    for invocation, help_part in entries:
        found = re.search(r"\(default: (.*)\)$", help_part)
        for flag in re.findall(r"(?:^|, )(--?\w[\w-]*)", invocation):
            defaults[flag] = found.group(1) if found else None
    return defaults


@pytest.mark.parametrize("file, name, sub, required, typo, closest, functions", COMMANDS, ids=IDS)
def test_help_prints_the_defaults_the_code_uses(file, name, sub, required, typo, closest, functions, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per flag
    mod = module(name)
    with pytest.raises(SystemExit) as done:
        mod.main([*sub, "--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    printed = printed_defaults(help_text)
    parser = mod.build_parser()
    args = parser.parse_args([*sub, *required])
    chosen = parser._chosen(args)
    flags = {action.option_strings[0]: action for action in chosen._actions
             if action.option_strings and action.dest != "help"}
    assert flags and set(flags) <= set(printed)
    calls = [getattr(mod, f) if "." not in f else getattr(importlib.import_module(f.rsplit(".", 1)[0]), f.rsplit(".", 1)[1])
             for f in functions]
    for flag, action in flags.items():
        used = getattr(args, action.dest)
        if action.required:
            continue
        if used is None:  # computed by the code: the help says how, in words
            assert "(default: " in action.help, flag
        else:
            assert printed[flag] == shown_default(used), flag
        for function in calls:
            default = getattr(inspect.signature(function).parameters.get(action.dest), "default", None)
            if isinstance(default, (str, int, float)) and used is not None:  # a plain value, as the flag's
                assert default == used, (flag, function.__name__)
    # an optional flag written with a value in the description's usage lines, e.g. [--num_samples=20],
    # shows its real default (flags without one may show an example)
    description = help_text.split("\n\n", 1)[1].split("\noptions:\n")[0]
    for flag, value in re.findall(r"\[(--\w+)[= ]([a-z0-9][\w.,-]*)\]", description):
        if flag in flags and flags[flag].default is not None:
            assert value == shown_default(flags[flag].default), (flag, value)


@pytest.mark.parametrize("file, name, sub, required, typo, closest, functions", COMMANDS, ids=IDS)
def test_a_mistyped_flag_is_one_error_line_naming_the_closest(file, name, sub, required, typo, closest, functions, capsys):
    with pytest.raises(SystemExit) as done:
        module(name).main([*sub, *required, typo])
    assert done.value.code == 2
    flag = typo.split("=")[0]
    assert capsys.readouterr().err.splitlines() == [f"error: unknown flag '{flag}' (did you mean {closest}?)"]


@pytest.mark.parametrize("name, argv, dest, value", [
    ("recbole_fmrl.experiments.compare", ["--model-config", "fMRLRec=t.yaml", "--sizes-from=r.json", "--params-sizes=8,16"],
     "model_config", ["fMRLRec=t.yaml"]),
    ("recbole_fmrl.experiments.compare", ["--feature-dims=text=12", "--item-num", "30"], "item_num", 30),
    ("recbole_fmrl.experiments.tune", ["--model=m", "--dataset=d", "--num-samples", "8", "--cpus-per-trial", "1",
                                       "--max-concurrent", "1"], "num_samples", 8),
    ("recbole_fmrl.deploy.budget", ["x.pth", "--latency-ms", "10", "--funnel-k=5"], "latency_ms", 10.0),
    ("recbole_fmrl.deploy.evaluate", ["x.pth", "--funnel", "16,200", "--index-file=f.faiss"], "index_file", "f.faiss"),
    ("recbole_fmrl.benchmarks.run", ["--quick", "--no-profile"], "no_profile", True),
])
def test_hyphen_spellings_still_work(name, argv, dest, value):
    assert getattr(module(name).build_parser().parse_args(argv), dest) == value


def test_config_keys_pass_through_and_a_key_close_to_a_flag_is_an_error(capsys):
    runner = _runner_script()
    args = runner.build_parser().parse_args(["--model=LRURec", "--hidden-size=64", "--learning_rate=1e-4",
                                             "--modalities=[text, id]", "--my_own_key=3"])
    assert (args.model, args.dataset) == ("LRURec", "beauty")
    assert args.overrides == {"hidden_size": 64, "learning_rate": "1e-4", "modalities": ["text", "id"], "my_own_key": 3}
    for argv, message in [
        (["--config_file=a.yaml"], "error: unknown flag '--config_file' (did you mean --config_files?)"),
        (["--hidden_size", "64"], "error: --hidden_size needs a value: --hidden_size=VALUE"),
        (["stray"], "error: unexpected argument 'stray'"),
    ]:
        with pytest.raises(SystemExit):
            runner.build_parser().parse_args(argv)
        assert capsys.readouterr().err.splitlines() == [message]
