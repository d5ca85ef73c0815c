"""README and docs hold what the code holds: every config key of every plugin model with its YAML
default (docs/config.md), every measured number next to a command, a README of at most 300 lines, and
the licence setup.cfg names."""

import configparser
import re
from pathlib import Path

import pytest
import yaml

from recbole_fmrl.config import PROPERTIES_DIR, ConfigYamlLoader, plugin_model_names

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
CONFIG_KEYS = (REPO / "docs" / "config.md").read_text(encoding="utf-8")


def readme_table(yaml_file):
    """``{key: default}`` of the docs/config.md table under the heading that names ``yaml_file``."""
    heading = re.search(rf"^#+ .*`{re.escape(yaml_file)}`$", CONFIG_KEYS, re.M)
    assert heading, f"docs/config.md has no heading naming {yaml_file}"
    table = re.search(r"^\| key \| default \| what it sets \|\n\|---\|---\|---\|\n((?:\|.*\|\n)+)", CONFIG_KEYS[heading.end():], re.M)
    rows = {}
    for line in table.group(1).splitlines():
        key, default = re.match(r"\| `([^`]+)` \| `([^`]+)` \|", line).groups()
        assert key not in rows, f"{yaml_file}: {key} twice"
        rows[key] = yaml.load(default, Loader=ConfigYamlLoader)
    return rows


@pytest.mark.parametrize("yaml_file", ["properties/overall.yaml"] + [f"properties/model/{m}.yaml" for m in plugin_model_names()])
def test_readme_lists_every_config_key_with_its_yaml_default(yaml_file):
    with open(PROPERTIES_DIR.parent / yaml_file, encoding="utf-8") as f:
        defaults = yaml.load(f, Loader=ConfigYamlLoader)
    assert readme_table(yaml_file) == defaults


MEASURED = re.compile(r"\b0\.\d{3,}\b|\b\d+(?:\.\d+)? ?(?:s|ms|min|h|%)(?![\w-])|\d(?:\.\d+)?×")
COMMAND = re.compile(r"```(?:bash)?\n[^`]*\b(?:python|make)\b|`[^`\n]*\b(?:python|make) [^`\n]*`")


def sections(text):
    """``(heading, body)`` of every section (a heading of any level up to the next heading)."""
    text = re.sub(r"^```.*?^```", lambda m: m.group(0).replace("#", "＃"), text, flags=re.M | re.S)  # no headings in code
    parts = re.split(r"^(#+ .*)$", text, flags=re.M)
    return list(zip(["(top)"] + parts[1::2], parts[0::2]))


@pytest.mark.parametrize("document", ["README.md", "docs/results.md", "docs/config.md", "docs/datasets.md", "docs/serving.md",
                                      "docs/tuning.md", "docs/reproducing.md", "docs/performance.md", "docs/mutation.md",
                                      "docs/table2.md"])
def test_every_measured_number_has_a_command_in_its_section(document):
    for heading, body in sections((REPO / document).read_text(encoding="utf-8")):
        prose = re.sub(r"`[^`\n]*`|```.*?```|\(https?://[^)]*\)", "", body, flags=re.S)
        measured = MEASURED.findall(prose)
        if measured:
            assert COMMAND.search(body), f"{document}, {heading}: {measured[:3]} without the command that made them"


def test_readme_is_a_guide_of_at_most_300_lines():
    assert len(README.splitlines()) <= 300


def test_the_licence_file_is_the_one_setup_cfg_names():
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "setup.cfg")
    assert metadata["metadata"]["license"] == "MIT" and metadata["metadata"]["license_files"] == "LICENSE"
    licence = (REPO / "LICENSE").read_text(encoding="utf-8").splitlines()
    assert licence[0] == "MIT License" and re.fullmatch(r"Copyright \(c\) \d{4} recbole-fmrl contributors", licence[2])
    assert "[LICENSE](LICENSE)" in README
