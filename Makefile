# make demo: install if needed, then fMRLRec on the embedded real Beauty data (CPU-sized config).
# make test: install if needed, then the test suite.
PY := .venv/bin/python

.PHONY: install demo test bench clean
install: .venv/.installed
.venv/.installed: setup.cfg scripts/install.sh
	bash scripts/install.sh

demo: install
	$(PY) run_recbole_fmrl.py --model=fMRLRec --dataset=beauty --config_files=properties/demo.yaml

test: install
	$(PY) -m pytest tests

bench: install
	$(PY) -m recbole_fmrl.benchmarks.run --quick

clean:
	rm -rf saved log log_tensorboard results
