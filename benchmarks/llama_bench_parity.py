"""Speed parity: edgeeval's pp/tg measurement versus llama.cpp's own llama-bench.

Both sides run the same llama.cpp source (llama-bench is built from the llama-cpp-python sdist
that edgeeval pins, by benchmarks/tools/build_llama_tools.sh) with the same settings: threads,
n_batch/n_ubatch, flash attention off, mmap on, no GPU layers, f16 KV cache, warmup on. They run
ALTERNATELY (edgeeval, llama-bench, edgeeval, llama-bench, ...), each side in its own process
that loads the model afresh, as a real `edgeeval bench` does. The edgeeval side is edgeeval's
own worker code path: LlamaBackend + run_speed_test in a child process.

Before each run the script notes the 1-minute load average and the CPU use by other processes
in the preceding second; during each run it measures how much CPU other processes took. On a
small machine another busy process can slow OpenMP-based llama.cpp by a large factor, so read
the ratios together with those numbers. The PASS/FAIL verdict uses the ratio of the pooled
means (all rounds x reps per side); per-round ratios and the ratio of the best samples (fastest
repetition per side, the least disturbed by other processes) are printed beside it. A run during
which other processes took more than --max-foreign of the CPUs is repeated (--retries times at
most); the discarded runs are kept in the JSON and counted in the table.

Usage (from the repository root, after `benchmarks/tools/build_llama_tools.sh`):
    .venv/bin/python benchmarks/llama_bench_parity.py [--rounds 5] [--reps 5] [--threads N]
Writes reports/parity/llama-bench-parity-<time>.json and prints Markdown tables.
Exit status: 0 when every test's ratio is inside the band, 1 when one is outside, 2 on errors.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"
DEFAULT_TOOLS = ROOT / ".bench-tools" / "build" / "bin"

# The edgeeval side, run in a child process: the same objects and calls as edgeeval.run.worker's
# measure() (LoadOptions from the settings, LlamaBackend, run_speed_test per test), minus the
# accuracy tasks. Prints one JSON object on stdout.
EDGEEVAL_CHILD = r"""
import dataclasses, json, sys
from edgeeval import records as rec
from edgeeval.engine.backend import LlamaBackend, LoadOptions, library_info
from edgeeval.run.speed import SpeedTest, run_speed_test

cfg = json.loads(sys.argv[1])
options = LoadOptions(n_ctx=cfg["n_ctx"], n_threads=cfg["threads"], n_batch=cfg["n_batch"],
                      n_ubatch=cfg["n_ubatch"], n_gpu_layers=cfg["n_gpu_layers"], flash_attn=False,
                      use_mmap=True)
backend = LlamaBackend(cfg["model"], options)
tests = [SpeedTest(n_prompt=cfg["pp"], n_gen=0), SpeedTest(n_prompt=0, n_gen=cfg["tg"])]
speed = [rec.to_dict(run_speed_test(backend, t, repetitions=cfg["reps"], seed=cfg["seed"]))
         for t in tests]
backend.close()
print(json.dumps({"speed": speed, "library": dataclasses.asdict(library_info())}))
"""


# --- machine load -------------------------------------------------------------------------------


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user/nice
    return total - idle, total


def busy_fraction(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over the next `seconds` (this script is idle meanwhile)."""
    b0, t0 = _cpu_jiffies()
    time.sleep(seconds)
    b1, t1 = _cpu_jiffies()
    return (b1 - b0) / max(t1 - t0, 1)


