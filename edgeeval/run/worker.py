"""The child process that measures one model: `python -m edgeeval.run.worker SPEC.json OUT.json`.

Running each model in its own process means a crash, an out-of-memory kill or a hang of one
model cannot take the run down, and the parent can sample this process's memory from outside.
Progress goes to stdout as JSON lines ({"event": ...}). SPEC.json is a WorkerSpec; OUT.json a
WorkerResult. When a phase fails, OUT.json still holds everything measured before it, with the
error, and the exit code is 1 (the error also goes to stderr).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgeeval import contracts as ct
from edgeeval import records as rec
from edgeeval.engine.backend import Backend, LlamaBackend
from edgeeval.engine.batch import resolve_eval_batch
from edgeeval.engine.process import die_with_parent, emit
from edgeeval.gguf.check import check_gguf, kv_cache_bytes
from edgeeval.gguf.kvcache import kv_for_run
from edgeeval.run.accuracy import Chunk, score_tasks, select_run_tasks
from edgeeval.run.speed import (
    SweepPoint,
    expand_sweep,
    load_options,
    run_speed_test,
    run_ttft,
    speed_tests_for,
)
from edgeeval.tasks.suite import Task


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


def run_speed_point(
    backend: Backend, settings: rec.RunSettings, point: SweepPoint
) -> list[rec.SpeedResult]:
    """Every speed test at one sweep point (the model is already loaded with its options)."""
    backend.set_threads(point.n_threads)
    options = load_options(settings, point)
    results = []
    for test in speed_tests_for(settings, point.n_depth):
        emit("speed", test=test.name, threads=point.n_threads)
        results.append(
            run_speed_test(
                backend,
                test,
                repetitions=settings.repetitions,
                seed=settings.seed,
                n_threads=options.n_threads,
                n_batch=options.n_batch,
                n_ubatch=options.n_ubatch,
                n_gpu_layers=options.n_gpu_layers,
                flash_attn=options.flash_attn,
            )
        )
    return results


@dataclass
class _Measured:
    """What the worker has measured so far; each phase adds to it, so a failing phase leaves
    what came before it intact."""

    phase: str = ct.PHASE_CHECK
    backend: LlamaBackend | None = None
    result: ct.WorkerResult = field(default_factory=ct.WorkerResult)
    metadata: dict[str, object] = field(default_factory=dict)  # the GGUF header's key/values

    def add(self, **changes: object) -> None:
        self.result = replace(self.result, **changes)  # type: ignore[arg-type]

    def extend(self, name: str, values: list) -> None:
        self.add(**{name: getattr(self.result, name) + tuple(values)})


def measure(spec: ct.WorkerSpec) -> ct.WorkerResult:
    """Check, load, time and score one model as the spec says; the WorkerResult carries the
    error and the phase it happened in when one failed, and everything measured before it.

    The first sweep point is the primary configuration: its load time is reported and the
    tasks run on it. Other points reuse the loaded model when only threads or depth change.
    """
    got = _Measured()
    try:
        settings = spec.settings
        tasks = _check(spec, got)
        points = expand_sweep(settings, cores_physical=spec.cores_physical)
        got.phase = ct.PHASE_LOAD
        _load(spec.model_path, settings, points[0], got)
        got.phase = ct.PHASE_SPEED
        _speed(spec.model_path, settings, points, got)
        got.phase = ct.PHASE_TASKS
        _tasks(spec, tasks, points[0], got)
    except Exception as exc:  # the parent records this with what was measured before it
        got.add(error=f"{got.phase}: {type(exc).__name__}: {exc}", failed_phase=got.phase)
    finally:
        if got.backend is not None:
            got.backend.close()
    return got.result


def _check(spec: ct.WorkerSpec, got: _Measured) -> list[Task]:
    """Refuse a malformed file before native code parses it; read the header's facts and the
    suite's tasks (their errors come before any model is loaded)."""
    summary = check_gguf(spec.model_path)
    got.metadata = summary.metadata
    got.add(
        weights_bytes=summary.data_bytes,
        kv_cache_bytes=kv_cache_bytes(summary, spec.settings.n_ctx),
    )
    return select_run_tasks(spec.settings, root=Path(spec.root))


