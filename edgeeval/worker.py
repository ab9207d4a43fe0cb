"""The child process that measures one model: `python -m edgeeval.worker SPEC.json OUT.json`.

Running each model in its own process means a crash, an out-of-memory kill or a hang of one
model cannot take the run down, and the parent can sample this process's memory from outside.
Progress goes to stdout as JSON lines ({"event": ...}); the result goes to OUT.json; errors go
to stderr and a non-zero exit code.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval.backend import Backend, LlamaBackend, LoadOptions
from edgeeval.gguf_check import check_gguf, kv_cache_bytes
from edgeeval.measure import SpeedTest, run_speed_test
from edgeeval.metrics import score_samples


def emit(event: str, **fields: Any) -> None:
    """One progress line for the parent."""
    print(json.dumps({"event": event, **fields}), flush=True)


def continuation_tokens(backend: Backend, context: str, choice: str,
                        context_tokens: list[int]) -> list[int]:
    """Tokens of `choice` as they appear after `context` (tokenizing the joined text, so the
    word boundary is tokenized as the model sees it), falling back to the choice alone."""
    whole = backend.tokenize(context + choice, add_bos=True)
    n = len(context_tokens)
    if whole[:n] == context_tokens and len(whole) > n:
        return whole[n:]
    return backend.tokenize(choice, add_bos=False)


def score_task(backend: Backend, task: Any, items: list[Any]) -> tuple[rec.TaskScore,
                                                                       list[rec.SampleResult]]:
    """Score multiple-choice items by log-likelihood; returns the task score and the samples."""
    start = time.perf_counter()
    samples = []
    for item in items:
        ctx = backend.tokenize(item.context, add_bos=True)
        conts = [continuation_tokens(backend, item.context, c, ctx) for c in item.choices]
        logliks = backend.choice_logliks(ctx, conts)
        samples.append(rec.SampleResult(task=task.name, item_id=item.id, gold=item.gold,
                                        logliks=tuple(logliks),
                                        choice_chars=tuple(len(c.encode()) for c in item.choices)))
    score = score_samples(samples, task=task.name, version=task.version, category=task.category,
                          chance=task.chance, elapsed_s=time.perf_counter() - start)
    return score, samples


def speed_tests(settings: rec.RunSettings) -> list[SpeedTest]:
    return [SpeedTest(n_prompt=settings.pp_tokens, n_gen=0),
            SpeedTest(n_prompt=0, n_gen=settings.tg_tokens)]


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Load, time and score one model as the spec says; return the result mapping."""
    from edgeeval.tasks import load_suite

    settings = rec.from_dict(rec.RunSettings, spec["settings"])
    path = spec["model_path"]
    summary = check_gguf(path)  # refuse malformed files before native code parses them
    tasks = load_suite(settings.suite, Path(spec["root"])) if settings.suite else []
    options = LoadOptions(n_ctx=settings.n_ctx, n_threads=spec["n_threads"],
                          n_batch=settings.n_batch, n_ubatch=settings.n_ubatch,
                          n_gpu_layers=settings.n_gpu_layers, flash_attn=settings.flash_attn,
                          use_mmap=settings.use_mmap, seed=settings.seed)
    emit("loading")
    start = time.perf_counter()
    backend = LlamaBackend(path, options)
    load_s = time.perf_counter() - start
    emit("loaded", load_s=load_s)
    speed = []
    for test in speed_tests(settings):
        emit("speed", test=test.name)
        speed.append(run_speed_test(backend, test, repetitions=settings.repetitions,
                                    seed=settings.seed))
    scores, samples = [], []
    for index, task in enumerate(tasks, 1):
        emit("task", task=task.name, index=index, total=len(tasks))
        score, task_samples = score_task(backend, task, task.items(limit=settings.task_limit,
                                                                  seed=settings.seed))
        scores.append(score)
        samples.extend(task_samples)
    facts = backend.model_facts()
    backend.close()
    return {"load_s": load_s, "speed": [rec.to_dict(s) for s in speed],
            "tasks": [rec.to_dict(s) for s in scores], "samples": [rec.to_dict(s) for s in samples],
            "n_ctx_train": facts["n_ctx_train"], "n_params": facts["n_params"],
            "kv_cache_bytes": kv_cache_bytes(summary, settings.n_ctx)}


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = measure(spec)
    except Exception as exc:  # the parent records this as the model's failure reason
        print(f"edgeeval worker: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    tmp = Path(out_path + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out_path)
    emit("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