def wait_for_quiet(threshold: float, max_wait_s: float) -> tuple[float, float]:
    """Wait (up to max_wait_s) until other processes use < threshold of the CPUs.

    Returns (busy fraction seen last, seconds waited)."""
    start = time.monotonic()
    busy = busy_fraction()
    while busy >= threshold and time.monotonic() - start < max_wait_s:
        busy = busy_fraction()
    return busy, time.monotonic() - start


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run cmd; return stdout, wall time and how much CPU other processes used meanwhile."""
    ncpu = os.cpu_count() or 1
    hz = os.sysconf("SC_CLK_TCK")
    load_before = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0, _ = _cpu_jiffies()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.monotonic() - t0
    b1, _ = _cpu_jiffies()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    busy_cpu = (b1 - b0) / hz
    foreign = max(busy_cpu - child_cpu, 0.0)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {
        "stdout": proc.stdout,
        "wall_s": wall,
        "child_cpu_s": child_cpu,
        "foreign_cpu_s": foreign,
        "foreign_cpu_share": foreign / max(wall * ncpu, 1e-9),
        "loadavg_before": list(load_before),
    }


# --- the two sides ------------------------------------------------------------------------------


def run_edgeeval(python: str, cfg: dict[str, Any]) -> dict[str, Any]:
    out = run_measured([python, "-c", EDGEEVAL_CHILD, json.dumps(cfg)])
    data = json.loads(out.pop("stdout").strip().splitlines()[-1])
    tests = {
        s["test"]: {
            "samples_ts": s["samples_ts"],
            "avg_ts": s["avg_ts"],
            "stddev_ts": s["stddev_ts"],
            "samples_ns": s["samples_ns"],
        }
        for s in data["speed"]
    }
    return {**out, "tests": tests, "library": data["library"]}


def llama_bench_cmd(bench: Path, cfg: dict[str, Any]) -> list[str]:
    """Every parameter explicit: llama-bench's defaults differ from edgeeval's (-b 2048,
    -ngl 99, -fa auto, -t = its own core count, ...)."""
    return [
        str(bench),
        "-m",
        cfg["model"],
        "-p",
        str(cfg["pp"]),
        "-n",
        str(cfg["tg"]),
        "-d",
        "0",
        "-b",
        str(cfg["n_batch"]),
        "-ub",
        str(cfg["n_ubatch"]),
        "-t",
        str(cfg["threads"]),
        "-ngl",
        str(cfg["n_gpu_layers"]),
        "-fa",
        "off",
        "-lm",
        "mmap",
        "-ctk",
        "f16",
        "-ctv",
        "f16",
        "-nkvo",
        "0",
        "-embd",
        "0",
        "-nopo",
        "0",
        "--repack",
        "1",
        "-C",
        "0x0",
        "--cpu-strict",
        "0",
        "--poll",
        "50",
        "--prio",
        "0",
        "--delay",
        "0",
        "-r",
        str(cfg["reps"]),
        "-o",
        "json",
    ]


def run_llama_bench(bench: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)  # use the libraries built beside llama-bench (RPATH)
    out = run_measured(llama_bench_cmd(bench, cfg), env=env)
    rows = json.loads(out.pop("stdout"))
    tests, build = {}, {}
    for row in rows:
        name = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        for key, want in (
            ("n_threads", cfg["threads"]),
            ("n_batch", cfg["n_batch"]),
            ("n_ubatch", cfg["n_ubatch"]),
            ("n_gpu_layers", cfg["n_gpu_layers"]),
            ("flash_attn", 0),
            ("load_mode", "mmap"),
            ("type_k", "f16"),
            ("type_v", "f16"),
            ("n_depth", 0),
        ):
            if key in row and row[key] != want:
                raise RuntimeError(f"llama-bench ran {name} with {key}={row[key]}, not {want}")
        tests[name] = {
            "samples_ts": row["samples_ts"],
            "avg_ts": row["avg_ts"],
            "stddev_ts": row["stddev_ts"],
            "samples_ns": row["samples_ns"],
        }
        build = {
            k: row.get(k)
            for k in (
                "build_commit",
                "build_number",
                "cpu_info",
                "backends",
                "type_k",
                "type_v",
                "flash_attn",
                "use_mmap",
                "load_mode",
                "n_threads",
                "n_batch",
                "n_ubatch",
                "n_gpu_layers",
                "poll",
                "cpu_mask",
            )
            if k in row
        }
    return {**out, "tests": tests, "build": build}


# --- build identity -----------------------------------------------------------------------------


def ggml_build(lib_dir: Path) -> dict[str, str]:
    """ggml_version()/ggml_commit() of the libggml-base.so in lib_dir."""
    try:
        lib = ctypes.CDLL(str(lib_dir / "libggml-base.so"))
        lib.ggml_commit.restype = ctypes.c_char_p
        lib.ggml_version.restype = ctypes.c_char_p
        return {
            "ggml_version": lib.ggml_version().decode(),
            "ggml_commit": lib.ggml_commit().decode(),
            "lib": str(lib_dir),
        }
    except (OSError, AttributeError) as exc:
        return {"error": str(exc), "lib": str(lib_dir)}


def wheel_build(python: str) -> dict[str, Any]:
    code = (
        "import json, pathlib, llama_cpp; print(json.dumps({'version': llama_cpp.__version__,"
        " 'lib': str(pathlib.Path(llama_cpp.__file__).parent / 'lib')}))"
    )
    info = json.loads(
        subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    return {"llama_cpp_python_version": info["version"], **ggml_build(Path(info["lib"]))}


# --- helpers ------------------------------------------------------------------------------------


def resolve_model(name: str) -> str:
    """The GGUF of a catalog name or a model spec (a path, hf:...), as `edgeeval bench` finds
    it: edgeeval's own resolver, fetching or building the file when it is not there yet."""
    from edgeeval.catalog.models import load_catalog
    from edgeeval.fetch.specs import resolve_one
    from edgeeval.quant.build import ensure_file

    catalog = load_catalog()
    return str(ensure_file(resolve_one(catalog, name), catalog).path.resolve())


