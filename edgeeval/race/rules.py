"""The race's decisions, with no I/O and no model: the shared item order, the round sizes,
the paired test and one look at the evidence after a round.

The rule (README "Racing"):
- Every task's items are put in one seeded order that all variants share; round r (0-based)
  covers the first ceil(N * f * 2^r) items of each task (f = `first_fraction`, 1/16 by
  default), the last round all of them: R = 1 + ceil(log2(1 / f)) rounds (5 by default).
- After each round every open question about a pair of running variants is tested on the items
  both answered: is one more capable than the other (and, ranking by capability per GB, is one
  ahead per GB)? A variant that uses no more peak memory than another and is more capable
  beyond noise beats it (it is then also ahead per GB, and the other is off the Pareto
  front): the loser stops.
- With a margin of d capability points (`--race-margin`, 0 by default), a variant is also
  beaten by one that uses less peak memory, is ahead of it per GB beyond noise, and is shown
  (one-sided paired test, H0: it is at least d points more capable) to be less than d points
  more capable: it buys at most d points with more memory (practically dominated). With d = 0
  this rule never fires, and only a proven capability lead stops a variant.
- With a margin d > 0, two variants shown equal in capability within d points, by two
  one-sided margin tests (TOST, the larger p; each SE floored at the least one a d-point gap
  can have), have their capability question settled as a tie: a quantization that changes
  nothing stops being measured against its original, where no item count could ever tell
  them apart. With d = 0 no tie is ever declared.
- A variant whose every comparison with the running variants is decided has its place settled
  and stops too; the rest go on until the last round.
- Error control: Bonferroni over the R looks (each look spends alpha / R, alpha = 1 -
  confidence), and Holm's step-down over the questions tested at one look. By the union bound
  the chance of any wrong decision in the whole race is at most alpha, whatever the dependence
  between looks and pairs. R is fixed before the race, which is what the split needs.
- The test: the capability difference (metrics.capability's formula, clamp included) of the two
  variants on their shared items, divided by its paired SE under the null hypothesis: the
  second moment of the per-item differences of normalized gains (as McNemar's test uses the
  discordant count), not their sample variance, so that a few items whose differences happen to
  be equal never give an SE of 0. Against the centred paired SE of
  edgeeval.stats.capability_difference it is larger by the squared mean difference, and smaller
  by at most the factor sqrt((n - 1) / n) (when the mean difference is 0). Two-sided normal
  p-values.
- Clusters: where a task's items come in clusters (its `cluster_by`: MMLU subjects, pages), the
  task's second moment is also computed clustered, G / (G - 1) * sum_c (sum_{i in c} d_i)^2 /
  n^2 over the G clusters the items answered so far fall in (CR1, uncentred as above), and the
  larger of the two is used: the floor at the plain SE that metrics.clustered_se keeps too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from statistics import NormalDist

from edgeeval.errors import EdgeevalError
from edgeeval.stats import margin_se_floor

CAPABILITY = "capability"
PER_GB = "capability_per_gb"
RANK_BY = (PER_GB, CAPABILITY)
#: Items added to each discordant cell of a per-GB question's variance (paired_test): the
#: add-one-half of Agresti and Min's paired intervals, so that agreement seen on a few items
#: never counts as certainty about the order per GB.
PSEUDO_DISCORDANT = 0.5

#: A decision kind: the winner (less memory) is shown to trail the loser in capability by less
#: than the race's margin (the loser buys under `margin` points with more memory).
WITHIN_MARGIN = "within_margin"
#: A decision kind: the two are shown equal in capability within the race's margin (two
#: one-sided margin tests, TOST); it settles their capability question as a tie.
TIED = "tied"

BEATEN = "beaten"
SETTLED = "settled"
EXHAUSTED = "items ran out"


class RaceInputError(EdgeevalError, ValueError):
    """A race that cannot run as asked: `option` names the option or task at fault."""

    exit_code = 2

    def __init__(self, message: str, *, option: str = "") -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class RaceConfig:
    """How a race runs: its confidence, first round fraction, item-order seed and ranking."""

    confidence: float = 0.95
    first_fraction: float = 1 / 16
    seed: int = 0
    rank_by: str = PER_GB
    margin: float = 0.0  # capability points (README "Racing": practical dominance)

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin < 100.0:
            raise RaceInputError(
                f"--race-margin {self.margin}: capability points a variant may trail a smaller "
                "one and still be dropped; must be at least 0 and below 100, e.g. 2",
                option="--race-margin",
            )
        if not 0.5 <= self.confidence < 1.0:
            raise RaceInputError(
                f"--confidence {self.confidence}: must be at least 0.5 and below 1 "
                "(e.g. 0.95 for 95 %)",
                option="--confidence",
            )
        if not 0.0 < self.first_fraction <= 1.0:
            raise RaceInputError(
                f"--race-first {self.first_fraction}: the first round's share of each task's "
                "items must be in (0, 1], e.g. 0.0625",
                option="--race-first",
            )
        if self.rank_by not in RANK_BY:
            raise RaceInputError(
                f"--rank-by {self.rank_by}: a race ranks by one of {', '.join(RANK_BY)}",
                option="--rank-by",
            )

    @property
    def rounds(self) -> int:
        """R: rounds (looks) fixed before the race. 1/16 -> 5 (1/16, 1/8, 1/4, 1/2, all)."""
        return 1 + math.ceil(math.log2(1.0 / self.first_fraction) - 1e-12)

    @property
    def alpha_per_look(self) -> float:
        """The error each look may spend: (1 - confidence) / R (Bonferroni over looks).

        >>> round(RaceConfig().alpha_per_look, 4)
        0.01
        """
        return (1.0 - self.confidence) / self.rounds


def check_field(names: Sequence[str]) -> None:
    """RaceInputError unless the race has at least two distinct variants to compare."""
    if len(set(names)) < 2:
        got = ", ".join(names) or "none"
        raise RaceInputError(
            f"--race needs at least two variants to compare (got {got}); name more models, "
            "or leave out --race",
            option="--race",
        )


def item_order(task: str, item_ids: Sequence[str], seed: int) -> list[str]:
    """The task's items in the race's seeded order, the same for every variant and whatever
    order the ids come in: sorted by sha256 of "seed:task:id"."""

    def key(item: str) -> str:
        return hashlib.sha256(f"{seed}:{task}:{item}".encode()).hexdigest()

    return sorted(dict.fromkeys(item_ids), key=key)


def round_sizes(n_items: int, config: RaceConfig) -> list[int]:
    """How many of a task's items (a prefix of its order) have been answered after each round.

    >>> round_sizes(40, RaceConfig())
    [3, 5, 10, 20, 40]
    >>> round_sizes(2, RaceConfig(first_fraction=0.5))
    [1, 2]
    """
    sizes = [
        min(n_items, max(1, math.ceil(n_items * config.first_fraction * 2**r - 1e-9)))
        for r in range(config.rounds)
    ]
    sizes[-1] = n_items
    return sizes


@dataclass(frozen=True)
class ClusterMoments:
    """What a task's clusters add to its 2x2 counts: the number of clusters among the counted
    items (at least 2) and, over those clusters, the sums of products of each cluster's own
    counts (n, right_a, right_b, both): `products[j][k]` = sum_c u_c[j] * u_c[k] with
    u_c = (n_c, right_a_c, right_b_c, both_c).

    Each item's difference of normalized gains is fixed by its 2x2 cell, so a cluster's sum of
    differences is a linear function of u_c, and the clustered second moment sum_c (sum d)^2
    is the quadratic form of `products`: exact, and the same size whatever the number of
    clusters (the replays build it with one matrix product per look)."""

    groups: int
    products: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if self.groups < 2 or len(self.products) != 4 or len(self.products[3]) != 4:
            raise ValueError(f"cluster moments need at least 2 clusters and a 4x4 table: {self}")


@dataclass(frozen=True)
class TaskCounts:
    """One task's shared items of a pair of variants (A, B): how many, how many each got
    right, and how many both got right (a 2x2 table by its margins); `clusters` when the items
    fall in two or more clusters (`of_clusters`), None otherwise."""

    n: int
    right_a: int
    right_b: int
    both: int
    clusters: ClusterMoments | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        a_only, b_only = self.right_a - self.both, self.right_b - self.both
        if min(self.both, a_only, b_only, self.n - self.right_a - b_only) < 0:
            raise ValueError(f"inconsistent 2x2 counts {self}")
        if self.clusters is not None and self.clusters.products[0][0] < self.n:
            raise ValueError(f"cluster moments of fewer items than {self}")  # sum n_c^2 >= n


def of_clusters(tables: Sequence[TaskCounts]) -> TaskCounts:
    """One task's counts from its per-cluster 2x2 counts: their totals, with the clusters'
    moments when at least two clusters have items (otherwise plain counts).

    >>> t = of_clusters([TaskCounts(4, 4, 1, 1), TaskCounts(2, 0, 1, 0), TaskCounts(3, 3, 2, 2)])
    >>> t, t.clusters.groups, t.clusters.products[0]
    (TaskCounts(n=9, right_a=7, right_b=4, both=3), 3, (29, 25, 12, 10))
    """
    cells = [(t.n, t.right_a, t.right_b, t.both) for t in tables if t.n > 0]
    n, right_a, right_b, both = (sum(u[j] for u in cells) for j in range(4))
    if len(cells) < 2:
        return TaskCounts(n, right_a, right_b, both)
    products = tuple(tuple(sum(u[j] * u[k] for u in cells) for k in range(4)) for j in range(4))
    return TaskCounts(n, right_a, right_b, both, ClusterMoments(len(cells), products))


def counts_of(
    a: Sequence[bool], b: Sequence[bool], clusters: Sequence[str] | None = None
) -> TaskCounts:
    """The 2x2 counts of two aligned right/wrong sequences; per cluster (`of_clusters`) when
    `clusters` names each item's cluster.

    >>> counts_of([1, 1, 0, 0], [1, 0, 1, 0])
    TaskCounts(n=4, right_a=2, right_b=2, both=1)
    >>> counts_of([1, 1, 0, 0], [1, 0, 1, 0], ["x", "x", "y", "y"]).clusters.groups
    2
    """
    if len(a) != len(b):
        raise ValueError(f"paired verdicts need the same items: {len(a)} vs {len(b)}")
    if clusters is not None:
        if len(clusters) != len(a):
            raise ValueError(f"{len(clusters)} cluster ids for {len(a)} items")
        groups: dict[str, tuple[list[bool], list[bool]]] = {}
        for x, y, c in zip(a, b, clusters, strict=True):
            ga, gb = groups.setdefault(c, ([], []))
            ga.append(x)
            gb.append(y)
        return of_clusters([counts_of(ga, gb) for ga, gb in groups.values()])
    both = sum(1 for x, y in zip(a, b, strict=True) if x and y)
    return TaskCounts(len(a), sum(map(bool, a)), sum(map(bool, b)), both)


@dataclass(frozen=True)
class PairTest:
    """scale_a * capability(A) - scale_b * capability(B) on the shared items, its SE under
    the null, z and the two-sided p-value; `n_items` shared items in all; `clustered`: how
    many of the tasks had their SE computed clustered (floored at the plain one)."""

    diff: float
    se: float
    z: float
    p: float
    n_items: int
    clustered: int = 0


def paired_test(
    tasks: Sequence[tuple[float, TaskCounts]], *, scale_a: float = 1.0, scale_b: float = 1.0
) -> PairTest:
    """The race's paired test over (chance, counts) per task.

    diff = 100/T * sum_t [s_a max(0, g(acc_a)) - s_b max(0, g(acc_b))], g(acc) = (acc - c) /
    (1 - c): the capability (per GB with s = 1 / peak GB) as the ranking computes it.
    SE^2 = (100/T)^2 * sum_t V_t, V_t = sum_i d_i^2 / n_t^2 with d_i = s_a g(x_i) - s_b g(y_i),
    the per-item difference of normalized gains: its second moment, the variance of the mean
    difference when A and B are exchangeable on every item (the null).
    Per GB (s_a != s_b) every task also gets PSEUDO_DISCORDANT (half) an item in each of the
    two discordant cells: with no disagreement seen yet, d_i is the constant s_a - s_b and
    z = sqrt(n) whatever the memory ratio, so the smaller variant would "win" per GB after a
    handful of items on which the two happen to agree. Measured on the seven-variant offline
    run (racing_bench): without it, 17 % of 1000 replays decided some per-GB order at the
    first look (about 17 items) that the full run reverses; with it, (see README "Racing").
    Where the task's counts carry clusters (G >= 2 of them), V_t is the larger of that and the
    clustered second moment G / (G - 1) * sum_c (sum_{i in c} d_i)^2 / n_t^2 (CR1, floored at
    the plain one as metrics.clustered_se is).

    Worked example, one 2-choice task (c = 0.5), 8 items, A right on all, B on 4: gains are
    1 (right) and -1 (wrong); d = 2 on 4 items, 0 on 4; diff = 100 * (1 - 0) = 100;
    SE = 100 * sqrt(4 * 4) / 8 = 50; z = 2, p = 0.0455.

    >>> t = paired_test([(0.5, TaskCounts(8, 8, 4, 4))])
    >>> round(t.diff, 1), round(t.se, 1), round(t.z, 2), round(t.p, 4)
    (100.0, 50.0, 2.0, 0.0455)

    Clustered, one chance-0 task of 9 items in 3 clusters of 4, 2 and 3 (d = 1 where only A
    is right, -1 where only B is): X: A right on all 4, B on 1 (d = 0 1 1 1, sum 3);
    Y: B alone right on 1 of 2 (d = 0 -1, sum -1); Z: both right on 2 of 3, A alone on 1
    (d = 0 0 1, sum 1). diff = 100 * 3 / 9 = 33.3; plain SE = 100 * sqrt(5) / 9 = 24.8
    (z = 1.34); clustered SE^2 = (100/9)^2 * 3/2 * (9 + 1 + 1), SE = 45.1: z = 0.74.

    >>> x, y, z = TaskCounts(4, 4, 1, 1), TaskCounts(2, 0, 1, 0), TaskCounts(3, 3, 2, 2)
    >>> t = paired_test([(0.0, of_clusters([x, y, z]))])
    >>> round(t.diff, 1), round(t.se, 1), round(t.z, 2), t.clustered
    (33.3, 45.1, 0.74, 1)
    """
    if not tasks:
        raise ValueError("no shared tasks to compare")
    diff, var, n_items, clustered = 0.0, 0.0, 0, 0
    for chance, c in tasks:
        if c.n <= 0:
            raise ValueError("a task with no shared items")
        w = 1.0 / (1.0 - chance)
        gain_a = max(0.0, (c.right_a / c.n - chance) * w)
        gain_b = max(0.0, (c.right_b / c.n - chance) * w)
        diff += scale_a * gain_a - scale_b * gain_b
        e = chance * (scale_a - scale_b)  # the chance offset of d_i
        # d_i / w by the item's cell: both right, A only, B only, neither
        d_both, d_a, d_b, d_none = scale_a - scale_b - e, scale_a - e, -(scale_b + e), -e
        a_only, b_only = c.right_a - c.both, c.right_b - c.both
        neither = c.n - c.right_a - b_only
        second = c.both * d_both**2 + a_only * d_a**2 + b_only * d_b**2 + neither * d_none**2
        if scale_a != scale_b:
            # half an item in each discordant cell: a few concordant items give a constant d
            # (s_a - s_b on every item) and z = sqrt(n), settling the order per GB on items
            # that say nothing about how often the two disagree (PSEUDO_DISCORDANT)
            second += PSEUDO_DISCORDANT * (d_a**2 + d_b**2)
        if c.clusters is not None:
            # a cluster's sum of d / w in its counts (n, right_a, right_b, both)
            q0, q1, q2 = d_none, d_a - d_none, d_b - d_none
            q3 = d_both - d_a - d_b + d_none
            (m00, m01, m02, m03), (_, m11, m12, m13), (_, _, m22, m23), (*_, m33) = (
                c.clusters.products
            )
            sums = (
                q0 * q0 * m00
                + q1 * q1 * m11
                + q2 * q2 * m22
                + q3 * q3 * m33
                + 2 * (q0 * (q1 * m01 + q2 * m02 + q3 * m03) + q1 * (q2 * m12 + q3 * m13))
                + 2 * q2 * q3 * m23
            )
            g = c.clusters.groups
            second = max(second, g / (g - 1) * sums)
            clustered += 1
        var += w * w * second / (c.n * c.n)
        n_items += c.n
    count = len(tasks)
    diff, se = 100.0 * diff / count, 100.0 * math.sqrt(var) / count
    if se == 0.0:
        return PairTest(diff, 0.0, 0.0, 1.0, n_items, clustered)
    z = diff / se
    p = min(1.0, 2.0 * (1.0 - NormalDist().cdf(abs(z))))
    return PairTest(diff, se, z, p, n_items, clustered)


def margin_test(tasks: Sequence[tuple[float, TaskCounts]], margin: float) -> tuple[float, PairTest]:
    """(p, test) of H0: A is at least `margin` points more capable than B, against the
    alternative that its lead is under the margin: one-sided, p = 1 - Phi((margin - diff) /
    SE), with diff from `paired_test`.

    The SE is the larger of two: the second moment of the observed per-item differences
    (`paired_test`'s), and the least SE a lead of exactly `margin` can have
    (edgeeval.stats.margin_se_floor): a few items on which A and B happen to agree everywhere
    give an observed SE of 0, which would "prove" any margin; the floor does not shrink that
    way.

    Worked example: one 2-choice task (w = 2), 8 items, A right on all, B on 4 (diff 100,
    observed SE 50), margin 200 points (m = 2 = w: floor 0): z = (200 - 100) / 50 = 2,
    p = 0.0228.

    >>> p, t = margin_test([(0.5, TaskCounts(8, 8, 4, 4))], 200.0)
    >>> round(p, 4)
    0.0228

    Agreement on every one of 10 items of a 4-choice task (w = 4/3) proves no 2-point margin:
    m = 0.02, floor = 100 * sqrt(0.02 * 1.313 / 10) = 5.1 points, z = 0.39, p = 0.35.

    >>> round(margin_test([(0.25, TaskCounts(10, 5, 5, 5))], 2.0)[0], 2)
    0.35
    """
    test = paired_test(tasks)
    floor = margin_se_floor([(chance, c.n) for chance, c in tasks], margin)
    se = max(test.se, floor)
    if se == 0.0:
        return (0.0 if test.diff < margin else 1.0), test
    return 1.0 - NormalDist().cdf((margin - test.diff) / se), dataclasses.replace(test, se=se)


def holm(
    pvalues: Sequence[float], alpha: float, groups: Sequence[object] | None = None
) -> list[bool]:
    """Holm's step-down: which of `pvalues` are rejected, family-wise error at most `alpha`.

    With `groups`, hypotheses of one group are logically exclusive (at most one of them can be
    true: "A and B are equally capable" and "A and B are 2 points or more apart"), and each
    step divides alpha by the number of groups that still have a hypothesis left, not by the
    number of hypotheses left: Shaffer's (1986) sequentially rejective test, which uses the
    largest number of true hypotheses possible given those rejected so far. Without groups
    every hypothesis is its own group: plain Holm.

    >>> holm([0.001, 0.04, 0.012], 0.05)  # 0.001 <= .05/3, 0.012 <= .05/2, 0.04 <= .05
    [True, True, True]
    >>> holm([0.001, 0.04, 0.03], 0.05)  # 0.03 > .05/2: it and every larger p stay
    [True, False, False]
    >>> holm([0.02, 0.6, 0.024], 0.05)  # 0.02 > .05/3: nothing
    [False, False, False]
    >>> holm([0.02, 0.6, 0.024], 0.05, ["ab", "ab", "cd"])  # two groups: .05/2 twice
    [True, False, True]
    """
    keys = list(range(len(pvalues))) if groups is None else list(groups)
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    for i in order:
        left = {keys[j] for j in order if not rejected[j]}
        if pvalues[i] > alpha / len(left):
            break
        rejected[i] = True
    return rejected


@dataclass(frozen=True)
class Decision:
    """A settled question about a pair: `winner` is ahead of `loser` on `kind` (capability,
    or capability per GB), decided at `look` (0-based) on `n_items` shared items; `clustered`:
    how many tasks the test took clustered SEs on."""

    kind: str
    winner: str
    loser: str
    p: float
    diff: float
    look: int
    n_items: int
    clustered: int = 0


@dataclass(frozen=True)
class Stop:
    """Why a variant's accuracy work ended: beaten (by `by`, with `p`), settled, or items
    ran out; after `look` (0-based) and `n_items` items. `clustered`: the beating test took
    clustered SEs on some task (the text says so)."""

    variant: str
    reason: str
    look: int
    n_items: int
    by: str = ""
    p: float | None = None

    margin: float = 0.0  # > 0: beaten as practically dominated (within the race's margin)
    clustered: bool = False
    tied: tuple[str, ...] = ()  # settled: the variants it was shown equal to within `margin`

    @property
    def text(self) -> str:
        """ "stopped after 40 items: beaten by X (p = 0.0004)" and the like ("p = 0.008,
        clustered SEs" when the test took clustered SEs)."""
        if self.reason != BEATEN:
            return self._unbeaten_text()
        how = f"p = {self.p:.2g}" + (", clustered SEs" if self.clustered else "")
        if self.margin:
            return (
                f"stopped after {self.n_items} items: beaten by {self.by} (less memory, ahead "
                f"per GB, under {self.margin:g} points behind; {how})"
            )
        return f"stopped after {self.n_items} items: beaten by {self.by} ({how})"

    def _unbeaten_text(self) -> str:
        if self.reason == SETTLED:
            ties = f" (equal within {self.margin:g} points to {', '.join(self.tied)})"
            tail = ties if self.tied else ""
            return f"stopped after {self.n_items} items: its place is settled{tail}"
        return f"answered all {self.n_items} items"


#: The evidence for one pair at one look: (chance, counts) per shared task. It raises
#: RaceInputError (naming the task) when the two variants' items are not the same.
Evidence = Callable[[str, str], Sequence[tuple[float, TaskCounts]]]


@dataclass(frozen=True)
class RaceState:
    """Where a race stands: variants still running, decisions made, stops, pairs that could
    not be compared (with the reason), and the looks done."""

    config: RaceConfig
    memory_gb: dict[str, float]
    running: tuple[str, ...]
    decisions: dict[tuple[str, str, str], Decision] = field(default_factory=dict)
    stops: dict[str, Stop] = field(default_factory=dict)
    not_compared: dict[tuple[str, str], str] = field(default_factory=dict)
    looks: int = 0

    @property
    def finished(self) -> bool:
        return not self.running


def start(names: Sequence[str], memory_gb: dict[str, float], config: RaceConfig) -> RaceState:
    """A race over `names` with their peak memory (GB, measured in the first round)."""
    check_field(names)
    missing = [n for n in names if not (memory_gb.get(n) or 0) > 0]
    if missing:
        raise RaceInputError(
            f"no peak memory for {', '.join(missing)}: a race needs every variant measured",
            option="--race",
        )
    return RaceState(config=config, memory_gb=dict(memory_gb), running=tuple(dict.fromkeys(names)))


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _decided(state: RaceState, a: str, b: str, kind: str) -> Decision | None:
    x, y = _pair(a, b)
    return state.decisions.get((x, y, kind))


def _rank_implied(state: RaceState, a: str, b: str) -> bool:
    """True when the capability decision settles the per-GB order: the more capable one uses
    no more memory (then it is ahead per GB as well)."""
    d = _decided(state, a, b, CAPABILITY)
    return d is not None and state.memory_gb[d.winner] <= state.memory_gb[d.loser]


def _capability_open(state: RaceState, a: str, b: str) -> bool:
    """Neither is shown more capable, nor are the two shown equal within the margin."""
    return _decided(state, a, b, CAPABILITY) is None and _decided(state, a, b, TIED) is None


def pair_settled(state: RaceState, a: str, b: str) -> bool:
    """Both questions about a pair are decided: who is more capable (or that they are equal
    within the race's margin), and the ranking order."""
    if _capability_open(state, a, b):
        return False
    if state.config.rank_by == CAPABILITY:
        return True
    return _rank_implied(state, a, b) or _decided(state, a, b, PER_GB) is not None


def _open_questions(state: RaceState) -> list[tuple[str, str, str]]:
    """(a, b, kind) still to test; for WITHIN_MARGIN, a is the variant with less memory."""
    out = []
    mem = state.memory_gb
    for a, b in combinations(sorted(state.running), 2):
        if _capability_open(state, a, b):
            out.append((a, b, CAPABILITY))
            if state.config.margin > 0:
                out.append((a, b, TIED))
        if state.config.rank_by == PER_GB and not _rank_implied(state, a, b):
            if _decided(state, a, b, PER_GB) is None:
                out.append((a, b, PER_GB))
        if state.config.margin > 0 and state.config.rank_by == PER_GB and mem[a] != mem[b]:
            small, big = (a, b) if mem[a] < mem[b] else (b, a)
            if _decided(state, a, b, WITHIN_MARGIN) is None:
                out.append((small, big, WITHIN_MARGIN))
    return out


def look(state: RaceState, evidence: Evidence, *, items_done: int, last: bool = False) -> RaceState:
    """The state after one more round: test every open question among the running variants at
    alpha / R (Holm over the questions), then stop the beaten and the settled ones (and, after
    the `last` round, everyone). `items_done` is how many items each running variant has
    answered so far (all tasks)."""
    questions, tests, notes = [], [], dict(state.not_compared)
    for a, b, kind in _open_questions(state):
        try:
            shared = evidence(a, b)
        except RaceInputError as exc:
            notes[(a, b)] = str(exc)  # never decided on unpaired evidence: the pair stays open
            continue
        questions.append((a, b, kind))
        if kind == WITHIN_MARGIN:  # b (more memory) leads a by under the margin?
            p, test = margin_test(evidence(b, a), state.config.margin)
            tests.append(dataclasses.replace(test, p=p))
            continue
        if kind == TIED:  # under `margin` points apart, either way (TOST: the larger p)
            p_ab, test = margin_test(shared, state.config.margin)
            p_ba = margin_test(evidence(b, a), state.config.margin)[0]
            tests.append(dataclasses.replace(test, p=max(p_ab, p_ba)))
            continue
        scale = (1.0 / state.memory_gb[a], 1.0 / state.memory_gb[b]) if kind == PER_GB else (1, 1)
        tests.append(paired_test(shared, scale_a=scale[0], scale_b=scale[1]))
    decisions = dict(state.decisions)
    # a pair's CAPABILITY and TIED hypotheses cannot both be true: one group (holm)
    groups = [(a, b, TIED if k == CAPABILITY else k) for a, b, k in questions]
    rejected = holm([t.p for t in tests], state.config.alpha_per_look, groups)
    for (a, b, kind), test, yes in zip(questions, tests, rejected, strict=True):
        if yes:
            ordered = kind in (WITHIN_MARGIN, TIED)  # TIED: (a, b) as asked, no winner
            winner, loser = (a, b) if test.diff > 0 or ordered else (b, a)
            x, y = _pair(a, b)
            decisions[(x, y, kind)] = Decision(
                kind,
                winner,
                loser,
                test.p,
                test.diff if ordered else abs(test.diff),
                state.looks,
                test.n_items,
                test.clustered,
            )
    after = dataclasses.replace(state, decisions=decisions, not_compared=notes)
    return _stop(after, items_done=items_done, last=last)


def _margin_beaters(state: RaceState, v: str) -> list[Decision]:
    """The WITHIN_MARGIN decisions against `v` whose winner (less memory) is also ahead of it
    per GB (decided): v is practically dominated by each such winner. The larger of the
    two p-values stands for the pair."""
    out = []
    for (_x, _y, kind), d in state.decisions.items():
        if kind != WITHIN_MARGIN or d.loser != v:
            continue
        per_gb = _decided(state, d.winner, v, PER_GB)
        implied = _rank_implied(state, d.winner, v)
        if implied or (per_gb is not None and per_gb.winner == d.winner):
            both = per_gb is not None and not implied
            p = max(d.p, per_gb.p) if both else d.p  # type: ignore[union-attr]
            clustered = d.clustered + (per_gb.clustered if both else 0)  # type: ignore[union-attr]
            out.append(dataclasses.replace(d, p=p, clustered=clustered))
    return out


def _stop(state: RaceState, *, items_done: int, last: bool) -> RaceState:
    """Stop the beaten variants, then the settled ones (everyone after the last round)."""
    stops, mem = dict(state.stops), state.memory_gb
    for v in state.running:
        beaters = [
            d
            for (x, y, kind), d in state.decisions.items()
            if kind == CAPABILITY and d.loser == v and mem[d.winner] <= mem[v]
        ]
        margin = 0.0
        if not beaters:  # practically dominated (a margin): beaten too, and said so
            beaters = [d for d in _margin_beaters(state, v) if d.winner in state.running]
            margin = state.config.margin
        if beaters:
            best = min(beaters, key=lambda d: (d.p, d.winner))
            stops[v] = Stop(
                v,
                BEATEN,
                state.looks,
                items_done,
                by=best.winner,
                p=best.p,
                margin=margin,
                clustered=best.clustered > 0,
            )
    left = [v for v in state.running if v not in stops]
    for v in left:
        if all(pair_settled(state, v, u) for u in left if u != v):
            tied = tuple(
                sorted(
                    d.loser if d.winner == v else d.winner
                    for (_x, _y, kind), d in state.decisions.items()
                    if kind == TIED and v in (d.winner, d.loser)
                )
            )
            margin = state.config.margin if tied else 0.0
            stops[v] = Stop(v, SETTLED, state.looks, items_done, margin=margin, tied=tied)
    for v in state.running:
        if last and v not in stops:
            stops[v] = Stop(v, EXHAUSTED, state.looks, items_done)
    running = tuple(v for v in state.running if v not in stops)
    return dataclasses.replace(state, stops=stops, running=running, looks=state.looks + 1)


def race(
    names: Sequence[str],
    memory_gb: dict[str, float],
    config: RaceConfig,
    evidence_at: Callable[[int], Evidence],
    items_at: Callable[[int], int],
) -> RaceState:
    """A whole race where every verdict is already known (tests, replays): round r's
    evidence is `evidence_at(r)`, and `items_at(r)` items have been answered after it."""
    state = start(names, memory_gb, config)
    for r in range(config.rounds):
        last = r == config.rounds - 1
        state = look(state, evidence_at(r), items_done=items_at(r), last=last)
        if state.finished:
            break
    return state
