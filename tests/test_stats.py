"""edgeeval.stats against hand-computed tables (the arithmetic is written out beside each)."""

from __future__ import annotations

import math

import pytest

from edgeeval.metrics import binomial_se, capability
from edgeeval.stats import (
    TaskItems,
    capability_difference,
    clustered_se,
    discordant,
    items_needed,
    mcnemar_exact,
    min_detectable,
    paired_difference,
    unpaired_se,
)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        # n = 10, min = 2: P(X <= 2) = (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 56/1024; p = 2x
        (8, 2, 112 / 1024),
        (2, 8, 112 / 1024),  # symmetric
        # n = 6, min = 0: P(X <= 0) = 1/64; p = 2/64 = 0.03125
        (6, 0, 2 / 64),
        # n = 5, min = 1: (1 + 5) / 32 = 6/32; p = 12/32 = 0.375
        (1, 4, 12 / 32),
        # n = 4, min = 2 = n/2: 2 * (1 + 4 + 6) / 16 = 22/16 > 1 -> capped at 1
        (2, 2, 1.0),
        # n = 20, min = 5: (1 + 20 + 190 + 1140 + 4845 + 15504) / 2^20 = 21700 / 1048576
        (15, 5, 2 * 21700 / 1048576),
        (0, 0, 1.0),  # no discordant pair: no evidence either way
    ],
)
def test_mcnemar_exact_against_binomial_tables(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_refuses_negative_counts():
    with pytest.raises(ValueError, match="b=-1"):
        mcnemar_exact(-1, 3)


def test_discordant_counts_only_items_one_variant_got():
    # item:  1  2  3  4  5  6
    # A:     1  1  0  0  1  1
    # B:     1  0  1  0  0  0    -> only A: items 2, 5, 6 (b = 3); only B: item 3 (c = 1)
    assert discordant([1, 1, 0, 0, 1, 1], [1, 0, 1, 0, 0, 0]) == (3, 1)


def test_paired_se_on_six_items_by_hand():
    # A = 1 1 1 0 1 1 (5/6), B = 1 1 0 0 1 0 (3/6); d = 0 0 1 0 0 1, mean d = 2/6 = 1/3
    # residuals: four of -1/3, two of 2/3 -> sum of squares 4/9 + 8/9 = 12/9 = 4/3
    # s_d^2 = (4/3) / 5 = 4/15; paired SE = sqrt(4/15 / 6) = sqrt(2/45) = 0.210819
    # unpaired: s_A^2 = 6 * (5/6)(1/6) / 5 = 1/6; s_B^2 = 6 * (1/2)(1/2) / 5 = 3/10
    #           SE = sqrt((1/6 + 3/10) / 6) = sqrt((14/30) / 6) = sqrt(7/90) = 0.278887
    p = paired_difference([1, 1, 1, 0, 1, 1], [1, 1, 0, 0, 1, 0])
    assert p.n == 6
    assert p.mean_a == pytest.approx(5 / 6)
    assert p.mean_b == pytest.approx(0.5)
    assert p.diff == pytest.approx(1 / 3)
    assert p.se == pytest.approx(math.sqrt(2 / 45))
    assert p.sd == pytest.approx(math.sqrt(4 / 15))
    assert p.se_unpaired == pytest.approx(math.sqrt(7 / 90))
    assert p.n_clusters is None


def test_unpaired_se_is_the_rankings_combined_binomial_se():
    """For right/wrong items the unpaired SE is sqrt(se_a^2 + se_b^2) with binomial_se."""
    a, b = [1] * 7 + [0] * 3, [1] * 4 + [0] * 6
    expected = math.hypot(binomial_se(0.7, 10), binomial_se(0.4, 10))
    assert unpaired_se(a, b) == pytest.approx(expected)


def test_clustered_se_on_a_tiny_example_by_hand():
    # d = 1 1 0 0 0 1, mean 1/2, residuals e = +.5 +.5 -.5 -.5 -.5 +.5
    # s^2 = 6 * 0.25 / 5 = 0.3, unclustered SE^2 = 0.3 / 6 = 0.05
    # clusters {1,2} {3,4} {5,6} (G = 3): residual sums 1, -1, 0; squared and summed: 2
    # CR1: SE^2 = G / (G - 1) * 2 / n^2 = 3/2 * 2 / 36 = 1/12, SE = 0.288675
    d = [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert clustered_se(d) == pytest.approx(math.sqrt(0.05))
    assert clustered_se(d, ["a", "a", "b", "b", "c", "c"]) == pytest.approx(math.sqrt(1 / 12))


def test_clustered_se_on_three_clusters_of_unequal_sizes_by_hand():
    # 10 values: cluster A (4) 1 1 1 0, B (2) 0 0, C (4) 1 0 0 1; mean 5/10 = 0.5
    # residuals: A +.5 +.5 +.5 -.5 (sum 1.0), B -.5 -.5 (sum -1.0), C +.5 -.5 -.5 +.5 (sum 0)
    # sum of squared cluster sums = 1 + 1 + 0 = 2; n^2 = 100; G / (G - 1) = 3/2
    # SE^2 = 1.5 * 2 / 100 = 0.03 -> SE = 0.173205
    # unclustered: s^2 = 10 * .25 / 9 = 0.27778, SE^2 = 0.027778 -> SE = 0.166667
    values = [1, 1, 1, 0, 0, 0, 1, 0, 0, 1]
    clusters = ["A"] * 4 + ["B"] * 2 + ["C"] * 4
    assert clustered_se(values, clusters) == pytest.approx(math.sqrt(0.03))
    assert clustered_se(values) == pytest.approx(math.sqrt(2.5 / 9 / 10))
    # the clusters need not be contiguous: the same ids in another order give the same SE
    order = [9, 0, 4, 6, 1, 5, 2, 8, 3, 7]
    assert clustered_se([values[i] for i in order], [clusters[i] for i in order]) == (
        pytest.approx(math.sqrt(0.03))
    )


def test_clustered_se_with_singleton_clusters_is_the_plain_se():
    # the G / (G - 1) factor makes one item per cluster exactly sqrt(s^2 / n)
    d = [0.0, 1.0, -1.0, 1.0, 0.0]
    assert clustered_se(d, list(range(5))) == pytest.approx(clustered_se(d))
    assert clustered_se([1, 0, 0, 1, 1], list("abcde")) == pytest.approx(binomial_se(0.6, 5))


def test_a_clustered_se_never_falls_below_the_plain_one():
    # 1 0 | 1 0 | 1 0: every cluster's residuals (+.5, -.5) sum to 0, so CR1 = 0; the items of
    # a cluster disagree more than chance would have them: noise, so the plain SE stands,
    # sqrt(s^2 / n) = sqrt(0.3 / 6)
    d = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert clustered_se(d, list("aabbcc")) == pytest.approx(math.sqrt(0.05))
    p = paired_difference([1, 0, 1, 0, 1, 0], [0] * 6, clusters=list("aabbcc"))
    assert p.se == pytest.approx(math.sqrt(0.05)) and p.n_clusters == 3


def test_one_cluster_leaves_the_plain_se():
    # every item in one cluster: residuals sum to 0, nothing to estimate between clusters
    d = [1.0, 0.0, 1.0, 1.0]
    assert clustered_se(d, ["x"] * 4) == pytest.approx(clustered_se(d))
    p = paired_difference([1, 0, 1, 1], [0, 0, 1, 0], clusters=["x"] * 4)
    assert p.n_clusters is None


def test_clustered_se_is_larger_on_correlated_items():
    # 12 items in 4 clusters of 3 whose items move together (a subject A knows and B not):
    # d = 1 1 1 | 0 0 0 | 1 1 0 | 0 0 0, mean 5/12
    # unclustered: s^2 = (5 * (7/12)^2 + 7 * (5/12)^2) / 11 = (245 + 175) / 144 / 11 = 0.26515
    #   SE^2 = 0.26515 / 12 = 0.022096 (SE 0.14865)
    # clustered: residual sums 3 - 15/12 = 1.75, -1.25, 2 - 1.25 = .75, -1.25
    #   squares 3.0625 + 1.5625 + .5625 + 1.5625 = 6.75; SE^2 = 4/3 * 6.75 / 144 = 0.0625
    a = [1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    b = [0] * 12
    clusters = [c for c in "wxyz" for _ in range(3)]
    plain = paired_difference(a, b)
    clustered = paired_difference(a, b, clusters)
    assert plain.se == pytest.approx(math.sqrt(420 / 144 / 11 / 12))
    assert clustered.se == pytest.approx(0.25)
    assert clustered.se > 1.6 * plain.se
    assert (clustered.n_clusters, plain.n_clusters) == (4, None)
    assert clustered.diff == plain.diff  # clustering moves the SE, never the difference


def test_clustered_paired_difference_counts_clusters():
    # A = 1 1 0 0 1 1, B = 0 0 0 0 0 1 -> d = 1 1 0 0 1 0 (mean 1/2, e = +-.5)
    # clusters {1,2} {3,4} {5,6}: residual sums 1, -1, 0 -> SE^2 = 3/2 * 2 / 36 = 1/12
    p = paired_difference([1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1], clusters=[1, 1, 2, 2, 3, 3])
    assert p.n_clusters == 3
    assert p.se == pytest.approx(math.sqrt(1 / 12))


def test_capability_difference_clusters_each_task_on_its_own():
    # task 1 clustered (the table above: SE^2 of d = 1/12), task 2 unclustered; chance 0 so
    # gains are the scores: capability SE = 100 * sqrt(1/12 + se_2^2) / 2
    t1 = TaskItems("t1", (1, 1, 0, 0, 1, 1), (0, 0, 0, 0, 0, 1), 0.0, (1, 1, 2, 2, 3, 3))
    t2 = TaskItems("t2", (1, 0, 1, 0), (0, 0, 1, 1), 0.0)
    c = capability_difference([t1, t2])
    # t2: d = 1 0 0 -1, mean 0, s^2 = 2/3, SE^2 = 1/6
    assert c.se == pytest.approx(100 * math.sqrt(1 / 12 + 1 / 6) / 2)
    assert [pair.n_clusters for _, pair in c.tasks] == [3, None]


def test_clustered_se_refuses_a_cluster_list_of_the_wrong_length():
    with pytest.raises(ValueError, match="2 cluster ids for 3 values"):
        clustered_se([1.0, 0.0, 1.0], ["a", "b"])
    with pytest.raises(ValueError, match="2 cluster ids for 3 items"):
        paired_difference([1, 0, 1], [0, 0, 1], clusters=["a", "b"])


def test_paired_difference_refuses_unshared_items():
    with pytest.raises(ValueError, match="same items: 3 vs 2"):
        paired_difference([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="no shared items"):
        paired_difference([], [])


def test_power_figures_by_hand():
    # z_0.975 = 1.959964, z_0.80 = 0.841621: sum 2.801585
    assert min_detectable(1.0) == pytest.approx(2.801585, abs=1e-6)
    # 400 items with SE 2.5 detect 7.004; 2 points need 400 * (7.00396 / 2)^2 = 4905.5 -> 4906
    assert items_needed(2.5, 400, 2.0) == 4906
    # already enough: SE 0.5 on 100 items detects 1.4 < 2: 100 * 0.7004^2 = 49.06 -> 50
    assert items_needed(0.5, 100, 2.0) == 50
    assert items_needed(0.0, 100, 2.0) is None  # identical answers: nothing to scale


def test_capability_difference_uses_the_ranking_formula():
    # Task 1 (4 choices, chance .25), 4 items: A = 1 1 1 0 (acc .75, gain 2/3), B = 1 0 0 0
    #   (acc .25, gain 0). Task 2 (2 choices, chance .5), 4 items: A = 1 1 0 0 (acc .5, gain 0),
    #   B = 1 1 1 0 (acc .75, gain .5).
    # capability A = 100 * (2/3 + 0) / 2 = 33.33; B = 100 * (0 + .5) / 2 = 25.0; diff 8.33
    t1 = TaskItems("t1", (1, 1, 1, 0), (1, 0, 0, 0), 0.25)
    t2 = TaskItems("t2", (1, 1, 0, 0), (1, 1, 1, 0), 0.5)
    c = capability_difference([t1, t2])
    se = binomial_se
    cap_a, se_a = capability([(0.75, se(0.75, 4), 0.25), (0.5, se(0.5, 4), 0.5)])
    cap_b, se_b = capability([(0.25, se(0.25, 4), 0.25), (0.75, se(0.75, 4), 0.5)])
    assert c.diff == pytest.approx(cap_a - cap_b)
    assert c.diff == pytest.approx(100 * (2 / 3 - 0.5) / 2)
    # the unpaired SE is the ranking's own sqrt(se_a^2 + se_b^2)
    assert c.se_unpaired == pytest.approx(math.hypot(se_a, se_b))
    # paired, by hand. Task 1: gain d = 0, 4/3, 4/3, 0: s^2 = 4 * (2/3)^2 / 3 = 16/27,
    #   SE_1^2 = 16/27 / 4 = 4/27. Task 2: x - y = 0 0 -1 0, gain d = x - y over .5 =
    #   0 0 -2 0, mean -1/2, s^2 = (3 * .25 + 2.25) / 3 = 1, SE_2^2 = 1/4.
    # SE = 100 * sqrt(4/27 + 1/4) / 2 = 31.55
    assert c.se == pytest.approx(100 * math.sqrt(4 / 27 + 1 / 4) / 2)
    assert c.n_items == 8
    assert [name for name, _ in c.tasks] == ["t1", "t2"]
    assert c.min_detectable == pytest.approx(2.801585 * c.se, rel=1e-6)


def test_capability_difference_clamps_like_the_ranking():
    # 4 choices, A at chance-minus (acc 0: gain clamped to 0), B at 0.25 (gain 0): diff 0,
    # although the per-item gains differ (A's are all -1/3, B's are 1, -1/3, -1/3, -1/3)
    c = capability_difference([TaskItems("t", (0, 0, 0, 0), (1, 0, 0, 0), 0.25)])
    assert c.diff == 0.0
    assert c.se > 0


def test_capability_difference_per_gb_scales_each_side():
    # scale_a = 1/0.5 GB, scale_b = 1/1.0 GB: cap/GB A = 200 * gain_a, B = 100 * gain_b
    t = TaskItems("t", (1, 1, 0, 0), (1, 1, 1, 0), 0.0)
    c = capability_difference([t], scale_a=2.0, scale_b=1.0)
    assert c.diff == pytest.approx(200 * 0.5 - 100 * 0.75)
    # d_i = 2 x_i - y_i = 1 1 -1 0: mean 1/4, s^2 = (.5625 * 2 + 1.5625 + .0625) / 3 = 11/12
    assert c.se == pytest.approx(100 * math.sqrt(11 / 12 / 4))


def test_identical_variants_differ_by_zero_with_zero_se():
    t = TaskItems("t", (1, 0, 1, 1), (1, 0, 1, 1), 0.25)
    c = capability_difference([t])
    assert (c.diff, c.se, c.items_for_target) == (0.0, 0.0, None)
    assert c.se_unpaired > 0  # the unpaired view still sees two noisy scores


def test_capability_difference_refuses_a_bad_chance_level():
    with pytest.raises(ValueError, match="task t: chance"):
        capability_difference([TaskItems("t", (1,), (0,), 1.0)])