def _load(path: str, settings: rec.RunSettings, point: SweepPoint, got: _Measured) -> None:
    """Load the model for `point` (closing the one loaded before); the first load's time and
    the model's own facts are recorded."""
    first = got.backend is None
    if got.backend is not None:
        got.backend.close()
        got.backend = None
    options = load_options(settings, point)
    emit("loading", config=list(options.load_key))
    start = time.perf_counter()
    got.backend = LlamaBackend(path, options)
    if first:
        load_s = time.perf_counter() - start
        facts = got.backend.model_facts()
        got.add(load_s=load_s, n_ctx_train=facts.n_ctx_train, n_params=facts.n_params)
        kv = kv_for_run(  # the KV cache at standard context lengths, as llama.cpp sizes it
            got.metadata,
            n_ctx=settings.n_ctx,
            n_ctx_train=facts.n_ctx_train,
            n_batch=options.n_batch,
            n_ubatch=options.n_ubatch,
            flash_attn=options.flash_attn,
        )
        got.add(kv_cache=kv)
        emit("loaded", load_s=load_s)


def _speed(path: str, settings: rec.RunSettings, points: list[SweepPoint], got: _Measured) -> None:
    """Every sweep point's speed tests, reloading only when the load options change; the
    time to first token on the primary point."""
    for point in points:
        assert got.backend is not None
        if load_options(settings, point).load_key != got.backend.options.load_key:
            _load(path, settings, point, got)
        got.extend("speed", run_speed_point(got.backend, settings, point))
        if point == points[0] and settings.ttft:
            emit("speed", test="ttft")
            prompt = ttft_prompt(got.backend, settings.pp_tokens)
            got.extend("ttft", [run_ttft(got.backend, prompt, repetitions=settings.repetitions)])


def _tasks(spec: ct.WorkerSpec, tasks: list[Task], primary: SweepPoint, got: _Measured) -> None:
    """Score every task on the primary configuration (reloaded if the sweep moved away), with
    `eval_batch` sequences per decode (a second llama.cpp context, engine/batch.py), through
    the one accuracy path (run.accuracy.score_tasks). Each chunk's items and each finished
    task score are kept as they come, so a failing task leaves the ones before it."""
    settings = spec.settings
    assert got.backend is not None
    if tasks and load_options(settings, primary).load_key != got.backend.options.load_key:
        _load(spec.model_path, settings, primary, got)
    n_seq = resolve_eval_batch(settings.eval_batch, primary.n_gpu_layers)
    emit("accuracy", eval_batch=n_seq)  # the parent's speed-phase memory peak ends here
    got.add(eval_batch=n_seq)

    def on_items(task: str, chunk: Chunk, samples: list, generated: list) -> None:
        got.extend("samples", samples)
        got.extend("gen_samples", generated)

    score_tasks(
        got.backend,
        tasks,
        settings,
        model_kind=spec.model_kind,
        reasoning=spec.model_reasoning,
        eval_batch=n_seq,
        n_threads=primary.n_threads,
        on_items=on_items,
        on_score=lambda score: got.extend("tasks", [score]),
        on_task=lambda name, index, total: emit("task", task=name, index=index, total=total),
    )


def main(argv: list[str]) -> int:
    """Measure as SPEC says and write OUT; 0 when every phase finished, 1 otherwise."""
    spec_path, out_path = argv
    try:
        spec = ct.read_contract(ct.WorkerSpec, spec_path)
    except (OSError, ValueError) as exc:
        print(f"edgeeval worker: bad spec {spec_path}: {exc}", file=sys.stderr, flush=True)
        return 1
    result = measure(spec)
    ct.write_contract(out_path, result)
    if result.error:
        print(f"edgeeval worker: {result.error}", file=sys.stderr, flush=True)
        return 1
    emit("done")
    return 0


if __name__ == "__main__":
    die_with_parent()  # a bench killed mid-run leaves no worker computing
    raise SystemExit(main(sys.argv[1:]))
