import itertools

import pytest

from edgeeval.run.speed import SpeedTest, run_speed_test
from edgeeval.score.choice import score_task
from edgeeval.tasks.suite import McItem
from tests.fake_backend import FakeBackend


def test_speed_test_warms_up_then_times_each_repetition():
    backend = FakeBackend()
    ticks = itertools.count(0, 1_000_000_000)  # every clock read advances one second
    result = run_speed_test(
        backend, SpeedTest(n_prompt=64, n_gen=0), repetitions=3, clock=lambda: next(ticks)
    )
    # warmup (clear, prompt, clear) then per repetition: clear, timed prompt
    assert backend.calls[:3] == [("clear",), ("prompt", 64), ("clear",)]
    assert backend.calls[3:] == [("clear",), ("prompt", 64)] * 3
    assert result.test == "pp64" and result.samples_ns == (10**9,) * 3
    assert result.avg_ts == pytest.approx(64.0) and result.stddev_ts == 0.0


def test_depth_is_filled_outside_the_timed_region():
    backend = FakeBackend()
    reads = []

    def clock():
        reads.append(len(backend.calls))
        return len(reads) * 10**9

    run_speed_test(backend, SpeedTest(n_prompt=0, n_gen=8, n_depth=100), repetitions=1, clock=clock)
    start, end = reads
    assert ("prompt", 100) in backend.calls[:start]
    assert backend.calls[start:end] == [("gen", 8)]


def test_tg_name_and_tokens_per_second():
    ticks = iter([0, 2 * 10**9, 0, 4 * 10**9])
    result = run_speed_test(
        FakeBackend(), SpeedTest(n_prompt=0, n_gen=32), repetitions=2, clock=lambda: next(ticks)
    )
    assert result.test == "tg32"
    assert result.samples_ts == (16.0, 8.0)
    assert result.avg_ts == pytest.approx(12.0)


class _Task:
    name, version, category, chance = "t", 1, "x", 0.5


def test_score_task_uses_the_backends_likelihoods():
    items = [McItem("a", "Q:", (" yes", " no"), 0), McItem("b", "Q:", (" yes", " no"), 1)]
    score, samples = score_task(FakeBackend(liked=(" yes",)), _Task(), items)
    assert score.acc == pytest.approx(0.5)
    assert [s.item_id for s in samples] == ["a", "b"]
    assert samples[0].choice_chars == (4, 3)
