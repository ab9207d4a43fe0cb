# edgeeval's front door. `make bench` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgeeval-installed

.PHONY: install sysdeps bench test check report clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	@echo "Installing edgeeval and llama-cpp-python (first time: builds from source, ~10 min on 2 cores)"
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## System packages (Linux with apt-get): bubblewrap (the sandbox for --allow-code-exec) and
## chromium (the HTML report's browser test). Installs as root, else through non-interactive
## sudo, else prints the command and goes on (the tests that need them then say so).
SYSDEPS_CMDS := bwrap:bubblewrap chromium:chromium
sysdeps:
	@command -v apt-get >/dev/null 2>&1 || exit 0; \
	missing=""; for pair in $(SYSDEPS_CMDS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	[ -n "$$missing" ] || exit 0; \
	cmd="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null"; \
	if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; sh -c "$$cmd"; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  echo "installing with sudo:$$missing"; sudo -n sh -c "$$cmd"; \
	else echo "missing system packages:$$missing; install them with:"; \
	  echo "  sudo apt-get install$$missing"; fi

## Fetch the embedded default models, measure them, write reports/<run-id>/report.md
bench: install sysdeps
	$(PY) -m edgeeval fetch
	$(PY) -m edgeeval bench $(BENCH_ARGS)

## Re-render the latest run's report from stored results (no model is loaded)
report: install
	$(PY) -m edgeeval report latest

test: install sysdeps
	$(PY) -m pytest -q $(TEST_ARGS)

check: install
	$(PY) -m ruff check edgeeval tests
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache

## Speed parity with llama.cpp's llama-bench, built from the same llama-cpp-python sdist
## (tools go to .bench-tools/, results to reports/parity/; PARITY_ARGS e.g. --rounds 5)
.PHONY: parity-bench
parity-bench: install sysdeps
	benchmarks/tools/build_llama_tools.sh
	$(PY) benchmarks/llama_bench_parity.py $(PARITY_ARGS)

## Batched evaluation versus llama-server (-np B, continuous batching) and edgeeval one at a
## time, on HumanEval (results to reports/batch/; BATCH_ARGS e.g. --problems 16 --batch 8)
.PHONY: batch-bench
batch-bench: install sysdeps
	benchmarks/tools/build_llama_tools.sh
	$(PY) benchmarks/batch_eval_bench.py $(BATCH_ARGS)
