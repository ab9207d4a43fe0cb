"""What crosses into a child process and back: the spec a parent writes for a child and the
result the child writes for its parent, as frozen dataclasses.

Three children exchange these: the bench worker (edgeeval.run.worker: `WorkerSpec` in,
`WorkerResult` out, and as it goes one `JournalLine` per finished measurement in the journal
file the spec names), a fidelity pass (edgeeval.fidelity.child: `FidelitySpec` in,
`FidelityPassResult` out for the reference pass) and the quantizer (edgeeval.quant.build:
`QuantizeSpec` in, `QuantizeResult` out). Both sides are the same code version, so they are
read strictly: a missing or misspelled key is a ValueError naming it, never a silent None.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from edgeeval.records import (
    GenSampleResult,
    KvCacheLayout,
    LatencyResult,
    RunSettings,
    SampleResult,
    SpeedResult,
    TaskScore,
    from_dict,
    to_json,
)

C = TypeVar("C")

# The phases of the bench worker, in order; a WorkerResult names the one that failed.
PHASE_CHECK, PHASE_LOAD, PHASE_SPEED, PHASE_TASKS = "check", "load", "speed", "tasks"


@dataclass(frozen=True)
class WorkerSpec:
    """What the bench worker measures: one model file with the run's settings.

    `root` holds benchmarks/ (the task suite); `cores_physical` is what threads 0 means on
    this host; `model_kind` is the catalog's kind ("base" models get completion prompts).
    `model_reasoning` is the catalog's flag (templates with <think> are detected as well).
    """

    model_path: str
    root: str
    settings: RunSettings
    cores_physical: int
    model_kind: str = ""
    model_reasoning: bool = False
    journal: str = ""  # append a JournalLine here per finished measurement ("" = none)
    # --resume: what an earlier attempt measured and keeps (Journal.prior). With
    # `prior.speed_done` the speed phase is not run again; its finished tasks are not scored
    # again; the items in its samples/gen_samples are skipped (the worker's skip_ids) and
    # scored together with the new ones into the task's score.
    prior: Prior | None = None
    # a race's round (edgeeval.race): score only these items (task name or plan key -> item
    # ids; a task it does not name scores nothing); None = every item the settings select
    only_ids: dict[str, tuple[str, ...]] | None = None


@dataclass(frozen=True)
class WorkerResult:
    """What the worker measured. When a phase fails, `error` says why and `failed_phase`
    which one; everything measured before it is kept (a speed measured before a task that
    raised is not thrown away)."""

    load_s: float | None = None
    speed: tuple[SpeedResult, ...] = ()
    ttft: tuple[LatencyResult, ...] = ()
    tasks: tuple[TaskScore, ...] = ()
    samples: tuple[SampleResult, ...] = ()
    gen_samples: tuple[GenSampleResult, ...] = ()
    n_ctx_train: int | None = None
    n_params: int | None = None
    weights_bytes: int | None = None  # tensor data in the GGUF
    kv_cache_bytes: int | None = None  # at the run's n_ctx, from the header
    kv_cache: KvCacheLayout | None = None  # per context length, as the architecture uses it
    eval_batch: int = 1  # sequences per decode in the accuracy phase
    error: str = ""
    failed_phase: str = ""


# The kinds of journal line, in the order a worker writes them: the header's facts, the load,
# each speed test, the time to first token, the end of the speed phase, the start of the
# accuracy phase, each chunk of scored items, each finished task (one per plan), an error.
J_CHECK, J_LOAD, J_SPEED, J_TTFT, J_SPEED_DONE = "check", "load", "speed", "ttft", "speed_done"
J_ACCURACY, J_ITEMS, J_TASK, J_ERROR = "accuracy", "items", "task", "error"
JOURNAL_KINDS: tuple[str, ...] = (J_CHECK, J_LOAD, J_SPEED, J_TTFT, J_SPEED_DONE, J_ACCURACY)
JOURNAL_KINDS += (J_ITEMS, J_TASK, J_ERROR)


@dataclass(frozen=True)
class JournalLine:
    """One finished measurement, as the worker appends it to its journal the moment it has
    it: `adds` holds what it adds to the WorkerResult (tuples are appended to, scalars that are
    set replace). Items lines name their `task` and its `planned` items."""

    kind: str
    adds: WorkerResult = field(default_factory=WorkerResult)
    task: str = ""  # items, task: the plan's key (run.accuracy.plan_key)
    planned: int = 0  # items: the items the task plans (the chunk's own are in adds)
    chunk: TaskScore | None = None  # items: the chunk's own score (a task's plan-level fields)

    def __post_init__(self) -> None:
        if self.kind not in JOURNAL_KINDS:
            raise ValueError(f"journal line kind must be one of {JOURNAL_KINDS}: {self.kind!r}")


def merge_result(result: WorkerResult, adds: WorkerResult) -> WorkerResult:
    """`result` with `adds` folded in: tuples appended, scalars that `adds` sets replace."""
    changes: dict[str, object] = {}
    for f in dataclasses.fields(WorkerResult):
        new = getattr(adds, f.name)
        if isinstance(new, tuple):
            if new:
                changes[f.name] = getattr(result, f.name) + new
        elif new != f.default:
            changes[f.name] = new
    return dataclasses.replace(result, **changes) if changes else result  # type: ignore[arg-type]


@dataclass(frozen=True)
class Prior:
    """What an earlier, unfinished attempt at a variant measured and --resume keeps."""

    result: WorkerResult
    speed_done: bool  # load, speed tests and TTFT all finished
    # the last chunk score of each task begun but not finished, by plan key (that task's
    # plan-level fields, to score its items with)
    open_chunks: tuple[TaskScore, ...] = ()


@dataclass(frozen=True)
class Journal:
    """A journal read back: every line folded into one WorkerResult, and where it stopped."""

    lines: tuple[JournalLine, ...]
    result: WorkerResult
    speed_done: bool
    # plan key -> (items scored, items planned, last chunk score with the task's time so far)
    # of the tasks begun and not finished
    open_tasks: dict[str, tuple[int, int, TaskScore | None]]
    skipped: int = 0  # unreadable lines (the last one, torn by a kill mid-write)

    def kept_lines(self, speed: bool = True) -> tuple[JournalLine, ...]:
        """The lines a resumed attempt keeps: finished tasks, the items of unfinished ones and
        the header's facts, never an error; and, with `speed` and a finished speed phase, the
        load, speed and TTFT lines (a speed phase is measured whole, never in parts)."""
        dropped = {J_ERROR}
        if not (speed and self.speed_done):
            dropped |= {J_LOAD, J_SPEED, J_TTFT, J_SPEED_DONE}
        return tuple(line for line in self.lines if line.kind not in dropped)

    def prior(self, speed: bool = True) -> Prior:
        """The Prior of the kept lines, for WorkerSpec.prior."""
        kept = fold_journal(self.kept_lines(speed))
        chunks = tuple(c for _, _, c in kept.open_tasks.values() if c is not None)
        return Prior(kept.result, kept.speed_done, chunks)


def fold_journal(lines: list[JournalLine] | tuple[JournalLine, ...], skipped: int = 0) -> Journal:
    """The Journal of `lines`, in the order written."""
    result = WorkerResult()
    speed_done = False
    open_tasks: dict[str, tuple[int, int, TaskScore | None]] = {}
    for line in lines:
        result = merge_result(result, line.adds)
        if line.kind == J_SPEED_DONE:
            speed_done = True
        elif line.kind == J_ITEMS:
            done, _, like = open_tasks.get(line.task, (0, 0, None))
            n = len(line.adds.samples) + len(line.adds.gen_samples)
            chunk = line.chunk
            if chunk is not None and like is not None:  # the task's time so far
                chunk = dataclasses.replace(chunk, elapsed_s=like.elapsed_s + chunk.elapsed_s)
            open_tasks[line.task] = (done + n, line.planned, chunk)
        elif line.kind == J_TASK:
            open_tasks.pop(line.task, None)
    return Journal(tuple(lines), result, speed_done, open_tasks, skipped)


def write_journal_line(fh: IO[str], line: JournalLine) -> None:
    """Append `line` to an open journal and flush it to the kernel (so a SIGKILL of the
    writer loses nothing written) and to the disk (so a power cut loses little)."""
    fh.write(to_json(line) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def read_journal(path: str | Path) -> Journal:
    """The journal at `path` (empty when there is none). A line that does not parse (the
    last one, torn by a kill mid-write) is skipped and counted; so is any after it.

    Read leniently, as stored records are (unlike the spec and result, which one code version
    writes and reads): --resume may run a later edgeeval than the attempt that wrote the
    journal, and a field added since takes its default instead of dropping the line."""
    lines: list[JournalLine] = []
    skipped = 0
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raw = b""
    for text in raw.split(b"\n"):
        if not text.strip():
            continue
        if skipped:  # nothing after a torn line is trusted: it would skip a measurement
            skipped += 1
            continue
        try:
            lines.append(from_dict(JournalLine, json.loads(text.decode("utf-8"))))
        except (ValueError, UnicodeDecodeError, TypeError, KeyError):
            skipped += 1
    return fold_journal(lines, skipped)


@dataclass(frozen=True)
class FidelitySpec:
    """One fidelity pass: `role` "reference" (writes tokens, meta and log-probabilities into
    `work`) or "variant" (reads them, writes its token statistics to `out`, an .npz)."""

    role: str
    model: str
    work: str
    n_ctx: int
    max_chunks: int
    n_threads: int
    n_gpu_layers: int
    out: str = ""
    # the context knobs the model is loaded with (the reference pass: always these defaults)
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: bool | str = False
    swa_full: bool = True

    def __post_init__(self) -> None:
        if self.role not in ("reference", "variant"):
            raise ValueError(f"fidelity pass role must be reference or variant: {self.role!r}")
        if self.role == "variant" and not self.out:
            raise ValueError("a variant fidelity pass needs `out`")


@dataclass(frozen=True)
class FidelityPassResult:
    """What the reference pass found (kept as meta.json beside its chunks)."""

    n_vocab: int
    n_chunks: int
    n_corpus_tokens: int


@dataclass(frozen=True)
class QuantizeSpec:
    """One llama_model_quantize call: type ids are llama.cpp's (LLAMA_FTYPE_*, GGML_TYPE_*);
    `tensor_overrides` are (regex, GGML type id) pairs, first match wins."""

    src: str
    dst: str
    ftype: int
    tensor_overrides: tuple[tuple[str, int], ...]
    output_tensor_type: int | None
    token_embedding_type: int | None
    pure: bool
    nthread: int


@dataclass(frozen=True)
class QuantizeResult:
    """llama.cpp's log of a finished build, or the error lines of a failed one."""

    log: str = ""
    error: str = ""


def write_contract(path: str | Path, value: object) -> None:
    """Write `value` as JSON to `path` atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_json(value), encoding="utf-8")
    os.replace(tmp, path)


def read_contract(cls: type[C], path: str | Path) -> C:
    """The `cls` written at `path` by `write_contract`; ValueError for any key it does not
    expect or lacks (both sides are the same code, so a difference is a bug)."""
    return from_dict(cls, json.loads(Path(path).read_text(encoding="utf-8")), strict=True)
