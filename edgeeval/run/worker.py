"""The child process that measures one model: `python -m edgeeval.run.worker SPEC.json OUT.json`.

Running each model in its own process means a crash, an out-of-memory kill or a hang of one
model cannot take the run down, and the parent can sample this process's memory from outside.
Progress goes to stdout as JSON lines (engine.process.Event). SPEC.json is a WorkerSpec; OUT.json
a WorkerResult. Each finished measurement (the header's facts, the load, each speed test, the
TTFT, each chunk of a task's items, each finished task) is also appended to the spec's journal
the moment it is made (contracts.JournalLine, flushed at once), so whatever stops this process,
the parent rebuilds from the journal everything it finished. When a phase fails, OUT.json still
holds everything measured before it, with the error, and the exit code is 1 (the error also
goes to stderr). With `spec.prior` (--resume) only what the earlier attempt left is measured.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from edgeeval import contracts as ct
from edgeeval import records as rec
from edgeeval.engine.backend import Backend, LlamaBackend, count_decodes
from edgeeval.engine.batch import resolve_eval_batch
from edgeeval.engine.process import Event, emit
from edgeeval.errors import EdgeevalError
from edgeeval.gguf.check import check_gguf, kv_cache_bytes
from edgeeval.gguf.kvcache import kv_for_run, kv_options
from edgeeval.orphans import die_with_parent
from edgeeval.run.accuracy import (
    Chunk,
    plan_key,
    row_key,
    score_tasks,
    select_run_tasks,
    task_score_from_items,
)
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
    backend: Backend,
    settings: rec.RunSettings,
    point: SweepPoint,
    on_result: Callable[[rec.SpeedResult], None] = lambda r: None,
) -> list[rec.SpeedResult]:
    """Every speed test at one sweep point (the model is already loaded with its options);
    `on_result` gets each test's result as it finishes."""
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
        on_result(results[-1])
    return results


@dataclass
class _Measured:
    """The worker's journal: what it has measured so far, each finished measurement added
    once, both here and as one line (contracts.JournalLine) appended to the journal file and
    flushed, so a failing phase, a limit or a kill leaves everything added before it."""

    phase: str = ct.PHASE_CHECK
    backend: LlamaBackend | None = None
    result: ct.WorkerResult = field(default_factory=ct.WorkerResult)
    metadata: dict[str, object] = field(default_factory=dict)  # the GGUF header's key/values
    journal: IO[str] | None = None

    def add(
        self,
        kind: str,
        *,
        task: str = "",
        planned: int = 0,
        chunk: rec.TaskScore | None = None,
        **adds: object,
    ) -> None:
        """Add one finished measurement of `kind` (contracts.J_*): `adds` are WorkerResult
        fields, tuples appended and scalars set."""
        line = ct.JournalLine(kind, ct.WorkerResult(**adds), task, planned, chunk)  # type: ignore[arg-type]
        self.result = ct.merge_result(self.result, line.adds)
        if self.journal is not None:
            ct.write_journal_line(self.journal, line)


def measure(spec: ct.WorkerSpec) -> ct.WorkerResult:
    """Check, load, time and score one model as the spec says; the WorkerResult carries the
    error and the phase it happened in when one failed, and everything measured before it.

    The first sweep point is the primary configuration: its load time is reported and the
    tasks run on it. Other points reuse the loaded model when only threads or depth change.
    """
    prior = spec.prior
    got = _Measured(result=prior.result if prior is not None else ct.WorkerResult())
    try:
        if spec.journal:  # appended to: a resumed attempt's kept lines are in it already
            got.journal = open(spec.journal, "a", encoding="utf-8")  # noqa: SIM115
        settings = spec.settings
        tasks = _check(spec, got)
        points = expand_sweep(settings, cores_physical=spec.cores_physical)
        speed_done = prior is not None and prior.speed_done
        got.phase = ct.PHASE_LOAD
        _load(spec.model_path, settings, points[0], got, record=not speed_done)
        got.phase = ct.PHASE_SPEED
        if not speed_done:
            _speed(spec.model_path, settings, points, got)
        got.phase = ct.PHASE_TASKS
        _tasks(spec, tasks, points[0], got)
    except Exception as exc:  # the parent records this with what was measured before it
        error = f"{got.phase}: {type(exc).__name__}: {exc}"
        got.add(ct.J_ERROR, error=error, failed_phase=got.phase)
    finally:
        if got.backend is not None:
            got.backend.close()
        if got.journal is not None:
            got.journal.close()
    return got.result


