#!/usr/bin/env bash
# The CUDA path, checked on a machine with an NVIDIA GPU: llama.cpp built with GGML_CUDA from the
# llama-cpp-python sdist edgeeval pins, loaded by llama-cpp-python's own Python package
# (LLAMA_CPP_LIB_PATH), then edgeeval's real code paths run on it:
#   build    llama-bench, llama-server and the llama library (benchmarks/tools/build_llama_tools.sh)
#   measure  `edgeeval doctor`; `edgeeval bench MODEL` (offload detection, device memory, a few
#            tasks); llama_bench_parity.py with every layer offloaded on both sides;
#            batch_eval_bench.py (edgeeval batched vs llama-server vs B = 1) for each B in BATCHES
# Usage: benchmarks/tools/cuda_check.sh build|measure|all MODEL.gguf
# Env: OUT (results folder, default reports/cuda), PYTHON (default python3), CUDA_ARCHS,
#      EXTRA_CMAKE_FLAGS, BATCHES (default "8 32"), PROBLEMS (HumanEval problems, default 164),
#      WHEELS (a folder of wheels to install first, for a machine with no registry).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
stage="${1:?usage: cuda_check.sh build|measure|all MODEL.gguf}"
model="${2:-}"
OUT="${OUT:-$ROOT/reports/cuda}"
PYTHON="${PYTHON:-python3}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
SRC="$ROOT/.bench-tools/src/llama_cpp_python-$VERSION"
BIN="$ROOT/.bench-tools/build/bin"
mkdir -p "$OUT"

if [[ "$stage" == build || "$stage" == all ]]; then
    start=$(date +%s)
    PYTHON="$PYTHON" JOBS="${JOBS:-$(nproc)}" GGML_BACKEND=cuda FORCE=1 \
        "$ROOT/benchmarks/tools/build_llama_tools.sh" >/tmp/cuda-build.log 2>&1 \
        || { tail -40 /tmp/cuda-build.log; exit 1; }
    echo "build: $(( $(date +%s) - start )) s"
    cp "$ROOT/.bench-tools/build-info.txt" "$OUT/"
fi
[[ "$stage" == build ]] && exit 0
[[ -f "$model" ]] || { echo "measure needs a GGUF file, got '$model'" >&2; exit 2; }

if [[ -n "${WHEELS:-}" ]]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/edgeeval-site \
        "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/edgeeval-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT:$SRC:${PYTHONPATH:-}"
export LLAMA_CPP_LIB_PATH="$BIN"
export EDGEEVAL_HOME="${EDGEEVAL_HOME:-/tmp/edgeeval-home}"
export EDGEEVAL_REPORTS="${EDGEEVAL_REPORTS:-/tmp/edgeeval-reports}"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    "$PYTHON" -m edgeeval doctor 2>&1 || true
} >"$OUT/doctor.txt"
echo "--- doctor"; cat "$OUT/doctor.txt"

echo "--- bench"
"$PYTHON" -m edgeeval bench "$model" --tasks arith,facts,word-math --limit 40 --reps 3 \
    >"$OUT/bench.log" 2>&1 || { tail -40 "$OUT/bench.log"; exit 1; }
tail -25 "$OUT/bench.log"
run_dir=$(ls -td "$EDGEEVAL_REPORTS"/*/ 2>/dev/null | head -1 || true)
[[ -z "$run_dir" ]] || cp "$run_dir"/report.md "$run_dir"/report.json "$OUT/" 2>/dev/null || true

echo "--- llama-bench parity, every layer on the GPU"
"$PYTHON" benchmarks/llama_bench_parity.py --python "$PYTHON" --tools "$BIN" --model "$model" \
    --n-gpu-layers 99 --threads 1 --rounds 3 --reps 5 --out "$OUT" 2>&1 | tail -12

for b in ${BATCHES:-8 32}; do
    echo "--- batched evaluation, B = $b"
    "$PYTHON" benchmarks/batch_eval_bench.py --model "$model" --n-gpu-layers 99 --batch "$b" \
        --problems "${PROBLEMS:-164}" --server "$BIN/llama-server" --out "$OUT/batch" 2>&1 | tail -12
    rm -f "$OUT/batch/llama-server.log"
done
