# Commands that work on a fresh machine with Python >= 3.11 and make:
#   make demo   - create .venv, install, generate demo data, load, score, summarise
#   make serve  - the demo (built if needed) served on http://127.0.0.1:8000 until Ctrl-C;
#                 prints the dashboard admin's password (random, made now, shown once)
#   make test   - create .venv, install dev extras, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_DIR ?= demo

.PHONY: demo serve test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# uv installs the project (about half pip's time on a fresh machine: parallel downloads,
# no per-package resolver round trips); pip only installs uv itself, into the venv. uv
# reads neither pip.conf's local indexes nor its find-links: where it cannot install
# (no route to PyPI, a package only a local index holds), pip installs as before.
# uv writes no bytecode unless asked: --compile-bytecode compiles the libraries once, as
# pip does, so no process compiles pandas & co. again where bytecode is not written
# (PYTHONDONTWRITEBYTECODE). An editable install compiles nothing: compile healthscore's
# own source once too; an edited file is compiled again by Python itself
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	( $(BIN)/pip install -q uv && \
	  $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -e '.[dev]' ) || \
	  { echo "uv could not install; installing with pip" >&2; $(BIN)/pip install -q -e '.[dev]'; }
	$(BIN)/python -m compileall -q src
	touch $@

demo: $(VENV)/.installed
	$(BIN)/healthscore demo --dir $(DEMO_DIR)

serve: $(VENV)/.installed
	test -f $(DEMO_DIR)/healthscore.duckdb || $(BIN)/healthscore demo --dir $(DEMO_DIR)
	$(BIN)/healthscore serve --db $(DEMO_DIR)/healthscore.duckdb \
		--model $(DEMO_DIR)/healthscore.yaml --admin-user admin

# two test workers on two cores: a second BLAS thread per worker (numpy/scipy's OpenBLAS
# on small matrices) would only spin beside the other worker, and so would a second DuckDB
# thread per store connection (results are the same either way; see bench/README.md)
test: $(VENV)/.installed
	$(BIN)/python -m compileall -q src
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	OPENBLAS_NUM_THREADS=1 HEALTHSCORE_DUCKDB_THREADS=1 $(BIN)/pytest -n 2 --dist worksteal --durations=15 src tests

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/ruff format --check src tests bench

bench: $(VENV)/.installed
	$(BIN)/python -m compileall -q src
	$(BIN)/python bench/score_snapshot.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache .hypothesis
