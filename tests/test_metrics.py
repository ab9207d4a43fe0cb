import math

import pytest

from edgeeval.metrics import (
    binomial_se,
    capability,
    mean_stddev,
    normalized_gain,
    pick,
    score_samples,
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
