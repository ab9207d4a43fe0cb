# edgeeval's front door. `make bench` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgeeval-installed

.PHONY: install sysdeps bench test check report clean doctor

## BACKEND=metal|cuda|vulkan|cpu (re)builds llama-cpp-python for that backend, with pip's
## cache bypassed (--no-cache-dir --force-reinstall) so a wheel built for another backend is
## never reused; a stamp per backend records which one is installed. Unset: pip's default build.
BACKEND ?=
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
CMAKE_ARGS_metal := -DGGML_METAL=on
CMAKE_ARGS_cuda := -DGGML_CUDA=on
CMAKE_ARGS_vulkan := -DGGML_VULKAN=on
CMAKE_ARGS_cpu := -DGGML_METAL=off -DGGML_CUDA=off -DGGML_VULKAN=off
BACKEND_STAMP := $(if $(BACKEND),$(VENV)/.llama-backend-$(BACKEND))

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	@echo "Installing edgeeval and llama-cpp-python (first time: builds from source, ~10 min on 2 cores)"
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) $(BACKEND_STAMP)

$(VENV)/.llama-backend-%: | $(STAMP)
	@test -n "$(CMAKE_ARGS_$*)" || { echo "BACKEND=$* is not one of: metal cuda vulkan cpu"; exit 2; }
	@echo "Building llama-cpp-python for $* (CMAKE_ARGS=\"$(CMAKE_ARGS_$*)\"; several minutes)"
	rm -f $(VENV)/.llama-backend-*
	CMAKE_ARGS="$(CMAKE_ARGS_$*)" $(PY) -m pip install --force-reinstall --no-cache-dir --no-deps $(LLAMA_CPP_PYTHON)
	touch $@

## What llama.cpp was built for (CPU/Metal/CUDA/Vulkan), GPU offload, devices, and the fix
doctor: install
	$(PY) -m edgeeval doctor

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
	$(PY) -m ruff format --check edgeeval tests benchmarks
	$(PY) -m ruff check edgeeval tests benchmarks
	$(PY) -m mypy edgeeval
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

## Racing (issue 21): the seven-variant full run on the offline suite with HumanEval's code
## executed (resumed when interrupted: run it again), 1000 replays of the race over its stored
## verdicts, the null check, one real race alternated with a full run (results to
## reports/racing/; RACING_ARGS e.g. --phases replay --run RUN_ID)
.PHONY: racing-bench
racing-bench: install sysdeps
	$(PY) -m edgeeval fetch
	$(PY) benchmarks/racing_bench.py $(RACING_ARGS)

## lm-evaluation-harness for the test that reads edgeeval's lm-eval files with lm-eval's own
## loaders (tests/test_lmeval_results.py), in its own venv under .bench-tools/ (lm-eval 0.4.13
## and its dependencies are ~760 MB, no torch): the test runs it there when lm-eval is not in
## $(VENV). Not part of `make test`; .ci/run does it first.
LMEVAL_VENV := .bench-tools/lmeval-venv
LMEVAL := lm-eval==0.4.13
.PHONY: lmeval-tools
lmeval-tools: $(LMEVAL_VENV)/.installed
$(LMEVAL_VENV)/.installed:
	test -x $(LMEVAL_VENV)/bin/python || $(PYTHON) -m venv $(LMEVAL_VENV)
	$(LMEVAL_VENV)/bin/python -m pip install -q --upgrade pip
	$(LMEVAL_VENV)/bin/python -m pip install -q '$(LMEVAL)'
	$(LMEVAL_VENV)/bin/python -c "import lm_eval.utils"
	touch $@
