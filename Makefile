# make demo: set up (.venv) and run the default grid (the whole paper) through DVC's DAG:
#            `python -m benchmark run` = `dvc repro`, with grid.jobs stages at a time.
# make test: set up (.venv) and run the test suite, one pytest-xdist worker per core (TEST_WORKERS=0: in
#            this process), whole modules per worker so a module's fixtures are built once.
PY      ?= python3
TEST_WORKERS ?= auto
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)   # dvc.yaml's `python -m benchmark …` must be the venv's
export PYTHONHASHSEED   := 0

.PHONY: demo test install clean

demo: $(STAMP)
	$(BIN)/python -m benchmark run
	@echo "open results/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

install: $(STAMP)

# The exact tested set (constraints.txt), torch first so pip takes the local CPU build of the
# pinned torch instead of pulling CUDA wheels; pyproject.toml itself declares only ranges.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf data models results/scores results/tables results/figures results/curves results/analysis results/plots \
	       results/report.html results/metrics.csv results/metrics.json results/cost.csv results/significance.csv \
	       results/metrics_seeds.csv .benchmark