def stats(samples: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(samples)
    return mean, (statistics.stdev(samples) if len(samples) > 1 else 0.0)


def default_threads() -> int:
    from edgeeval.engine.host import physical_cores  # what `edgeeval bench` uses by default

    return physical_cores()


def summarize(
    rounds: list[dict[str, Any]], tests: list[str], band: tuple[float, float]
) -> dict[str, Any]:
    out = {}
    for test in tests:
        e = [x for r in rounds for x in r["edgeeval"]["tests"][test]["samples_ts"]]
        b = [x for r in rounds for x in r["llama_bench"]["tests"][test]["samples_ts"]]
        (em, es), (bm, bs) = stats(e), stats(b)
        per_round = [
            r["edgeeval"]["tests"][test]["avg_ts"] / r["llama_bench"]["tests"][test]["avg_ts"]
            for r in rounds
        ]
        ratio = em / bm
        out[test] = {
            "edgeeval_mean_ts": em,
            "edgeeval_sd_ts": es,
            "edgeeval_n": len(e),
            "llama_bench_mean_ts": bm,
            "llama_bench_sd_ts": bs,
            "llama_bench_n": len(b),
            "ratio": ratio,
            "ratio_per_round": per_round,
            "ratio_best_sample": max(e) / max(b),
            "ratio_median_of_rounds": statistics.median(per_round),
            "pass": band[0] <= ratio <= band[1],
        }
    return out


def markdown(
    summary: dict[str, Any],
    rounds: list[dict[str, Any]],
    band: tuple[float, float],
) -> str:
    lines = [
        f"| test | edgeeval t/s | llama-bench t/s | ratio e/lb | {band[0]:.2f}..{band[1]:.2f} "
        "| per-round ratios | best-sample ratio |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for test, s in summary.items():
        lines.append(
            f"| {test} | {s['edgeeval_mean_ts']:.2f} ± {s['edgeeval_sd_ts']:.2f} "
            f"| {s['llama_bench_mean_ts']:.2f} ± {s['llama_bench_sd_ts']:.2f} "
            f"| {s['ratio']:.3f} | {'PASS' if s['pass'] else 'FAIL'} "
            f"| {', '.join(f'{x:.3f}' for x in s['ratio_per_round'])} "
            f"| {s['ratio_best_sample']:.3f} |"
        )
    lines += [
        "",
        "| round | side | load 1/5/15 min before "
        "| other processes' CPU share during run | discarded disturbed runs |",
        "|---|---|---|---|---:|",
    ]
    for i, r in enumerate(rounds, 1):
        for side in ("edgeeval", "llama_bench"):
            x = r[side]
            load = "/".join(f"{v:.2f}" for v in x["loadavg_before"])
            flag = " (disturbed)" if x.get("disturbed") else ""
            lines.append(
                f"| {i} | {side.replace('_', '-')} | {load} "
                f"| {100 * x['foreign_cpu_share']:.1f} %{flag} "
                f"| {len(x.get('discarded_attempts', []))} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="edgeeval variant name or GGUF path")
    ap.add_argument(
        "--python",
        default=str(ROOT / ".venv" / "bin" / "python"),
        help="interpreter with edgeeval and llama-cpp-python installed",
    )
    ap.add_argument("--tools", type=Path, default=DEFAULT_TOOLS, help="dir with llama-bench")
    ap.add_argument("--rounds", type=int, default=5, help="A/B rounds (at least 3)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per test and run (>= 5)")
    ap.add_argument(
        "--threads", type=int, default=0, help="0 = edgeeval's default (physical cores)"
    )
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--n-ubatch", type=int, default=512)
    ap.add_argument(
        "--n-ctx",
        type=int,
        default=2048,
        help="edgeeval's n_ctx, default that of a real run (llama-bench uses "
        "pp+tg, padded to 256; the attended KV length is 256 either way, but "
        "without flash attention the V cache is stored transposed, so its row "
        "stride follows n_ctx: measured pp128 ratio 0.983 at 2048, 0.993 at "
        "256)",
    )
    ap.add_argument(
        "--n-gpu-layers",
        type=int,
        default=0,
        help="layers offloaded on both sides (99 = all; needs a GPU build of both)",
    )
    ap.add_argument("--pp", type=int, default=128)
    ap.add_argument("--tg", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--band", type=float, nargs=2, default=(0.95, 1.05))
    ap.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.15,
        help="before each run wait until other processes use less than this share "
        "of all CPUs over 1 s ...",
    )
    ap.add_argument("--max-wait", type=float, default=60.0, help="... but at most this many s")
    ap.add_argument(
        "--max-foreign",
        type=float,
        default=0.10,
        help="a run during which other processes used more than this share of all "
        "CPUs counts as disturbed and is repeated ...",
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=3,
        help="... at most this many times (the discarded runs stay in the JSON)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "parity")
    args = ap.parse_args(argv)
    if args.rounds < 3 or args.reps < 5:
        ap.error("use at least 3 rounds and 5 repetitions")

    bench = args.tools / "llama-bench"
    if not os.access(bench, os.X_OK):
        print(f"{bench} not found: run benchmarks/tools/build_llama_tools.sh", file=sys.stderr)
        return 2
    threads = args.threads or default_threads()
    cfg = {
        "model": resolve_model(args.model),
        "threads": threads,
        "n_batch": args.n_batch,
        "n_ubatch": args.n_ubatch,
        "n_ctx": args.n_ctx,
        "n_gpu_layers": args.n_gpu_layers,
        "pp": args.pp,
        "tg": args.tg,
        "reps": args.reps,
        "seed": args.seed,
    }
    band = (args.band[0], args.band[1])
    tests = [f"pp{args.pp}", f"tg{args.tg}"]
    print(
        f"model {cfg['model']}\nthreads {threads}, n_batch {args.n_batch}, "
        f"n_ubatch {args.n_ubatch}, {args.rounds} rounds x {args.reps} reps, "
        f"llama-bench: {' '.join(llama_bench_cmd(bench, cfg)[1:])}",
        flush=True,
    )

    rounds: list[dict[str, Any]] = []
    for i in range(1, args.rounds + 1):
        rnd: dict[str, Any] = {}
        for side in ("edgeeval", "llama_bench"):
            discarded: list[dict[str, Any]] = []
            for attempt in range(args.retries + 1):
                busy, waited = wait_for_quiet(args.quiet_threshold, args.max_wait)
                try:
                    if side == "edgeeval":
                        res = run_edgeeval(args.python, cfg)
                    else:
                        res = run_llama_bench(bench, cfg)
                except RuntimeError as exc:
                    print(exc, file=sys.stderr)
                    return 2
                disturbed = res["foreign_cpu_share"] > args.max_foreign
                res.update(busy_before=busy, waited_s=waited, disturbed=disturbed)
                t = "  ".join(
                    f"{k} {v['avg_ts']:.1f}±{v['stddev_ts']:.1f}" for k, v in res["tests"].items()
                )
                others = 100 * res["foreign_cpu_share"]
                last = not disturbed or attempt == args.retries
                note = (
                    ""
                    if not disturbed
                    else (" DISTURBED, kept" if last else " DISTURBED, discarded, repeating")
                )
                print(
                    f"round {i} {side:11s} {t} t/s  (load {res['loadavg_before'][0]:.2f}, "
                    f"busy before {100 * busy:.0f} %, others during {others:.0f} %){note}",
                    flush=True,
                )
                if last:
                    break
                discarded.append(
                    {k: res[k] for k in ("tests", "foreign_cpu_share", "loadavg_before", "wall_s")}
                )
            res["discarded_attempts"] = discarded
            rnd[side] = res
        rounds.append(rnd)

    summary = summarize(rounds, tests, band)
    wheel = wheel_build(args.python)
    tools = {**ggml_build(args.tools), **rounds[-1]["llama_bench"]["build"]}
    table = markdown(summary, rounds, band)
    same = wheel.get("ggml_commit") is not None and wheel.get("ggml_commit") == tools.get(
        "ggml_commit"
    )
    print()
    print(table)
    print(
        f"\nllama-bench build: commit {tools.get('build_commit')} "
        f"(build {tools.get('build_number')}), ggml {tools.get('ggml_version')} "
        f"commit {tools.get('ggml_commit')}"
    )
    print(
        f"wheel llama-cpp-python {wheel.get('llama_cpp_python_version')}: ggml "
        f"{wheel.get('ggml_version')} commit {wheel.get('ggml_commit')}"
        f" -> {'same source' if same else 'DIFFERENT'}"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"llama-bench-parity-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "created": stamp,
                "host": platform.node(),
                "cpu_count": os.cpu_count(),
                "config": cfg,
                "band": band,
                "llama_bench_cmd": llama_bench_cmd(bench, cfg),
                "wheel": wheel,
                "tools": tools,
                "same_source": same,
                "summary": summary,
                "rounds": rounds,
                "markdown": table,
            },
            indent=2,
        )
    )
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    ok = all(s["pass"] for s in summary.values()) and all(
        math.isfinite(s["ratio"]) for s in summary.values()
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
