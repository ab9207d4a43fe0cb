"""Timing loops on a Backend, llama-bench's way.

What is timed: only the decode calls of each test (plus llama_synchronize), never loading,
tokenization or sampling. Tokens are synthetic (uniform random ids, fixed seed). Before the
repetitions one untimed warmup runs; before each repetition the KV cache is cleared and, for a
depth d > 0, refilled with d tokens outside the timed region. Each result also carries what
llama-bench writes of a test: its start time (UTC), llama_model_desc and the KV cache types.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from edgeeval.engine.backend import Backend, LoadOptions
from edgeeval.engine.energy import NOT_AVAILABLE, Energy, EnergyMeter, Unavailable, default_meter
from edgeeval.errors import ConfigError
from edgeeval.metrics import mean_stddev
from edgeeval.records import (
    LatencyResult,
    RunSettings,
    SpeedResult,
    knob_parts,
    kv_pairs,
    resolve_threads,
    varying_knobs,
)

Clock = Callable[[], int]


@dataclass(frozen=True)
class SpeedTest:
    """pp (n_prompt > 0, n_gen == 0), tg (n_gen > 0) or pp+tg, at KV depth n_depth."""

    n_prompt: int
    n_gen: int
    n_depth: int = 0

    @property
    def name(self) -> str:
        parts = []
        if self.n_prompt:
            parts.append(f"pp{self.n_prompt}")
        if self.n_gen:
            parts.append(f"tg{self.n_gen}")
        name = "+".join(parts)
        return f"{name} @ d{self.n_depth}" if self.n_depth else name


def run_speed_test(
    backend: Backend,
    test: SpeedTest,
    *,
    repetitions: int,
    seed: int = 0,
    clock: Clock = time.perf_counter_ns,
    energy: EnergyMeter | None = None,
    **config: int | bool | str,
) -> SpeedResult:
    """Run one test: warmup, then `repetitions` timed runs; tokens/s per run and their stats.

    `energy` (default: what this machine exposes, engine/energy.py) is read around each timed
    region only, so the depth refill and the warmup are not counted."""
    if repetitions < 1:
        raise ValueError("repetitions must be at least 1")
    facts = backend.describe()
    config = {
        "test_time": utc_stamp(),  # before the warmup, where llama-bench takes it
        "model_type": facts.model_type,
        "type_k": facts.type_k,
        "type_v": facts.type_v,
        **config,
    }
    rng = random.Random(seed)
    _warmup(backend, test, rng)
    meter = energy if energy is not None else default_meter()
    spent: list[Energy | None] = []
    samples_ns: list[int] = []
    for _ in range(repetitions):
        backend.clear()
        if test.n_depth:
            backend.bench_prompt(test.n_depth, rng)
        mark = meter.start()
        start = clock()
        if test.n_prompt:
            backend.bench_prompt(test.n_prompt, rng, first=not test.n_depth)
        if test.n_gen:
            backend.bench_gen(test.n_gen, rng)
        samples_ns.append(max(clock() - start, 1))
        spent.append(meter.stop(mark))
    return _result(test, samples_ns, {**config, **_energy_fields(meter, spent)})


def _energy_fields(meter: EnergyMeter, spent: list[Energy | None]) -> dict[str, object]:
    """SpeedResult's energy fields: joules over every repetition, or why there are none."""
    if isinstance(meter, Unavailable):
        return {"energy_method": meter.reason}
    if not spent or any(e is None for e in spent):
        return {"energy_method": f"{NOT_AVAILABLE} ({meter.method} gave no reading)"}
    return {
        "energy_j": sum(e.joules for e in spent if e),
        "energy_method": meter.method,
        "energy_domains": ", ".join(meter.domains),
    }


