"""The child process that measures one model: `python -m edgeeval.run.worker SPEC.json OUT.json`.

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
from typing import Any, Protocol

from edgeeval import records as rec
from edgeeval.engine.backend import Backend, LlamaBackend, LoadOptions
from edgeeval.engine.batch import BatchEngine, BatchGenerator, BatchScorer, resolve_eval_batch
from edgeeval.engine.process import emit
from edgeeval.engine.sandbox import choose as choose_sandbox
from edgeeval.fetch.gguf_check import check_gguf, kv_cache_bytes
from edgeeval.metrics import score_samples
from edgeeval.run.speed import SweepPoint, expand_sweep, run_speed_test, run_ttft, speed_tests_for
from edgeeval.score.generate import (
    CODE_EXEC_OFF,
    score_code_task,
    score_generate_task,
    skipped_score,
)


def continuation_tokens(
    backend: Backend, context: str, choice: str, context_tokens: list[int]
) -> list[int]:
    """Tokens of `choice` as they appear after `context` (tokenizing the joined text, so the
    word boundary is tokenized as the model sees it), falling back to the choice alone."""
    whole = backend.tokenize(context + choice, add_bos=True)
    n = len(context_tokens)
    if whole[:n] == context_tokens and len(whole) > n:
        return whole[n:]
    return backend.tokenize(choice, add_bos=False)


def score_task(
    backend: Backend, task: Any, items: list[Any], batch: BatchScorer | None = None
) -> tuple[rec.TaskScore, list[rec.SampleResult]]:
    """Score multiple-choice items by log-likelihood; returns the task score and the samples.
    With `batch`, several questions share each decode (BatchEngine.choice_logliks_many)."""
    start = time.perf_counter()
    questions = []
    for item in items:
        ctx = backend.tokenize(item.context, add_bos=True)
        questions.append(
            (ctx, [continuation_tokens(backend, item.context, c, ctx) for c in item.choices])
        )
    if batch is not None:
        all_logliks = batch.choice_logliks_many(questions)
    else:
        all_logliks = [backend.choice_logliks(ctx, conts) for ctx, conts in questions]
    samples = []
    for item, logliks in zip(items, all_logliks, strict=True):
        samples.append(
            rec.SampleResult(
                task=task.name,
                item_id=item.id,
                gold=item.gold,
                logliks=tuple(logliks),
                choice_chars=tuple(len(c.encode()) for c in item.choices),
            )
        )
    score = score_samples(
        samples,
        task=task.name,
        version=task.version,
        category=task.category,
        chance=task.chance,
        elapsed_s=time.perf_counter() - start,
    )
    return score, samples


def score_by_kind(
    backend: Backend,
    task: Any,
    settings: rec.RunSettings,
    *,
    model_kind: str = "",
    batch: BatchEngineLike | None = None,
) -> tuple[rec.TaskScore, list[rec.SampleResult], list[rec.GenSampleResult]]:
    """Score one task the way its kind asks: log-likelihood for multiple choice, greedy
    generation for generate, generation plus sandboxed execution for code (only when
    `settings.allow_code_exec`; otherwise recorded as skipped). `batch` (a BatchEngine)
    scores several items per decode."""
    kind = getattr(task, "kind", "multiple_choice")
    if kind == "code" and not settings.allow_code_exec:  # skip before loading any items
        return skipped_score(task, CODE_EXEC_OFF, metric="pass@1"), [], []
    items = task.items(limit=settings.task_limit, seed=settings.seed)
    if kind == "generate":
        score, generated = score_generate_task(
            backend, task, items, model_kind=model_kind, batch=batch
        )
        return score, [], generated
    if kind == "code":
        sandbox = choose_sandbox(unsafe=settings.unsafe_code_exec)
        score, generated = score_code_task(backend, task, items, sandbox=sandbox, batch=batch)
        return score, [], generated
    if kind != "multiple_choice":
        raise ValueError(f"task {task.name}: unknown kind {kind!r}")
    score, samples = score_task(backend, task, items, batch)
    return score, samples, []


class BatchEngineLike(BatchGenerator, BatchScorer, Protocol):
    """What the accuracy phase asks of a batch engine: BatchEngine, or a test's fake."""


def ttft_prompt(backend: Backend, n_tokens: int) -> str:
    """An English text prompt of about `n_tokens` tokens for the time-to-first-token test."""
    sentence = (
        "Local models answer questions on a laptop without sending data anywhere, "
        "and their speed depends on memory bandwidth as much as on arithmetic. "
    )
    text = sentence
    while len(backend.tokenize(text, add_bos=True)) < n_tokens:
        text += sentence
    words = text.split(" ")
    while len(words) > 1 and len(backend.tokenize(" ".join(words), add_bos=True)) > n_tokens:
        words.pop()
    return " ".join(words)


