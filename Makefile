# make demo: install if needed, then fMRLRec on the embedded real Beauty data (CPU-sized config).
# make test: install if needed, then the test suite.
# make mutation: mutation testing of the core with mutmut (installed on demand; not part of CI), see docs/mutation.md.
PY := .venv/bin/python

.PHONY: install demo test bench mutation clean
install: .venv/.installed
.venv/.installed: setup.cfg scripts/install.sh
	bash scripts/install.sh

demo: install
	$(PY) run_recbole_fmrl.py --model=fMRLRec --dataset=beauty --config_files=properties/demo.yaml
	@echo "demo: a CPU-sized run (D = 64, 2 epochs, lr 1e-2). The main command, without properties/demo.yaml, runs the paper's setting" \
	      "(properties/model/fMRLRec.yaml: text and image features, D = 1024, up to 300 epochs, patience 10): a GPU's job."

test: install
	$(PY) -m pytest tests

bench: install
	$(PY) -m recbole_fmrl.benchmarks.run --quick

# Scope and test selection: [mutmut] in setup.cfg. Results stay in mutants/ (`.venv/bin/mutmut browse`).
mutation: install
	$(PY) -m pip install --disable-pip-version-check -q 'mutmut==3.8.1'
	OMP_NUM_THREADS=1 .venv/bin/mutmut run --max-children 2
	.venv/bin/mutmut results

clean:
	rm -rf saved log log_tensorboard results mutants
