# edgeeval's front door. `make bench` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgeeval-installed

.PHONY: install bench test check report clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	@echo "Installing edgeeval and llama-cpp-python (first time: builds from source, ~10 min on 2 cores)"
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Fetch the embedded default models, measure them, write reports/<run-id>/report.md
bench: install
	$(PY) -m edgeeval fetch
	$(PY) -m edgeeval bench $(BENCH_ARGS)

## Re-render the latest run's report from stored results (no model is loaded)
report: install
	$(PY) -m edgeeval report latest

test: install
	$(PY) -m pytest -q $(TEST_ARGS)

check: install
	$(PY) -m ruff check edgeeval tests
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache

## Speed parity with llama.cpp's llama-bench, built from the same llama-cpp-python sdist
## (tools go to .bench-tools/, results to reports/parity/; PARITY_ARGS e.g. --rounds 5)
.PHONY: parity-bench
parity-bench: install
	benchmarks/tools/build_llama_tools.sh
	$(PY) benchmarks/llama_bench_parity.py $(PARITY_ARGS)
