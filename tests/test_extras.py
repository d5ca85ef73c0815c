"""Optional dependencies (setup.cfg extras): a feature whose extra is absent fails with one error line
naming the extra."""

import sys

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
