"""Batched multiple-choice scoring versus one question at a time, on the offline MC tasks.

Every item of each task of a suite (default `mc`: arith, python-eval, pydoc-cloze, facts,
code-complete) is scored two ways, alternately, `--rounds` times:
1. one at a time: LlamaBackend.choice_logliks per question (the context decoded once, each
   choice on top of it), what `edgeeval bench --eval-batch 1` runs;
2. batched: engine.batch.BatchEngine(B).choice_logliks_many per task, what the accuracy phase
   runs by default: B questions per decode, the prompt prefix all questions of a task share
   decoded once.
The questions are tokenized once, outside the timed part, as score.choice.score_task does.
Printed and written to reports/batch/mc-<time>.json: wall seconds per side and task, the
speed-up, how many questions pick the same choice both ways, and the log-likelihood
differences (batch shape changes llama.cpp's CPU numerics; they are counted, not hidden).

Usage (repository root, on a quiet machine):
    .venv/bin/python benchmarks/mc_batch_bench.py [--batch 8] [--rounds 2] [--suite mc]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeeval.catalog.models import load_catalog
from edgeeval.engine.backend import LlamaBackend, LoadOptions
from edgeeval.engine.batch import BatchEngine, shared_prefix
from edgeeval.fetch.specs import resolve_one
from edgeeval.quant.build import ensure_file
from edgeeval.score.choice import continuation_tokens
from edgeeval.tasks.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"

Question = tuple[list[int], list[list[int]]]


def questions_of(backend: LlamaBackend, suite: str) -> dict[str, list[Question]]:
    """Per multiple-choice task of `suite`: (context tokens, choice tokens) of every item."""
    out = {}
    for task in load_suite(suite):
        if task.kind != "multiple_choice":
            continue
        qs = []
        for item in task.items(seed=0):
            ctx = backend.tokenize(item.context, add_bos=True)
            qs.append(
                (ctx, [continuation_tokens(backend, item.context, c, ctx) for c in item.choices])
            )
        out[task.name] = qs
    return out


def one_at_a_time(backend: LlamaBackend, qs: list[Question]) -> list[list[float]]:
    return [backend.choice_logliks(ctx, conts) for ctx, conts in qs]


def compare(a: list[list[float]], b: list[list[float]]) -> dict[str, Any]:
    """Same picks (argmax) and the log-likelihood differences between two scorings."""
    same = sum(int(np.argmax(x)) == int(np.argmax(y)) for x, y in zip(a, b, strict=True))
    diffs = [abs(p - q) for x, y in zip(a, b, strict=True) for p, q in zip(x, y, strict=True)]
    return {
        "questions": len(a),
        "same_pick": same,
        "max_abs_diff": max(diffs, default=0.0),
        "mean_abs_diff": statistics.fmean(diffs) if diffs else 0.0,
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="edgeeval variant name or GGUF path")
    ap.add_argument("--suite", default="mc")
    ap.add_argument("--batch", type=int, default=8, help="questions per decode")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--n-ctx", type=int, default=2048, help="context per sequence")
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--unified-kv", action="store_true", help="one KV buffer for all sequences")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "batch")
    args = ap.parse_args(argv)

    catalog = load_catalog()  # a catalog name or a model spec (a path, hf:...), as `bench` takes
    model = ensure_file(resolve_one(catalog, args.model), catalog).path
    options = LoadOptions(n_ctx=args.n_ctx, n_threads=args.threads, n_gpu_layers=args.n_gpu_layers)
    backend = LlamaBackend(str(model), options)
    engine = BatchEngine(backend, args.batch, unified=args.unified_kv)
    tasks = questions_of(backend, args.suite)
    walls: dict[str, dict[str, list[float]]] = {"sequential": {}, "batched": {}}
    scores: dict[str, dict[str, list[list[float]]]] = {"sequential": {}, "batched": {}}
    for round_no in range(args.rounds):
        order = ["sequential", "batched"] if round_no % 2 == 0 else ["batched", "sequential"]
        for side in order:
            for name, qs in tasks.items():
                start = time.perf_counter()
                got = (
                    engine.choice_logliks_many(qs)
                    if side == "batched"
                    else one_at_a_time(backend, qs)
                )
                walls[side].setdefault(name, []).append(time.perf_counter() - start)
                scores[side][name] = got
            total = sum(w[-1] for w in walls[side].values())
            print(f"round {round_no + 1} {side:10} {total:7.1f} s", flush=True)
    engine.close()
    backend.close()

    per_task = {}
    for name, qs in tasks.items():
        seq, bat = (statistics.fmean(walls[s][name]) for s in ("sequential", "batched"))
        per_task[name] = {
            "sequential_s": seq,
            "batched_s": bat,
            "speedup": seq / bat,
            "shared_prefix_tokens": len(shared_prefix([c for c, _ in qs])),
            "context_tokens": sum(len(c) for c, _ in qs),
            **compare(scores["sequential"][name], scores["batched"][name]),
        }
    seq_total = sum(t["sequential_s"] for t in per_task.values())
    bat_total = sum(t["batched_s"] for t in per_task.values())
    n = sum(t["questions"] for t in per_task.values())
    same = sum(t["same_pick"] for t in per_task.values())
    result = {
        "model": str(model),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "tasks": per_task,
        "sequential_s": seq_total,
        "batched_s": bat_total,
        "speedup": seq_total / bat_total,
        "questions": n,
        "same_pick": same,
        "max_abs_diff": max(t["max_abs_diff"] for t in per_task.values()),
        "walls": walls,
    }
    print("\n| task | questions | shared prefix | one at a time s | batched s | speed-up "
          "| same pick | max abs Δ loglik | mean abs Δ |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, t in per_task.items():
        print(f"| {name} | {t['questions']} | {t['shared_prefix_tokens']} | "
              f"{t['sequential_s']:.2f} | {t['batched_s']:.2f} | {t['speedup']:.2f} | "
              f"{t['same_pick']}/{t['questions']} | {t['max_abs_diff']:.4f} | "
              f"{t['mean_abs_diff']:.4f} |")  # fmt: skip
    print(f"| all | {n} | | {seq_total:.2f} | {bat_total:.2f} | {result['speedup']:.2f} | "
          f"{same}/{n} ({100 * same / n:.1f} %) | {result['max_abs_diff']:.4f} | |")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"mc-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
