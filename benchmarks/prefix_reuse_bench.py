"""Multiple-choice scoring: shared prefix evaluated once vs the full prompt per choice.

Runs both methods of edgeeval.engine.backend.LlamaBackend on the same questions (the offline suite's
multiple-choice items) with the same loaded model, alternating A B A B per question so machine
noise hits both alike, checks the log-likelihoods agree to 1e-4, and prints the speed-up.
The baseline re-decodes the whole prompt from an empty KV cache for every choice, split into
the same two decode calls (prompt, then continuation), so the arithmetic is identical. The
largest difference against decoding prompt + continuation as a single batch is printed too:
llama.cpp's CPU kernels (repacked and llamafile matmuls, activation quantization) depend on
the batch shape, which moves log-likelihoods by up to a few hundredths of a nat.

    .venv/bin/python benchmarks/prefix_reuse_bench.py [--model NAME] [--limit 10] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import time

from edgeeval.catalog.models import load_catalog
from edgeeval.engine.backend import LlamaBackend, LoadOptions
from edgeeval.engine.host import physical_cores
from edgeeval.fetch.sources import fetch
from edgeeval.score.choice import continuation_tokens
from edgeeval.tasks.suite import load_suite


def _questions(backend: LlamaBackend, limit: int) -> list[tuple[list[int], list[list[int]]]]:
    out = []
    for task in load_suite("mc"):
        for item in task.items(limit=limit, seed=0):
            ctx = backend.tokenize(item.context, add_bos=True)
            out.append(
                (ctx, [continuation_tokens(backend, item.context, c, ctx) for c in item.choices])
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct-q4_k_m")
    parser.add_argument("--limit", type=int, default=10, help="questions per task")
    parser.add_argument("--threads", type=int, default=physical_cores())
    args = parser.parse_args()
    path = fetch(load_catalog().get(args.model)).path
    backend = LlamaBackend(str(path), LoadOptions(n_ctx=2048, n_threads=args.threads))
    questions = _questions(backend, args.limit)
    shared_s = full_s = 0.0
    worst = batch_shape = 0.0
    for ctx, conts in questions:
        start = time.perf_counter()
        shared = backend.choice_logliks(ctx, conts)
        shared_s += time.perf_counter() - start
        start = time.perf_counter()
        full = backend.choice_logliks(ctx, conts, reuse_context=False)
        full_s += time.perf_counter() - start
        worst = max(worst, max(abs(a - b) for a, b in zip(shared, full, strict=True)))
        one = backend.one_batch_logliks(ctx, conts)
        batch_shape = max(batch_shape, max(abs(a - b) for a, b in zip(shared, one, strict=True)))
    backend.close()
    result = {
        "model": args.model,
        "questions": len(questions),
        "threads": args.threads,
        "shared_prefix_s": shared_s,
        "full_prompt_s": full_s,
        "speedup": full_s / shared_s,
        "max_abs_loglik_diff": worst,
        "max_abs_diff_vs_one_batch": batch_shape,
    }
    print(json.dumps(result, indent=2))
    print(
        f"\nshared prefix {shared_s:.2f} s vs full prompt per choice {full_s:.2f} s on "
        f"{len(questions)} questions: {full_s / shared_s:.2f}x faster; largest log-likelihood "
        f"difference {worst:.2e} ({'PASS' if worst <= 1e-4 else 'FAIL'} at 1e-4, "
        f"{'PASS' if full_s / shared_s >= 2 else 'FAIL'} at 2x)"
    )
    return 0 if worst <= 1e-4 and full_s / shared_s >= 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