def _check(spec: ct.WorkerSpec, got: _Measured) -> list[Task]:
    """Refuse a malformed file before native code parses it; read the header's facts and the
    suite's tasks (their errors come before any model is loaded)."""
    summary = check_gguf(spec.model_path)
    got.metadata = summary.metadata
    got.add(
        ct.J_CHECK,
        weights_bytes=summary.data_bytes,
        kv_cache_bytes=kv_cache_bytes(summary, spec.settings.n_ctx, **kv_options(spec.settings)),
    )
    return select_run_tasks(spec.settings, root=Path(spec.root))


def _load(
    path: str,
    settings: rec.RunSettings,
    point: SweepPoint,
    got: _Measured,
    *,
    record: bool = True,
    scoring: bool = False,
) -> None:
    """Load the model for `point` (closing the one loaded before); the first load's time and
    the model's own facts are recorded (unless not `record`: a resumed attempt keeps the
    earlier one's)."""
    fresh = got.backend is None  # this attempt's first load: the parent's load-time RSS
    first = fresh and record
    if got.backend is not None:
        got.backend.close()
        got.backend = None
    options = load_options(settings, point, scoring=scoring)
    emit("loading", detail=" ".join(str(v) for v in options.load_key))
    start = time.perf_counter()
    got.backend = LlamaBackend(path, options)
    if first:
        load_s = time.perf_counter() - start
        facts = got.backend.model_facts()
        kv = kv_for_run(  # the KV cache at standard context lengths, as llama.cpp sizes it
            got.metadata,
            n_ctx=settings.n_ctx,
            n_ctx_train=facts.n_ctx_train,
            n_batch=options.n_batch,
            n_ubatch=options.n_ubatch,
            flash_attn=options.flash_attn,
            cache_type_k=options.type_k,
            cache_type_v=options.type_v,
            swa_full=options.swa_full,
        )
        got.add(
            ct.J_LOAD,
            load_s=load_s,
            n_ctx_train=facts.n_ctx_train,
            n_params=facts.n_params,
            kv_cache=kv,
        )
    if fresh:
        emit("loaded", seconds=time.perf_counter() - start)


def _speed(path: str, settings: rec.RunSettings, points: list[SweepPoint], got: _Measured) -> None:
    """Every sweep point's speed tests, reloading only when the load options change; the
    time to first token on the primary point."""
    for point in points:
        assert got.backend is not None
        if load_options(settings, point).load_key != got.backend.options.load_key:
            _load(path, settings, point, got)
        run_speed_point(
            got.backend, settings, point, on_result=lambda r: got.add(ct.J_SPEED, speed=(r,))
        )
        if point == points[0] and settings.ttft:
            emit("speed", test="ttft")
            prompt = ttft_prompt(got.backend, settings.pp_tokens)
            ttft = run_ttft(got.backend, prompt, repetitions=settings.repetitions)
            got.add(ct.J_TTFT, ttft=(ttft,))
    got.add(ct.J_SPEED_DONE)


