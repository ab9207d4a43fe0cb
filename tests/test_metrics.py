import math

import pytest

from edgeeval.metrics import (
    binomial_se,
    capability,
    mean_stddev,
    normalized_gain,
    pick,
    proportion_se,
    score_samples,
    wilson_interval,
)
from edgeeval.records import SampleResult


@pytest.mark.parametrize(
    "samples, mean, sd",
    [
        ([10.0, 12.0, 14.0], 12.0, 2.0),
        ([5.0], 5.0, 0.0),
        ([1.0, 1.0, 1.0, 1.0], 1.0, 0.0),
        ([2.0, 4.0], 3.0, math.sqrt(2.0)),
    ],
)
def test_mean_stddev(samples, mean, sd):
    assert mean_stddev(samples) == pytest.approx((mean, sd))


@pytest.mark.parametrize(
    "acc, chance, gain",
    [
        (0.25, 0.25, 0.0),
        (0.10, 0.25, 0.0),
        (1.0, 0.25, 1.0),
        (0.625, 0.25, 0.5),
        (0.75, 0.5, 0.5),
    ],
)
def test_normalized_gain(acc, chance, gain):
    assert normalized_gain(acc, chance) == pytest.approx(gain)


def test_capability_worked_example_from_the_docstring():
    cap, se = capability([(0.625, 0.05, 0.25), (0.5, 0.05, 0.5)])
    assert cap == pytest.approx(25.0)
    assert se == pytest.approx(100 * math.sqrt((0.05 / 0.75) ** 2 + (0.05 / 0.5) ** 2) / 2)


def test_binomial_se():
    assert binomial_se(0.5, 101) == pytest.approx(0.05)
    assert binomial_se(1.0, 50) == 0.0


def test_acc_norm_can_disagree_with_acc():
    # raw: choice 0 wins (-4 > -6); per byte: choice 1 wins (-6/12 = -0.5 > -4/2 = -2)
    assert pick([-4.0, -6.0], [2, 12], normalize=False) == 0
    assert pick([-4.0, -6.0], [2, 12], normalize=True) == 1


def test_score_samples_counts_hits():
    samples = [
        SampleResult("t", str(i), gold, logliks, (1, 1, 1))
        for i, (gold, logliks) in enumerate(
            [
                (0, (-1.0, -2.0, -3.0)),
                (1, (-1.0, -2.0, -3.0)),
                (2, (-5.0, -4.0, -0.5)),
                (0, (-0.1, -2.0, -3.0)),
            ]
        )
    ]
    score = score_samples(samples, task="t", version=1, category="x", chance=1 / 3)
    assert score.n == 4 and score.acc == pytest.approx(0.75)
    assert score.acc_se == pytest.approx(math.sqrt(0.75 * 0.25 / 3))


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [  # Wilson 95 % intervals as published (Newcombe 1998, table I; Brown, Cai & DasGupta)
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),
        (2, 2, 0.3424, 1.0),
    ],
)
def test_wilson_interval_matches_published_values(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_needs_an_item():
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)


def test_proportion_se_is_the_stored_se_except_where_it_collapses():
    assert proportion_se(0.5, 0.05, 101) == 0.05  # lm-eval's binomial SE, untouched
    assert proportion_se(0.3, 0.0461, 100) == 0.0461
    # 2 of 2: the Wilson interval (0.342, 1) spans 0.658, i.e. SE 0.658 / 3.92
    assert proportion_se(1.0, 0.0, 2) == pytest.approx((1 - 0.34238) / (2 * 1.959964), abs=1e-4)
    assert proportion_se(0.0, 0.0, 2) == pytest.approx(proportion_se(1.0, 0.0, 2))  # symmetric
    assert proportion_se(1.0, 0.0, 1) > proportion_se(1.0, 0.0, 2) > proportion_se(1.0, 0.0, 500)
    assert proportion_se(1.0, 0.0, 500) > 0.0