def load_options(settings: rec.RunSettings, point: SweepPoint) -> LoadOptions:
    return LoadOptions(
        n_ctx=settings.n_ctx,
        n_threads=point.n_threads,
        n_batch=point.n_batch,
        n_ubatch=min(settings.n_ubatch, point.n_batch),
        n_gpu_layers=point.n_gpu_layers,
        flash_attn=point.flash_attn,
        use_mmap=settings.use_mmap,
        use_mlock=settings.use_mlock,
        seed=settings.seed,
    )


def _load_key(options: LoadOptions) -> tuple[int, int, bool]:
    return (options.n_gpu_layers, options.n_batch, options.flash_attn)


def run_speed_point(
    backend: Backend, settings: rec.RunSettings, point: SweepPoint
) -> list[rec.SpeedResult]:
    """Every speed test at one sweep point (the model is already loaded with its options)."""
    backend.set_threads(point.n_threads)
    config = {
        "n_threads": point.n_threads,
        "n_batch": point.n_batch,
        "n_ubatch": min(settings.n_ubatch, point.n_batch),
        "n_gpu_layers": point.n_gpu_layers,
        "flash_attn": point.flash_attn,
    }
    results = []
    for test in speed_tests_for(settings, point.n_depth):
        emit("speed", test=test.name, threads=point.n_threads)
        results.append(
            run_speed_test(
                backend, test, repetitions=settings.repetitions, seed=settings.seed, **config
            )
        )
    return results


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Load, time and score one model as the spec says; return the result mapping.

    The first sweep point is the primary configuration: its load time is reported and the
    tasks run on it. Other points reuse the loaded model when only threads or depth change.
    """
    from edgeeval.tasks.suite import load_suite

    settings = rec.from_dict(rec.RunSettings, spec["settings"])
    path = spec["model_path"]
    summary = check_gguf(path)  # refuse malformed files before native code parses them
    tasks = load_suite(settings.suite, Path(spec["root"])) if settings.suite else []
    points = expand_sweep(settings, default_threads=spec["n_threads"])
    primary = points[0]
    emit("loading")
    start = time.perf_counter()
    backend = LlamaBackend(path, load_options(settings, primary))
    load_s = time.perf_counter() - start
    emit("loaded", load_s=load_s)
    speed, ttft = [], []
    for point in points:
        if point.load_key != _load_key(backend.options):
            backend.close()
            emit("loading", config=list(point.load_key))
            backend = LlamaBackend(path, load_options(settings, point))
        speed.extend(run_speed_point(backend, settings, point))
        if point == primary and settings.ttft:
            emit("speed", test="ttft")
            ttft.append(
                run_ttft(
                    backend,
                    ttft_prompt(backend, settings.pp_tokens),
                    repetitions=settings.repetitions,
                )
            )
    if _load_key(backend.options) != primary.load_key:
        backend.close()
        backend = LlamaBackend(path, load_options(settings, primary))
    n_seq = resolve_eval_batch(settings.eval_batch, primary.n_gpu_layers)
    emit("accuracy", eval_batch=n_seq)  # the parent's speed-phase memory peak ends here
    engine = BatchEngine(backend, n_seq) if n_seq > 1 and tasks else None
    scores, samples, gen_samples = [], [], []
    for index, task in enumerate(tasks, 1):
        emit("task", task=task.name, index=index, total=len(tasks))
        backend.set_threads(primary.n_threads)
        if engine is not None:
            engine.set_threads(primary.n_threads)
        score, task_samples, task_gen = score_by_kind(
            backend, task, settings, model_kind=spec.get("model_kind", ""), batch=engine
        )
        scores.append(score)
        samples.extend(task_samples)
        gen_samples.extend(task_gen)
    facts = backend.model_facts()
    if engine is not None:
        engine.close()
    backend.close()
    return {
        "load_s": load_s,
        "speed": [rec.to_dict(s) for s in speed],
        "ttft": [rec.to_dict(t) for t in ttft],
        "tasks": [rec.to_dict(s) for s in scores],
        "samples": [rec.to_dict(s) for s in samples],
        "gen_samples": [rec.to_dict(s) for s in gen_samples],
        "n_ctx_train": facts["n_ctx_train"],
        "n_params": facts["n_params"],
        "weights_bytes": summary.data_bytes,
        "kv_cache_bytes": kv_cache_bytes(summary, settings.n_ctx),
        "eval_batch": n_seq,
    }


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