def _tasks(spec: ct.WorkerSpec, tasks: list[Task], primary: SweepPoint, got: _Measured) -> None:
    """Score every task on the primary configuration (reloaded if the sweep moved away), with
    `eval_batch` sequences per decode (a second llama.cpp context, engine/batch.py), through
    the one accuracy path (run.accuracy.score_tasks). Each chunk's items and each finished
    task score are kept as they come, so a failing task leaves the ones before it."""
    settings = spec.settings
    assert got.backend is not None
    n_seq = resolve_eval_batch(settings.eval_batch, primary.n_gpu_layers)
    emit("accuracy", eval_batch=n_seq)  # the parent's speed-phase memory peak ends here
    scoring = load_options(settings, primary, scoring=True)  # a full-size SWA cache
    if tasks and scoring.load_key != got.backend.options.load_key:  # after the speed peak
        _load(spec.model_path, settings, primary, got, scoring=True)
    got.add(ct.J_ACCURACY, eval_batch=n_seq)
    items = _ItemJournal(settings, tasks, got, spec.prior)
    score_tasks(
        got.backend,
        tasks,
        settings,
        model_kind=spec.model_kind,
        reasoning=spec.model_reasoning,
        eval_batch=n_seq,
        n_threads=primary.n_threads,
        skip_ids=items.skip_ids,
        only_ids=spec.only_ids,
        on_items=items.on_items,
        on_score=items.on_score,
        on_task=items.on_task,
        on_progress=items.on_progress,
    )
    items.finish_left()


#: the least time between two `scoring` events (a multiple-choice task finishes
#: a group of questions many times a second; the display redraws once a second)
SCORING_EVERY_S = 1.0


class _ItemJournal:
    """The accuracy phase's side of the journal: each chunk of items and each task's score
    as they come, an items event per chunk (items done of planned, and this attempt's rate)
    for the parent's estimate and stall watch; on --resume, the items the earlier attempt
    scored are skipped and scored with the new ones into the task's score.

    Between chunks, a `scoring` event (the same fields) at most every SCORING_EVERY_S as the
    chunk's items are done (each generated answer, each group of questions), so a chunk that
    takes minutes still moves the display; those are progress only: the journal and --resume
    stay per chunk."""

    def __init__(
        self, settings: rec.RunSettings, tasks: list[Task], got: _Measured, prior: ct.Prior | None
    ) -> None:
        self.settings, self.got = settings, got
        self.tasks = {t.name: t for t in tasks}
        self.planned: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.fresh: dict[str, int] = {}
        self.last_scoring = float("-inf")
        earlier = prior.result if prior is not None else ct.WorkerResult()
        self.finished = {plan_key(t.task, t.thinking) for t in earlier.tasks}
        self.open = {plan_key(c.task, c.thinking): c for c in (prior.open_chunks if prior else ())}
        skip: dict[str, set[str]] = {}
        rows: list[rec.SampleResult | rec.GenSampleResult] = [
            *earlier.samples,
            *earlier.gen_samples,
        ]
        for row in rows:
            skip.setdefault(row_key(row), set()).add(row.item_id)
        self.skip_ids = {key: frozenset(ids) for key, ids in skip.items()}

    def _rows(self, key: str) -> tuple[list[rec.SampleResult], list[rec.GenSampleResult]]:
        r = self.got.result
        return (
            [s for s in r.samples if row_key(s) == key],
            [g for g in r.gen_samples if row_key(g) == key],
        )

    def on_task(self, name: str, index: int, total: int) -> None:
        """Announce task `index` of `total` with the items it plans, so progress can show
        "0/164 items" before the first chunk is scored. A task whose items cannot be read
        here is announced with 0 planned: scoring it raises the real error."""
        try:
            planned = self.planned_of(name)
        except (EdgeevalError, OSError, ValueError):
            planned = 0
        emit("task", task=name, index=index, total=total, planned=planned)

    def planned_of(self, name: str) -> int:
        if name not in self.planned:
            s = self.settings
            self.planned[name] = len(
                self.tasks[name].items(limit=s.task_limit, seed=s.seed, sample=s.task_sample)
            )
        return self.planned[name]

    def on_items(
        self,
        task: str,
        chunk: Chunk,
        samples: list[rec.SampleResult],
        generated: list[rec.GenSampleResult],
    ) -> None:
        key, planned = chunk.key, self.planned_of(task)
        self.started.setdefault(key, time.monotonic() - chunk.score.elapsed_s)
        self.got.add(
            ct.J_ITEMS,
            task=key,
            planned=planned,
            chunk=chunk.score,
            samples=tuple(samples),
            gen_samples=tuple(generated),
        )
        self.fresh[key] = self.fresh.get(key, 0) + len(samples) + len(generated)
        done = sum(len(rows) for rows in self._rows(key))
        emit(
            Event(
                "items",
                task=key,
                done=done,
                planned=planned,
                fresh=self.fresh[key],
                seconds=time.monotonic() - self.started[key],
            )
        )

    def on_progress(self, key: str, n: int, seconds: float) -> None:
        """`n` items of the chunk of `key` being scored are done, `seconds` after it began: a
        `scoring` event unless one was sent less than SCORING_EVERY_S ago."""
        now = time.monotonic()
        if now - self.last_scoring < SCORING_EVERY_S:
            return
        self.last_scoring = now
        task = key.partition("@")[0]
        started = self.started.get(key)
        emit(
            Event(
                "scoring",
                task=key,
                done=sum(len(rows) for rows in self._rows(key)) + n,
                planned=self.planned_of(task),
                fresh=self.fresh.get(key, 0) + n,
                seconds=seconds if started is None else now - started,
            )
        )

    def on_score(self, score: rec.TaskScore) -> None:
        key = plan_key(score.task, score.thinking)
        if key in self.finished:  # scored by the earlier attempt (a skipped task, again)
            return
        earlier = self.open.pop(key, None)
        if earlier is not None:  # the earlier attempt's items and this one's, as one task
            samples, generated = self._rows(key)
            elapsed = earlier.elapsed_s + score.elapsed_s
            score = task_score_from_items(score, samples, generated, elapsed_s=elapsed)
        self.got.add(ct.J_TASK, task=key, tasks=(score,))
        if score.status == rec.STATUS_OK and score.reason:  # a scored task's note: how its
            emit("warning", task=key, detail=score.reason)  # asking differed from the settings

    def finish_left(self) -> None:
        """Score the tasks whose every item the earlier attempt scored but that it did not
        live to finish (this attempt had nothing left to score in them)."""
        for key, like in list(self.open.items()):
            samples, generated = self._rows(key)
            if samples or generated:
                score = task_score_from_items(like, samples, generated)
                self.got.add(ct.J_TASK, task=key, tasks=(score,))
            del self.open[key]


