#!/usr/bin/env bash
# Build llama.cpp's own llama-bench, llama-perplexity and llama-server from the llama.cpp source vendored in
# the llama-cpp-python sdist that edgeeval pins (the same source the installed wheel was built
# from), with the CMake options that llama-cpp-python's build uses by default, so that parity
# comparisons measure the same native code.
#
# Output: .bench-tools/ at the repository root (git-ignored):
#   .bench-tools/sdist/           the downloaded llama-cpp-python sdist
#   .bench-tools/src/             the extracted sdist
#   .bench-tools/build/bin/       llama-bench, llama-perplexity, llama-server and their libraries
#   .bench-tools/build-info.txt   configure flags and the llama.cpp version the tools report
# Idempotent: does nothing when all three binaries already exist (FORCE=1 rebuilds).
# Env: PYTHON (default .venv/bin/python), JOBS (default 2), LLAMA_CPP_PYTHON_VERSION,
#      GGML_BACKEND=cuda for a CUDA build (CUDA_ARCHS, default native), which also builds the
#      llama library itself: llama-cpp-python's Python package loads it with
#      LLAMA_CPP_LIB_PATH=.bench-tools/build/bin (how the CUDA path was checked on a GPU machine),
#      EXTRA_CMAKE_FLAGS (more -D options, space separated).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
JOBS="${JOBS:-2}"
TOOLS="$ROOT/.bench-tools"
SRC="$TOOLS/src/llama_cpp_python-$VERSION"
BUILD="$TOOLS/build"
BIN="$BUILD/bin"

TARGETS=(llama-bench llama-perplexity llama-server)
have_all=1
for t in "${TARGETS[@]}"; do [[ -x "$BIN/$t" ]] || have_all=0; done
if [[ "${FORCE:-0}" != 1 && "$have_all" == 1 ]]; then
    echo "llama tools already built in $BIN (FORCE=1 to rebuild)"
    exit 0
fi

mkdir -p "$TOOLS/sdist" "$TOOLS/src"
SDIST="$TOOLS/sdist/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$SDIST" && ! -d "$SRC/vendor/llama.cpp" ]]; then
    echo "Downloading llama-cpp-python==$VERSION sdist"
    "$PYTHON" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" \
        -d "$TOOLS/sdist"
fi
if [[ ! -d "$SRC/vendor/llama.cpp" ]]; then
    echo "Extracting $SDIST"
    tar -xzf "$SDIST" -C "$TOOLS/src"
fi

# Options: what llama-cpp-python's CMakeLists.txt forces (shared libraries, no curl) plus
# llama.cpp/ggml's defaults, which the wheel build keeps: Release (scikit-build-core's default
# build type), GGML_NATIVE=ON (-march=native), OpenMP, llamafile sgemm, CPU repack. Only the
# three tools are built; HTTPS/OpenSSL is off (the tools never download anything; llama-server
# is only started on 127.0.0.1 by benchmarks/batch_eval_bench.py).
CMAKE_FLAGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=ON
    -DGGML_NATIVE=ON
    -DGGML_OPENMP=ON
    -DGGML_LLAMAFILE=ON
    -DGGML_CPU_REPACK=ON
    -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF
    -DLLAMA_CURL=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_COMMON=ON
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_SERVER=ON
    -DLLAMA_BUILD_APP=OFF
)

case "${GGML_BACKEND:-cpu}" in
    cpu) CMAKE_FLAGS+=(-DGGML_CUDA=OFF) ;;
    cuda)
        CMAKE_FLAGS+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS:-native}")
        TARGETS+=(llama)
        ;;
    *) echo "GGML_BACKEND must be cpu or cuda, not ${GGML_BACKEND}" >&2; exit 2 ;;
esac

# shellcheck disable=SC2206
CMAKE_FLAGS+=(${EXTRA_CMAKE_FLAGS:-})

start=$(date +%s)
cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" "${CMAKE_FLAGS[@]}"
cmake --build "$BUILD" --config Release -j"$JOBS" --target "${TARGETS[@]}"
elapsed=$(( $(date +%s) - start ))

{
    echo "llama-cpp-python sdist: $VERSION ($SDIST)"
    echo "source: $SRC/vendor/llama.cpp"
    echo "cmake flags: ${CMAKE_FLAGS[*]}"
    echo "build seconds (-j$JOBS): $elapsed"
    echo "llama-bench --version:"
    "$BIN/llama-bench" --version 2>&1 || true
} > "$TOOLS/build-info.txt"
cat "$TOOLS/build-info.txt"
echo "Built ${TARGETS[*]} in $BIN in ${elapsed}s"
