"""Timing loops on a Backend, llama-bench's way.

What is timed: only the decode calls of each test (plus llama_synchronize), never loading,
tokenization or sampling. Tokens are synthetic (uniform random ids, fixed seed). Before the
repetitions one untimed warmup runs; before each repetition the KV cache is cleared and, for a
depth d > 0, refilled with d tokens outside the timed region.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgeeval.backend import Backend
from edgeeval.metrics import mean_stddev
from edgeeval.records import SpeedResult

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


def run_speed_test(backend: Backend, test: SpeedTest, *, repetitions: int, seed: int = 0,
                   clock: Clock = time.perf_counter_ns) -> SpeedResult:
    """Run one test: warmup, then `repetitions` timed runs; tokens/s per run and their stats."""
    if repetitions < 1:
        raise ValueError("repetitions must be at least 1")
    rng = random.Random(seed)
    _warmup(backend, test, rng)
    samples_ns: list[int] = []
    for _ in range(repetitions):
        backend.clear()
        if test.n_depth:
            backend.bench_prompt(test.n_depth, rng)
        start = clock()
        if test.n_prompt:
            backend.bench_prompt(test.n_prompt, rng, first=not test.n_depth)
        if test.n_gen:
            backend.bench_gen(test.n_gen, rng)
        samples_ns.append(max(clock() - start, 1))
    return _result(test, samples_ns)


def _warmup(backend: Backend, test: SpeedTest, rng: random.Random) -> None:
    backend.clear()
    if test.n_prompt:
        backend.bench_prompt(min(test.n_prompt, 512), rng)
    if test.n_gen:
        backend.bench_gen(1, rng)
    backend.clear()


def _result(test: SpeedTest, samples_ns: Sequence[int]) -> SpeedResult:
    n_tokens = test.n_prompt + test.n_gen
    samples_ts = tuple(n_tokens * 1e9 / ns for ns in samples_ns)
    avg, std = mean_stddev(samples_ts)
    return SpeedResult(test=test.name, n_prompt=test.n_prompt, n_gen=test.n_gen,
                       n_depth=test.n_depth, samples_ns=tuple(samples_ns),
                       samples_ts=samples_ts, avg_ts=avg, stddev_ts=std)