class DecodeBeat:
    """Progress between the journal's events: a daemon thread that sends Event("working")
    every `every_s` seconds when llama.cpp finished at least one decode since the last one.

    A chunk of items can take minutes on a big model (HumanEval-164 on 2 cores: 8 s an item),
    longer than the stall limit, while every decode is progress. A decode that never returns,
    or a worker stuck anywhere else, sends nothing, and the parent's stall limit fires."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._stop = threading.Event()

    def start(self) -> DecodeBeat:
        decodes = count_decodes()
        threading.Thread(
            target=self._run, args=(decodes,), name="edgeeval-decode-beat", daemon=True
        ).start()
        return self

    def _run(self, decodes: Callable[[], int]) -> None:
        seen = decodes()
        while not self._stop.wait(self.every_s):
            if decodes() != seen:
                seen = decodes()
                emit("working", done=seen)

    def stop(self) -> None:
        self._stop.set()


def main(argv: list[str]) -> int:
    """Measure as SPEC says and write OUT; 0 when every phase finished, 1 otherwise."""
    spec_path, out_path = argv
    try:
        spec = ct.read_contract(ct.WorkerSpec, spec_path)
    except (OSError, ValueError) as exc:
        print(f"edgeeval worker: bad spec {spec_path}: {exc}", file=sys.stderr, flush=True)
        return 1
    # a beat well inside the stall limit, so one late beat never looks like a stall
    beat = DecodeBeat(min(30.0, spec.settings.stall_timeout_s / 4)).start()
    try:
        result = measure(spec)
    finally:
        beat.stop()
    ct.write_contract(out_path, result)
    if result.error:
        print(f"edgeeval worker: {result.error}", file=sys.stderr, flush=True)
        return 1
    emit("done")
    return 0


if __name__ == "__main__":
    die_with_parent()  # a bench killed mid-run leaves no worker computing
    raise SystemExit(main(sys.argv[1:]))
