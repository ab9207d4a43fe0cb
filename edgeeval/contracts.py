"""What crosses into a child process and back: the spec a parent writes for a child and the
result the child writes for its parent, as frozen dataclasses.

Three children exchange these: the bench worker (edgeeval.run.worker: `WorkerSpec` in,
`WorkerResult` out), a fidelity pass (edgeeval.fidelity.child: `FidelitySpec` in,
`FidelityPassResult` out for the reference pass) and the quantizer (edgeeval.quant.build:
`QuantizeSpec` in, `QuantizeResult` out). Both sides are the same code version, so they are
read strictly: a missing or misspelled key is a ValueError naming it, never a silent None.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

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
