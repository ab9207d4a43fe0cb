"""Comparing two variants on the items both answered: paired differences, clustered SEs,
an exact McNemar test, the capability difference and power figures.

Pure formulas (no I/O, no models), each checked against hand-computed tables in
tests/test_stats.py. The method follows "Adding Error Bars to Evals" (E. Miller, 2024,
arXiv 2411.00640): compare on paired per-item differences, cluster the SE where items share a
passage or subject, and state the power of the comparison.

Notation: item i of a task scores x_i for variant A and y_i for variant B (1 right, 0 wrong, or
any per-item score); d_i = x_i - y_i; n items; s_d^2 = sum (d_i - mean d)^2 / (n - 1).
- paired SE of the mean difference: s_d / sqrt(n);
- unpaired SE (the two scores as if independent): sqrt(s_x^2 / n_x + s_y^2 / n_y), which for
  right/wrong items is sqrt(se_a^2 + se_b^2) with metrics.binomial_se;
- clustered (cluster-robust, CR1, as in Miller's section on clustered SEs), where the items
  name their cluster:
  SE_c^2 = G / (G - 1) * sum over the G clusters c of (sum_{i in c} (d_i - mean d))^2 / n^2.
  G / (G - 1) is the small-sample factor (Stata's CR1 for a mean); with it, one item per
  cluster gives exactly the paired SE above. Fewer than two clusters: the paired SE. It is
  floored at the paired SE (a smaller CR1 is noise of few, small clusters; see metrics).
  The formula is metrics.clustered_se (the per-task SEs of a score use it too); it is
  re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from edgeeval.metrics import cluster_count, clustered_se, normalized_gain

#: Two-sided 5 % level and 80 % power: the normal quantiles of the power figures.
ALPHA = 0.05
POWER = 0.80
Z_ALPHA = NormalDist().inv_cdf(1 - ALPHA / 2)  # 1.95996...
Z_POWER = NormalDist().inv_cdf(POWER)  # 0.84162...
#: The capability difference the item-count figure is asked for (points of 0..100).
TARGET_POINTS = 2.0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def sample_var(values: Sequence[float]) -> float:
    """Sample variance with n - 1 (0.0 for fewer than two values).

    >>> sample_var([1.0, 0.0, 1.0, 1.0])
    0.25
    """
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return sum((v - m) ** 2 for v in values) / (len(values) - 1)


@dataclass(frozen=True)
class PairedDiff:
    """Mean of A minus B over n shared items, with its paired and unpaired SEs.

    `se` is the paired SE (clustered when clusters were given, every item names one and they
    make at least two: then `n_clusters` says how many; None when unclustered); `sd` is the
    sample SD of the per-item differences, the figure power is built on."""

    n: int
    mean_a: float
    mean_b: float
    diff: float
    se: float
    se_unpaired: float
    sd: float
    n_clusters: int | None = None


def paired_difference(
    a: Sequence[float], b: Sequence[float], clusters: Sequence[Hashable] | None = None
) -> PairedDiff:
    """Paired difference of per-item scores `a` and `b` (the same items, in the same order).

    Worked example, 6 items: a = 1 1 1 0 1 0, b = 1 0 1 0 0 0, so d = 0 1 0 0 1 0,
    mean d = 2/6 = 0.3333, s_d^2 = (4 * (1/3)^2 + 2 * (2/3)^2) / 5 = (4/9 + 8/9) / 5 = 4/15,
    paired SE = sqrt(4/15 / 6) = 0.2108. Unpaired: s_a^2 = 6 * (2/3)(1/3) / 5 = 4/15,
    s_b^2 = 6 * (1/3)(2/3) / 5 = 4/15, SE = sqrt(2 * 4/15 / 6) = 0.2981.

    >>> p = paired_difference([1, 1, 1, 0, 1, 0], [1, 0, 1, 0, 0, 0])
    >>> round(p.diff, 4), round(p.se, 4), round(p.se_unpaired, 4)
    (0.3333, 0.2108, 0.2981)
    """
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same items: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("no shared items to compare")
    d = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    n = len(d)
    if clusters is not None and len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster ids for {n} items")
    groups = cluster_count([str(c) if c is not None else "" for c in clusters or ()])
    return PairedDiff(
        n=n,
        mean_a=_mean(a),
        mean_b=_mean(b),
        diff=_mean(d),
        se=clustered_se(d, clusters if groups else None),
        se_unpaired=unpaired_se(a, b),
        sd=math.sqrt(sample_var(d)),
        n_clusters=groups or None,
    )


def unpaired_se(a: Sequence[float], b: Sequence[float]) -> float:
    """SE of mean(a) - mean(b) as if the two were measured on independent items:
    sqrt(s_a^2 / n_a + s_b^2 / n_b) (n - 1 variances, as metrics.binomial_se).
    Example: s^2 of 1 1 0 0 is 1/3, of 1 0 0 0 is 1/4: sqrt(1/12 + 1/16) = 0.3819.

    >>> round(unpaired_se([1, 1, 0, 0], [1, 0, 0, 0]), 4)
    0.3819
    """
    return math.sqrt(sample_var(a) / max(len(a), 1) + sample_var(b) / max(len(b), 1))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value on the discordant pairs: `b` items only A got right,
    `c` items only B got right. Under no difference b ~ Binomial(b + c, 1/2);
    p = min(1, 2 * P(X <= min(b, c))). No discordant pair: p = 1.

    Worked example: b = 8, c = 2, n = 10: P(X <= 2) = (1 + 10 + 45) / 1024 = 56/1024, so
    p = 112/1024 = 0.109375.

    >>> mcnemar_exact(8, 2)
    0.109375
    >>> mcnemar_exact(0, 0)
    1.0
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2.0 * tail / 2**n)


def discordant(a: Sequence[float], b: Sequence[float]) -> tuple[int, int]:
    """(b, c) of McNemar's table for right/wrong items: items only A got right, only B did.

    >>> discordant([1, 1, 0, 1], [0, 1, 1, 0])
    (2, 1)
    """
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    return only_a, only_b


def min_detectable(se: float) -> float:
    """Smallest true difference detected with 80 % power by a two-sided 5 % test whose SE is
    `se`: (z_0.975 + z_0.80) * se = 2.8016 * se.

    >>> round(min_detectable(1.0), 4)
    2.8016
    """
    return (Z_ALPHA + Z_POWER) * se


def items_needed(se: float, n: int, target: float) -> int | None:
    """Items needed to detect `target` with 80 % power at 5 % two-sided, when `n` items give
    SE `se` (SE shrinks as 1/sqrt(n)): ceil(n * (2.8016 * se / target)^2). None when the SE
    is 0 (no difference seen on any item: nothing to scale).

    Worked example: 100 items with SE 1.5 points detect 4.2 points; 2 points need
    ceil(100 * (2.8016 * 1.5 / 2)^2) = ceil(441.5) = 442 items.

    >>> items_needed(1.5, 100, 2.0)
    442
    """
    if target <= 0:
        raise ValueError(f"target difference must be positive, got {target}")
    if se <= 0 or n <= 0:
        return None
    return math.ceil(n * (min_detectable(se) / target) ** 2 - 1e-9)


@dataclass(frozen=True)
class TaskItems:
    """One task's shared items for a pair: per-item scores of A and B (aligned), the task's
    chance level, and optional cluster ids (subject, passage)."""

    task: str
    a: tuple[float, ...]
    b: tuple[float, ...]
    chance: float
    clusters: tuple[Hashable, ...] | None = None


@dataclass(frozen=True)
class CapabilityDiff:
    """Capability of A minus capability of B (points of 0..100), the ranking's own formula,
    with the paired and unpaired SEs of that difference and its power figures."""

    diff: float
    se: float
    se_unpaired: float
    n_items: int
    min_detectable: float
    items_for_target: int | None
    tasks: tuple[tuple[str, PairedDiff], ...]


def capability_difference(
    tasks: Sequence[TaskItems], *, scale_a: float = 1.0, scale_b: float = 1.0
) -> CapabilityDiff:
    """scale_a * capability(A) - scale_b * capability(B), with capability as the ranking
    computes it (metrics.capability: 100 * mean over tasks of max(0, (acc - chance) /
    (1 - chance))), and SEs from the per-item normalized gains g_i = (x_i - chance) /
    (1 - chance): per task the paired (clustered where given) SE of scale_a * g_a - scale_b *
    g_b, combined as 100 * sqrt(sum_t se_t^2) / T (the clamp at 0 is ignored for the SE, as in
    metrics.capability). `scale_*` = 1 / peak GB gives the difference of capability per GB.
    The power figures scale every task's item count by one factor.

    Worked example, one 4-choice task (chance 0.25): A right on items 1, 2, 3 of 4, B on item
    1 only. Gains: A = 1, 1, 1, -1/3 (acc 0.75: capability 66.67); B = 1, -1/3, -1/3, -1/3
    (acc 0.25: capability 0); d = 0, 4/3, 4/3, 0, mean 2/3: 66.67 points;
    s_d^2 = 4 * (2/3)^2 / 3 = 16/27, paired SE = 100 * sqrt(16/27 / 4) = 38.49.

    >>> c = capability_difference([TaskItems("t", (1, 1, 1, 0), (1, 0, 0, 0), 0.25)])
    >>> round(c.diff, 2), round(c.se, 2), c.n_items
    (66.67, 38.49, 4)
    """
    if not tasks:
        raise ValueError("no shared tasks to compare")
    gains_a, gains_b, var, var_unpaired, per_task = [], [], 0.0, 0.0, []
    for t in tasks:
        if not 0.0 <= t.chance < 1.0:
            raise ValueError(f"task {t.task}: chance must be in [0, 1), got {t.chance}")
        ga = [scale_a * (x - t.chance) / (1.0 - t.chance) for x in t.a]
        gb = [scale_b * (y - t.chance) / (1.0 - t.chance) for y in t.b]
        pair = paired_difference(ga, gb, t.clusters)
        var += pair.se**2
        var_unpaired += pair.se_unpaired**2
        gains_a.append(scale_a * normalized_gain(_mean(t.a), t.chance))
        gains_b.append(scale_b * normalized_gain(_mean(t.b), t.chance))
        per_task.append((t.task, pair))
    count = len(tasks)
    se = 100.0 * math.sqrt(var) / count
    n_items = sum(len(t.a) for t in tasks)
    return CapabilityDiff(
        diff=100.0 * (_mean(gains_a) - _mean(gains_b)),
        se=se,
        se_unpaired=100.0 * math.sqrt(var_unpaired) / count,
        n_items=n_items,
        min_detectable=min_detectable(se),
        items_for_target=items_needed(se, n_items, TARGET_POINTS),
        tasks=tuple(per_task),
    )


def margin_se_floor(shape: Sequence[tuple[float, int]], margin: float) -> float:
    """The least SE (points) a capability difference of exactly `margin` points can have,
    over tasks of (chance, n items): 100 / T * min_t sqrt(m_t (w_t - m_t) / n_t), with
    w_t = 1 / (1 - chance) (a right/wrong item's gain step) and m_t = T * margin / 100.

    A lead of m (normalized-gain units) on a task of n items needs the leader alone right on
    at least m / w of them, so its per-item differences vary by at least m (w - m); the
    variance is concave in how a lead is spread, so it is least with the whole lead on one
    task. Tests of "less than `margin` apart" take at least this SE: a few items on which two
    variants happen to agree give an observed SE of 0, which would prove any margin.
    0 when no single task can hold the lead (m_t > w_t on every task).

    Agreement on all 10 items of one 4-choice task: m = 0.02, w = 4/3,
    floor = 100 * sqrt(0.02 * 1.3133 / 10) = 5.13 points.

    >>> round(margin_se_floor([(0.25, 10)], 2.0), 2)
    5.13
    """
    count = len(shape)
    lead = count * margin / 100.0
    floors = []
    for chance, n in shape:
        w = 1.0 / (1.0 - chance)
        if lead <= w and n > 0:
            floors.append(math.sqrt(lead * (w - lead) / n))
    return 100.0 * min(floors) / count if floors else 0.0


def equivalence_p(diff: float, se: float, margin: float) -> float:
    """p of the two one-sided tests (TOST) that A and B differ by less than `margin`: H0 is
    |true difference| >= margin; p = 1 - Phi((margin - |diff|) / se), the larger of the two
    one-sided p-values. Below 0.05 the 90 % interval diff +- 1.645 se lies inside
    (-margin, margin): the two are equal within the margin. `se` is expected floored
    (margin_se_floor); at se = 0 the p is 0 inside the margin and 1 outside.

    Worked example: 0.0 +- 0.67 points against a 2-point margin: z = 2 / 0.67 = 2.99,
    p = 0.0014; 1.0 +- 0.67: z = 1.49, p = 0.068.

    >>> round(equivalence_p(0.0, 0.67, 2.0), 4), round(equivalence_p(1.0, 0.67, 2.0), 3)
    (0.0014, 0.068)
    """
    if margin <= 0:
        raise ValueError(f"an equivalence margin must be positive, got {margin}")
    if se <= 0:
        return 0.0 if abs(diff) < margin else 1.0
    return 1.0 - NormalDist().cdf((margin - abs(diff)) / se)