def utc_stamp(now: datetime | None = None) -> str:
    """llama-bench's test_time: RFC 3339 UTC to the second.

    >>> utc_stamp(datetime(2026, 12, 6, 11, 2, 3, 500, tzinfo=timezone.utc))
    '2026-12-06T11:02:03Z'
    """
    return (
        (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    )


def _warmup(backend: Backend, test: SpeedTest, rng: random.Random) -> None:
    backend.clear()
    if test.n_prompt:
        backend.bench_prompt(min(test.n_prompt, 512), rng)
    if test.n_gen:
        backend.bench_gen(1, rng)
    backend.clear()


def _result(test: SpeedTest, samples_ns: Sequence[int], config: dict) -> SpeedResult:
    n_tokens = test.n_prompt + test.n_gen
    samples_ts = tuple(n_tokens * 1e9 / ns for ns in samples_ns)
    avg, std = mean_stddev(samples_ts)
    return SpeedResult(
        test=test.name,
        n_prompt=test.n_prompt,
        n_gen=test.n_gen,
        n_depth=test.n_depth,
        samples_ns=tuple(samples_ns),
        samples_ts=samples_ts,
        avg_ts=avg,
        stddev_ts=std,
        **config,
    )


@dataclass(frozen=True)
class SweepPoint:
    """One combination of a speed sweep, threads resolved. Points whose `load_options` share
    a load_key share a loaded model."""

    n_threads: int
    n_gpu_layers: int
    n_batch: int
    flash_attn: bool | str
    n_depth: int
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"


def expand_sweep(settings: RunSettings, *, cores_physical: int) -> list[SweepPoint]:
    """The cartesian product of the sweep lists, grouped so each model load is used once.

    An empty list means the single value of the plain setting; threads 0 means the host's
    `cores_physical`. The first point is always the run's primary configuration. The KV cache
    types (-ctk/-ctv) sweep as llama-bench sweeps them: every K type with every V type.
    >>> s = RunSettings(sweep_threads=(1, 2), depths=(0, 512))
    >>> [(p.n_threads, p.n_depth) for p in expand_sweep(s, cores_physical=4)]
    [(1, 0), (1, 512), (2, 0), (2, 512)]
    """
    threads = settings.sweep_threads or (settings.n_threads,)
    layers = settings.sweep_n_gpu_layers or (settings.n_gpu_layers,)
    batches = settings.sweep_n_batch or (settings.n_batch,)
    flash = settings.sweep_flash_attn or (settings.flash_attn,)
    depths = settings.depths or (0,)
    return [
        SweepPoint(
            n_threads=resolve_threads(n_threads, cores_physical),
            n_gpu_layers=ngl,
            n_batch=batch,
            flash_attn=fa,
            n_depth=depth,
            cache_type_k=type_k,
            cache_type_v=type_v,
        )
        for ngl, batch, fa, (type_k, type_v), n_threads, depth in itertools.product(
            layers, batches, flash, kv_pairs(settings), threads, depths
        )
    ]


#: RunSettings' sweep lists of the context knobs: cleared in each knob point's settings.
KNOB_SWEEPS = (
    "sweep_n_ctx",
    "sweep_flash_attn",
    "sweep_cache_type_k",
    "sweep_cache_type_v",
    "sweep_cache_type_kv",
    "sweep_swa_full",
)


def knob_points(settings: RunSettings) -> list[RunSettings]:
    """The run's context-knob points (n_ctx x flash attention x KV types x windowing), each as
    the settings one record is measured with: a point's own values, its knob sweep lists
    cleared (the other sweeps stay: they are speed-only points inside the record). A run that
    sweeps no knob is one point, its settings as given (so its records keep their resume keys).
    The first point is the run's primary configuration.

    >>> s = RunSettings(sweep_cache_type_kv=("f16", "q8_0"), flash_attn=True, n_ctx=8192)
    >>> [(p.n_ctx, p.cache_type_k, p.cache_type_v) for p in knob_points(s)]
    [(8192, 'f16', 'f16'), (8192, 'q8_0', 'q8_0')]
    """
    contexts = settings.sweep_n_ctx or (settings.n_ctx,)
    flashes = settings.sweep_flash_attn or (settings.flash_attn,)
    windows = settings.sweep_swa_full or (settings.swa_full,)
    combos = list(itertools.product(contexts, flashes, kv_pairs(settings), windows))
    if len(combos) == 1:
        return [settings]
    cleared: dict[str, Any] = {name: () for name in KNOB_SWEEPS}
    return [
        dataclasses.replace(
            settings,
            n_ctx=n_ctx,
            flash_attn=fa,
            cache_type_k=k,
            cache_type_v=v,
            swa_full=full,
            **cleared,
        )
        for n_ctx, fa, (k, v), full in combos
    ]


def knob_words(point: RunSettings, points: Sequence[RunSettings]) -> str:
    """ " + KV q8_0": the point's knobs as its row will be named (only those the run sweeps
    and that differ from the default); "" for a run of one point."""
    parts = knob_parts(point, varying_knobs(points)) if len(points) > 1 else []
    return "".join(" + " + p for p in parts)


def refuse_knob_sweep(settings: RunSettings, option: str) -> None:
    """ConfigError, before anything runs, when `option` (a driver that measures each variant
    as one record: --race, --cluster) is given a sweep of the context knobs."""
    if len(knob_points(settings)) > 1:
        raise ConfigError(
            f"{option} measures each variant at one context: give --n-ctx, --flash-attn and the "
            "KV cache types one value each (a sweep of them is one record per point, run "
            f"without {option})",
            path="the command line",
            key=option,
        )


def load_options(settings: RunSettings, point: SweepPoint, *, scoring: bool = False) -> LoadOptions:
    """How to load the model for `point`: its swept values, the rest from `settings`.

    `scoring` (the accuracy phase) keeps a full-size sliding-window cache whatever the run's
    windowing: scoring cuts each sequence back to a shared prompt and reuses it, and a
    windowed cache has dropped positions it then needs (measured on Gemma 3 270M: log-
    likelihoods of the same continuations changed by up to 1.9 nats). The windowing applies
    to the speed tests and the memory they measure."""
    return LoadOptions(
        n_ctx=settings.n_ctx,
        n_threads=point.n_threads,
        n_batch=point.n_batch,
        n_ubatch=settings.n_ubatch,
        n_gpu_layers=point.n_gpu_layers,
        flash_attn=point.flash_attn,
        use_mmap=settings.use_mmap,
        use_mlock=settings.use_mlock,
        type_k=point.cache_type_k,
        type_v=point.cache_type_v,
        swa_full=settings.swa_full or scoring,
    )


def speed_tests_for(settings: RunSettings, depth: int) -> list[SpeedTest]:
    """pp N and tg M (and pp N + tg M when asked) at one depth."""
    tests = [
        SpeedTest(n_prompt=settings.pp_tokens, n_gen=0, n_depth=depth),
        SpeedTest(n_prompt=0, n_gen=settings.tg_tokens, n_depth=depth),
    ]
    if settings.pp_tg:
        tests.append(
            SpeedTest(n_prompt=settings.pp_tokens, n_gen=settings.tg_tokens, n_depth=depth)
        )
    return tests


def run_ttft(
    backend: Backend, prompt: str, *, repetitions: int, clock: Clock = time.perf_counter_ns
) -> LatencyResult:
    """Time to first token for `prompt`: tokenize, decode the prompt, pick the first token.

    One untimed warmup, then `repetitions` timed requests with an empty KV cache each."""
    backend.clear()
    backend.first_token(prompt)
    samples = []
    for _ in range(repetitions):
        backend.clear()
        start = clock()
        backend.first_token(prompt)
        samples.append(max(clock() - start, 1))
    n_prompt = len(backend.tokenize(prompt, add_bos=True))
    avg, std = mean_stddev([s / 1e6 for s in samples])
    return LatencyResult(
        test=f"ttft{n_prompt}",
        n_prompt=n_prompt,
        samples_ns=tuple(samples),
        avg_ms=avg,
        stddev_ms=std,
    )
