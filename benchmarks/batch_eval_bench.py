"""Batched evaluation versus llama-server: HumanEval completions, greedy, three ways.

Problems: `--problems N` of HumanEval-164 (the task's seeded sample; 164 = all).
1. llama-server (built from the llama-cpp-python sdist edgeeval pins, by
   benchmarks/tools/build_llama_tools.sh), started on 127.0.0.1 with `-np B` parallel slots and
   continuous batching, each slot with the same context as edgeeval's (`-c B*n_ctx`), fed the
   raw HumanEval prompts by B concurrent HTTP clients (POST /completion: temperature 0,
   top_k 1, n_predict = the token limit, the HumanEval stop strings, cache_prompt false);
2. edgeeval batched: LlamaBackend + engine.batch.BatchEngine(B).generate_many, as the worker's
   accuracy phase runs code tasks;
3. edgeeval one at a time (B = 1): LlamaBackend.generate per prompt, today's path.

The three run alternately, `--rounds` times, in rotating order; model load and server start-up
are outside the timed part. Per side: wall seconds, generated tokens per second, and the ratios
`speedup_vs_sequential` (edgeeval batched over B = 1) and `ratio_vs_server` (edgeeval batched
over llama-server, tokens per second). Outputs that differ between batched and unbatched (and
between edgeeval and the server) are counted: batch shape changes llama.cpp's CPU numerics, so
a near tie can go the other way. With `--pass-at-1` every output is also run against the
problem's tests (in the OS sandbox, as `--allow-code-exec`) and pass@1 ± SE is printed per side.

Usage (repository root):
    benchmarks/tools/build_llama_tools.sh
    .venv/bin/python benchmarks/batch_eval_bench.py [--problems 16] [--batch 8] [--rounds 1]
Writes reports/batch/<time>.json. Run on a quiet machine: llama.cpp's OpenMP threads slow down
by large factors when another process takes a core.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edgeeval.catalog.models import load_catalog
from edgeeval.engine.backend import GenerationResult, LlamaBackend, LoadOptions
from edgeeval.engine.batch import BatchEngine, GenRequest
from edgeeval.fetch.specs import resolve_one
from edgeeval.quant.build import ensure_file
from edgeeval.tasks.suite import HUMANEVAL_STOPS

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"
DEFAULT_SERVER = ROOT / ".bench-tools" / "build" / "bin" / "llama-server"


def humaneval_items(n: int) -> list[Any]:
    """`n` HumanEval problems (CodeItems): the task's own seeded sample, in problem order (all
    164 with n = 164), the same selection `edgeeval bench --limit n` scores."""
    from edgeeval.tasks.suite import get_task

    return get_task("humaneval-full").items(limit=n, seed=0)


# --- the three sides; each returns (wall seconds, generated tokens, texts) ---


def run_sequential(backend: LlamaBackend, requests: list[GenRequest]) -> tuple[float, int, list]:
    start = time.perf_counter()
    results = []
    for r in requests:
        try:
            results.append(backend.generate(r.tokens, max_tokens=r.max_tokens, stop=r.stop))
        except ValueError as exc:
            results.append(f"ValueError: {exc}")
    wall = time.perf_counter() - start
    return wall, _n_gen(results), _texts(results)


def run_batched(engine: BatchEngine, requests: list[GenRequest]) -> tuple[float, int, list]:
    start = time.perf_counter()
    results = engine.generate_many(requests)
    wall = time.perf_counter() - start
    return wall, _n_gen(results), _texts(results)


def _n_gen(results: list) -> int:
    return sum(r.n_gen_tokens for r in results if isinstance(r, GenerationResult))


def _texts(results: list) -> list[str | None]:
    return [r.text if isinstance(r, GenerationResult) else None for r in results]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, model: Path, port: int) -> subprocess.Popen:
    """llama-server with B slots of n_ctx tokens each, waiting until /health answers."""
    cmd = [
        str(args.server),
        "-m", str(model),
        "--host", "127.0.0.1",
        "--port", str(port),
        "-np", str(args.batch),
        "-c", str(args.batch * args.n_ctx),
        "-cb",
        "-t", str(args.threads),
        "-tb", str(args.threads),
        "-b", str(args.n_batch),
        "-ub", str(args.n_batch),
        "-ngl", str(args.n_gpu_layers),
        "-fa", "off",
        "--no-warmup",
    ]  # fmt: skip
    log = open(args.out / "llama-server.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("llama-server did not become healthy in 300 s")


def complete(port: int, prompt: str, max_tokens: int) -> dict[str, Any]:
    body = {
        "prompt": prompt,
        "n_predict": max_tokens,
        "temperature": 0.0,
        "top_k": 1,
        "stop": list(HUMANEVAL_STOPS),
        "cache_prompt": False,
        "stream": False,
    }
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/completion",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.loads(r.read())


def run_server(args: argparse.Namespace, model: Path, items: list) -> tuple[float, int, list]:
    port = free_port()
    proc = start_server(args, model, port)
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.batch) as pool:
            replies = list(pool.map(lambda i: complete(port, i.prompt, i.max_tokens), items))
        wall = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return (
        wall,
        sum(int(r.get("tokens_predicted", 0)) for r in replies),
        [r.get("content") for r in replies],
    )


# --- scoring and reporting ---


def pass_at_1(items: list, texts: list[str | None]) -> tuple[float, float]:
    """pass@1 and its binomial SE over the problems, outputs run in the OS sandbox."""
    from edgeeval.metrics import binomial_se
    from edgeeval.sandbox.codeexec import PASSED, CodeCheck, run_check
    from edgeeval.sandbox.jail import choose

    sandbox = choose(unsafe=False)
    passed = [
        text is not None
        and run_check(CodeCheck(i.prompt, text, i.test, i.entry_point), sandbox=sandbox).status
        == PASSED
        for i, text in zip(items, texts, strict=True)
    ]
    acc = sum(passed) / len(passed)
    return acc, binomial_se(acc, len(passed))


def differing(a: list, b: list) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Mean wall time and tokens/s per side, and the two ratios (of tokens per second)."""
    sides = {}
    for side, rows in runs.items():
        if rows:
            wall = statistics.mean(r["wall_s"] for r in rows)
            tps = statistics.mean(r["tokens"] / r["wall_s"] for r in rows)
            sides[side] = {"wall_s": wall, "tokens_per_s": tps, "rounds": len(rows)}
    out: dict[str, Any] = {"sides": sides}
    if "batched" in sides and "sequential" in sides:
        out["speedup_vs_sequential"] = (
            sides["batched"]["tokens_per_s"] / sides["sequential"]["tokens_per_s"]
        )
    if "batched" in sides and "server" in sides:
        out["ratio_vs_server"] = sides["batched"]["tokens_per_s"] / sides["server"]["tokens_per_s"]
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="edgeeval variant name or GGUF path")
    ap.add_argument(
        "--problems", type=int, default=164, help="N HumanEval problems (seeded sample)"
    )
    ap.add_argument("--batch", type=int, default=8, help="sequences per decode / server slots")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--n-ctx", type=int, default=2048, help="context per sequence")
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--n-gpu-layers", type=int, default=0, help="both sides (99 = all)")
    ap.add_argument("--server", type=Path, default=DEFAULT_SERVER)
    ap.add_argument("--sides", default="server,batched,sequential")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "batch")
    ap.add_argument("--unified-kv", action="store_true", help="edgeeval: one KV buffer")
    ap.add_argument("--pass-at-1", action="store_true", help="also run the tests (sandboxed)")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog()  # a catalog name or a model spec (a path, hf:...), as `bench` takes
    model = ensure_file(resolve_one(catalog, args.model), catalog).path
    items = humaneval_items(args.problems)
    options = LoadOptions(n_ctx=args.n_ctx, n_threads=args.threads, n_batch=args.n_batch,
                          n_ubatch=args.n_batch, n_gpu_layers=args.n_gpu_layers)  # fmt: skip
    backend = LlamaBackend(str(model), options)
    engine = BatchEngine(backend, args.batch, unified=args.unified_kv)
    requests = [
        GenRequest(backend.tokenize(i.prompt, add_bos=True), i.max_tokens, HUMANEVAL_STOPS)
        for i in items
    ]
    sides = [s for s in args.sides.split(",") if s]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    texts: dict[str, list] = {}
    for round_no in range(args.rounds):
        order = sides[round_no % len(sides) :] + sides[: round_no % len(sides)]
        for side in order:
            load = os.getloadavg()[0]
            if side == "server":
                wall, tokens, got = run_server(args, model, items)
            elif side == "batched":
                wall, tokens, got = run_batched(engine, requests)
            else:
                wall, tokens, got = run_sequential(backend, requests)
            texts[side] = got
            runs[side].append({"round": round_no, "wall_s": wall, "tokens": tokens,
                               "load_before": load})  # fmt: skip
            print(f"round {round_no + 1} {side:10} {wall:8.1f} s {tokens:6d} tokens "
                  f"{tokens / wall:7.1f} tok/s (load {load:.1f})", flush=True)  # fmt: skip
    engine.close()
    backend.close()
    result = summarize(runs)
    pairs = [("batched", "sequential"), ("batched", "server"), ("sequential", "server")]
    result["differing_outputs"] = {
        f"{a}_vs_{b}": differing(texts[a], texts[b]) for a, b in pairs if a in texts and b in texts
    }
    if args.pass_at_1:
        result["pass_at_1"] = {s: pass_at_1(items, t) for s, t in texts.items()}
    result.update(
        config={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        model_path=str(model),
        n_problems=len(items),
        runs=runs,
        outputs=texts,
    )
    print_table(result)
    path = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0


def print_table(result: dict[str, Any]) -> None:
    print(f"\n| side | wall s | tok/s |  (problems: {result['n_problems']})")
    print("|---|---:|---:|")
    for side, s in result["sides"].items():
        print(f"| {side} | {s['wall_s']:.1f} | {s['tokens_per_s']:.1f} |")
    for key in ("speedup_vs_sequential", "ratio_vs_server"):
        if key in result:
            print(f"{key}: {result[key]:.2f}")
    for key, n in result["differing_outputs"].items():
        print(f"differing outputs {key}: {n} of {result['n_problems']}")
    for side, (acc, se) in result.get("pass_at_1", {}).items():
        print(f"pass@1 {side}: {acc:.3f} ± {se:.3f}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
