"""The race replayed over stored per-item verdicts: a simulation whose verdicts are real.

Each replay draws a fresh seeded item order, runs the race's rules (edgeeval.race.rules) on the
verdicts the variants really gave, and compares the race's answer with the full run's:
- order: the variants sorted by the ranking measure (capability per GB, or capability), each
  estimated on the items it answered; "strict" compares the whole sequence, "separable" only
  the pairs the full run itself tells apart (paired test, two-sided 5 %), "survivors" those
  pairs but two beaten variants (a race drops them below their beaters and does not rank them
  among themselves);
- Pareto front (capability vs peak memory), two ways: the report's (a variant is off it when
  one with no more memory is more capable beyond noise, or tied within noise and strictly
  smaller; noise = 1.96 paired SEs on the items both answered), and of point estimates (off it
  when one with no more memory has a higher capability; a variant the race beat is off it);
  "answer" is the strict order and the report's front together;
- item evaluations used: sum over variants of the items each answered / (variants x items);
- false settle: any decision of the race that contradicts the full run's own point estimate.
`null_replays` runs the same race on simulated variants with identical per-item success
probabilities, where every decision is a false one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist

import numpy as np

from edgeeval.race.rules import (
    BEATEN,
    CAPABILITY,
    PER_GB,
    TIED,
    WITHIN_MARGIN,
    ClusterMoments,
    RaceConfig,
    RaceState,
    TaskCounts,
    paired_test,
    race,
    round_sizes,
)
from edgeeval.race.verdicts import TaskVerdicts, VerdictTable
from edgeeval.stats import margin_se_floor

#: The level at which the full run "tells a pair apart" for the separable-order agreement.
SEPARABLE_P = 0.05


@dataclass(frozen=True)
class Answer:
    """What a ranking says: the order (best first) and the Pareto front."""

    order: tuple[str, ...]
    front: frozenset[str]


@dataclass(frozen=True)
class ReplaySummary:
    """Replays of one race against the full run."""

    n_replays: int
    config: RaceConfig
    full: Answer
    strict_order: float  # share of replays with the full run's exact order
    separable_order: float  # ... with every pair the full run separates in the same order
    front: float  # ... with the full run's Pareto front of point estimates
    report_front: float  # ... with the full run's Pareto front by the report's tie rule
    full_report_front: frozenset[str]
    answer: float  # ... order (strict) and the report's front both
    separable_answer: float  # ... separable order and the report's front both
    #: ... with every separable pair in the same order, but for pairs of two beaten variants
    #: (both dropped: the race ranks them below their beaters, not among themselves)
    survivor_order: float
    items_used: float  # mean share of the full run's item evaluations
    items_used_max: float
    false_settle: float  # share of replays with a decision against the full run
    stopped_after: dict[str, float]  # mean items answered per variant
    beaten: dict[str, float]  # share of replays in which the variant was beaten


def _capability(right: Sequence[int], n: Sequence[int], chance: Sequence[float]) -> float:
    gains = [max(0.0, (r / k - c) / (1.0 - c)) for r, k, c in zip(right, n, chance, strict=True)]
    return 100.0 * sum(gains) / len(gains)


#: The report's tie rule: a capability gap below TIE_Z paired SEs is a tie (report.summarize).
TIE_Z = 1.96


def report_se(tasks: Sequence[tuple[float, TaskCounts]]) -> float:
    """The paired SE of a capability difference as the report computes it (stats.
    capability_difference: per task the centred sample SD of the per-item differences of
    normalized gains over sqrt(n), combined as 100 * sqrt(sum se_t^2) / T), from 2x2 counts;
    where the counts carry clusters, per task the larger of that and the centred CR1
    G / (G - 1) * sum_c (sum_{i in c} (d_i - mean d))^2 / n^2 (metrics.clustered_se).

    Example: 10 items of a 4-choice task, A alone right on 3, B alone on 1: d = +4/3 (3x),
    -4/3 (1x), 0 (6x); sum d = 8/3, sum d^2 = 64/9; s^2 = (64/9 - (8/3)^2 / 10) / 9 = 0.711;
    SE = 100 * sqrt(0.711 / 10) = 26.67.

    >>> round(report_se([(0.25, TaskCounts(10, 5, 3, 2))]), 2)
    26.67
    """
    var = 0.0
    for chance, c in tasks:
        if c.n < 2:
            continue
        w = 1.0 / (1.0 - chance)
        a_only, b_only = c.right_a - c.both, c.right_b - c.both
        total, squares = w * (a_only - b_only), w * w * (a_only + b_only)
        task_var = max(0.0, squares - total * total / c.n) / (c.n - 1) / c.n
        if c.clusters is not None:
            # d / w = 1 (A alone right), -1 (B alone), 0: a cluster's sum is right_a - right_b;
            # sum_c (S_c - n_c m)^2 = sum S_c^2 - 2 m sum n_c S_c + m^2 sum n_c^2
            m, g, mean = c.clusters.products, c.clusters.groups, (a_only - b_only) / c.n
            sums = m[1][1] - 2 * m[1][2] + m[2][2]
            centred = sums - 2 * mean * (m[0][1] - m[0][2]) + mean * mean * m[0][0]
            task_var = max(task_var, g / (g - 1) * w * w * centred / (c.n * c.n))
        var += task_var
    return 100.0 * math.sqrt(var) / len(tasks)


def report_front(
    cap: dict[str, float], mem: dict[str, float], se: Callable[[str, str], float]
) -> frozenset[str]:
    """The report's Pareto front: the variants no other dominates, where u dominates v when
    it uses no more memory and is more capable beyond noise, or is tied within noise (gap
    below TIE_Z paired SEs, or no gap) and uses strictly less memory."""

    def dominates(u: str, v: str) -> bool:
        if u == v or mem[u] > mem[v]:
            return False
        gap = abs(cap[u] - cap[v])
        if gap == 0 or gap < TIE_Z * se(u, v):
            return mem[u] < mem[v]
        return cap[u] > cap[v]

    return frozenset(v for v in cap if not any(dominates(u, v) for u in cap))


def answer_of(
    scores: dict[str, float],
    cap: dict[str, float],
    mem: dict[str, float],
    off_front: Sequence[str] = (),
) -> Answer:
    """The order by `scores` (best first, name on a draw) and the Pareto front of `cap` vs
    `mem`; variants in `off_front` are off it whatever their estimates."""
    order = tuple(sorted(scores, key=lambda v: (-scores[v], v)))
    front = frozenset(
        v
        for v in scores
        if v not in off_front
        and not any(u != v and mem[u] <= mem[v] and cap[u] > cap[v] for u in scores)
    )
    return Answer(order, front)


class _Arrays:
    """A verdict table as arrays: per task the (variants x items) verdicts and the pairwise
    both-right products, for cumulative counts along any item order, and each item's cluster
    index (None for a task without clusters)."""

    def __init__(self, table: VerdictTable) -> None:
        self.names = list(table.variants)
        self.index = {v: i for i, v in enumerate(self.names)}
        self.pairs = list(combinations(range(len(self.names)), 2))
        self.pair_index = {p: k for k, p in enumerate(self.pairs)}
        self.chance = [t.chance for t in table.tasks]
        self.right = [self._matrix(t) for t in table.tasks]
        self.both = [
            np.array([x[i] & x[j] for i, j in self.pairs], dtype=np.int32).reshape(
                len(self.pairs), x.shape[1]
            )
            for x in self.right
        ]
        self.labels = [_labels(t) for t in table.tasks]

    def _matrix(self, task: TaskVerdicts) -> np.ndarray:
        return np.array([task.right[v] for v in self.names], dtype=np.int32).reshape(
            len(self.names), len(task.item_ids)
        )


def _labels(task: TaskVerdicts) -> np.ndarray | None:
    """Each item's cluster as an index 0..G-1, or None when the task has no clusters."""
    if task.clusters is None:
        return None
    index: dict[str, int] = {}
    return np.array([index.setdefault(c, len(index)) for c in task.clusters], dtype=np.int64)


@dataclass(frozen=True)
class _Moments:
    """One clustered task at one look: the sums over its clusters of products of their counts
    (n, right of each variant, both right of each pair), the pieces of ClusterMoments."""

    groups: int
    nn: int
    nr: list[int]  # by variant: sum_c n_c * right_c
    rr: list[list[int]]  # by variant pair: sum_c right_c(v) * right_c(u)
    nb: list[int]  # by pair: sum_c n_c * both_c
    rb: list[list[int]]  # by variant, pair: sum_c right_c(v) * both_c(pair)
    bb: list[int]  # by pair: sum_c both_c^2

    def of(self, i: int, j: int, k: int) -> ClusterMoments | None:
        """The moments of variants i (A), j (B) and their pair k."""
        if self.groups < 2:
            return None
        nr, rr, rb = self.nr, self.rr, self.rb
        return ClusterMoments(
            self.groups,
            (
                (self.nn, nr[i], nr[j], self.nb[k]),
                (nr[i], rr[i][i], rr[i][j], rb[i][k]),
                (nr[j], rr[j][i], rr[j][j], rb[j][k]),
                (self.nb[k], rb[i][k], rb[j][k], self.bb[k]),
            ),
        )


def _moments(x: np.ndarray, xx: np.ndarray, labels: np.ndarray, cuts: list[int]) -> list:
    """_Moments at each cut (prefix length) of items already in the replay's order."""
    onehot = np.eye(int(labels.max()) + 1, dtype=np.int64)[labels]
    out = []
    for cut in cuts:
        o = onehot[:cut]
        n = o.sum(axis=0)
        r = x[:, :cut].astype(np.int64) @ o
        b = xx[:, :cut].astype(np.int64) @ o
        out.append(
            _Moments(
                int((n > 0).sum()),
                int(n @ n),
                (r @ n).tolist(),
                (r @ r.T).tolist(),
                (b @ n).tolist(),
                (r @ b.T).tolist(),
                (b * b).sum(axis=1).tolist(),
            )
        )
    return out


def _replay_one(
    arr: _Arrays, mem: dict[str, float], config: RaceConfig, rng: np.random.Generator
) -> tuple[RaceState, list[list[int]], list[np.ndarray], Callable]:
    sizes, right_at, both_at, moments = [], [], [], []
    for x, xx, labels in zip(arr.right, arr.both, arr.labels, strict=True):
        n = x.shape[1]
        perm = rng.permutation(n)
        cut = np.array(round_sizes(n, config)) - 1
        sizes.append([int(c) + 1 for c in cut])
        right_at.append(np.cumsum(x[:, perm], axis=1)[:, cut])
        both_at.append(np.cumsum(xx[:, perm], axis=1)[:, cut])
        moments.append(
            None if labels is None else _moments(x[:, perm], xx[:, perm], labels[perm], sizes[-1])
        )

    def evidence_at(r: int):  # noqa: ANN202
        @functools.cache  # one look asks a pair up to three questions
        def evidence(a: str, b: str) -> list[tuple[float, TaskCounts]]:
            i, j = arr.index[a], arr.index[b]
            k = arr.pair_index[(min(i, j), max(i, j))]
            return [
                (
                    c,
                    TaskCounts(
                        s[r],
                        int(ra[i, r]),
                        int(ra[j, r]),
                        int(bb[k, r]),
                        None if mo is None else mo[r].of(i, j, k),
                    ),
                )
                for c, s, ra, bb, mo in zip(
                    arr.chance, sizes, right_at, both_at, moments, strict=True
                )
            ]

        return evidence

    def items_at(r: int) -> int:
        return sum(s[r] for s in sizes)

    state = race(arr.names, mem, config, evidence_at, items_at)
    return state, sizes, right_at, evidence_at


def _estimates(
    arr: _Arrays,
    state: RaceState,
    sizes: list[list[int]],
    right_at: list[np.ndarray],
    mem: dict[str, float],
    rank_by: str,
):
    cap, score = {}, {}
    for v, i in arr.index.items():
        r = state.stops[v].look
        cap[v] = _capability([int(ra[i, r]) for ra in right_at], [s[r] for s in sizes], arr.chance)
        score[v] = cap[v] / mem[v] if rank_by == PER_GB else cap[v]
    return cap, score


def full_answer(table: VerdictTable, rank_by: str) -> tuple[Answer, dict[str, float]]:
    """The full run's answer and each variant's capability on every item."""
    cap = {
        v: _capability(
            [sum(t.right[v]) for t in table.tasks],
            [len(t.item_ids) for t in table.tasks],
            [t.chance for t in table.tasks],
        )
        for v in table.variants
    }
    mem = table.memory_gb
    score = {v: cap[v] / mem[v] if rank_by == PER_GB else cap[v] for v in cap}
    return answer_of(score, cap, mem), cap


def _separable(table: VerdictTable, rank_by: str) -> list[tuple[str, str]]:
    """(ahead, behind) for each pair the full run separates on the ranking measure."""
    out = []
    mem = table.memory_gb
    for a, b in combinations(table.variants, 2):
        scale = (1 / mem[a], 1 / mem[b]) if rank_by == PER_GB else (1.0, 1.0)
        t = paired_test(table.counts(a, b), scale_a=scale[0], scale_b=scale[1])
        if t.p < SEPARABLE_P:
            out.append((a, b) if t.diff > 0 else (b, a))
    return out


def _false_settles(
    state: RaceState, table: VerdictTable, counts: Callable[[str, str], list] | None = None
) -> int:
    """Decisions the full run's point estimates contradict: a lead the full run does not
    show, (WITHIN_MARGIN) a loser the full run finds `margin` points or more ahead, or (TIED)
    a tie the full run finds `margin` points or more apart."""
    mem, wrong = table.memory_gb, 0
    counts = counts or table.counts
    for d in state.decisions.values():
        if d.kind == TIED:
            full = paired_test(counts(d.winner, d.loser))
            wrong += abs(full.diff) >= state.config.margin
            continue
        if d.kind == WITHIN_MARGIN:
            full = paired_test(counts(d.loser, d.winner))
            wrong += full.diff >= state.config.margin
            continue
        scale = (1 / mem[d.winner], 1 / mem[d.loser]) if d.kind == PER_GB else (1.0, 1.0)
        full = paired_test(counts(d.winner, d.loser), scale_a=scale[0], scale_b=scale[1])
        wrong += full.diff <= 0
    return wrong


def replay(table: VerdictTable, config: RaceConfig, *, n_replays: int = 1000) -> ReplaySummary:
    """`n_replays` races over `table`, seeds 0..n-1 (seed s draws replay s's item order)."""
    arr, mem = _Arrays(table), table.memory_gb
    full_counts = functools.cache(table.counts)  # the whole table's counts, once per pair
    full, full_cap = full_answer(table, config.rank_by)
    full_report_front = report_front(full_cap, mem, lambda u, v: report_se(table.counts(u, v)))
    separable = _separable(table, config.rank_by)
    total = len(table.variants) * table.n_items
    tallies = dict(strict=0, separable=0, front=0, answer=0, sep_answer=0, false=0, survivor=0)
    tallies["report_front"] = 0
    used: list[float] = []
    items = {v: 0.0 for v in table.variants}
    beaten = {v: 0 for v in table.variants}
    for seed in range(n_replays):
        state, sizes, right_at, evidence_at = _replay_one(
            arr, mem, config, np.random.default_rng(seed)
        )
        cap, score = _estimates(arr, state, sizes, right_at, mem, config.rank_by)
        off = [v for v, s in state.stops.items() if s.reason == BEATEN]
        got = answer_of(score, cap, mem, off)

        def race_se(u: str, v: str, st: RaceState = state, ev: Callable = evidence_at) -> float:
            return report_se(ev(min(st.stops[u].look, st.stops[v].look))(u, v))

        got_report_front = report_front(cap, mem, race_se)
        tallies["report_front"] += got_report_front == full_report_front
        pos = {v: k for k, v in enumerate(got.order)}
        sep_ok = all(pos[a] < pos[b] for a, b in separable)
        beaten_now = set(off)
        tallies["survivor"] += all(
            pos[a] < pos[b] for a, b in separable if not {a, b} <= beaten_now
        )
        tallies["strict"] += got.order == full.order
        tallies["separable"] += sep_ok
        tallies["front"] += got.front == full.front
        tallies["answer"] += got.order == full.order and got_report_front == full_report_front
        tallies["sep_answer"] += sep_ok and got_report_front == full_report_front
        tallies["false"] += _false_settles(state, table, full_counts) > 0
        used.append(sum(s.n_items for s in state.stops.values()) / total)
        for v, s in state.stops.items():
            items[v] += s.n_items
            beaten[v] += s.reason == BEATEN
    n = max(n_replays, 1)
    return ReplaySummary(
        n_replays=n_replays,
        config=config,
        full=full,
        strict_order=tallies["strict"] / n,
        separable_order=tallies["separable"] / n,
        front=tallies["front"] / n,
        report_front=tallies["report_front"] / n,
        full_report_front=full_report_front,
        answer=tallies["answer"] / n,
        separable_answer=tallies["sep_answer"] / n,
        survivor_order=tallies["survivor"] / n,
        items_used=float(np.mean(used)) if used else 0.0,
        items_used_max=max(used, default=0.0),
        false_settle=tallies["false"] / n,
        stopped_after={v: items[v] / n for v in items},
        beaten={v: beaten[v] / n for v in beaten},
    )


def simulated_table(
    n_variants: int,
    task_sizes: Sequence[int],
    chances: Sequence[float],
    rng: np.random.Generator,
    *,
    p_items: Sequence[np.ndarray] | None = None,
    cluster_size: int = 0,
    cluster_effect: float = 0.0,
) -> VerdictTable:
    """Variants that all answer each item right with the same probability p_i (drawn
    uniformly unless `p_items` gives them), independently: the null of the race. Memory 1, 2,
    ... GB. With `cluster_size` k, every k consecutive items make a cluster (the last may be
    smaller) that shares one drawn p (unless `p_items` gives them): the tasks' tests are
    clustered. With `cluster_effect` s > 0 as well, each variant knows each cluster better or
    worse: its logit of p is shifted by its own draw from N(0, s^2) per cluster, so variants
    are equal on average over clusters but not item by item (what clustered SEs are for)."""
    if cluster_effect > 0 and not cluster_size:
        raise ValueError("cluster_effect needs cluster_size: effects are per cluster")
    names = [f"v{k}" for k in range(n_variants)]
    tasks = []
    for t, (n, c) in enumerate(zip(task_sizes, chances, strict=True)):
        groups = tuple(f"c{i // cluster_size}" for i in range(n)) if cluster_size else None
        if p_items is not None:
            p = p_items[t]
        elif cluster_size:
            p = np.repeat(rng.uniform(0, 1, -(-n // cluster_size)), cluster_size)[:n]
        else:
            p = rng.uniform(0, 1, n)
        if cluster_effect > 0:
            shift = rng.normal(0.0, cluster_effect, (n_variants, -(-n // cluster_size)))
            logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
            p = 1 / (1 + np.exp(-(logit + np.repeat(shift, cluster_size, axis=1)[:, :n])))
        draws = rng.uniform(0, 1, (n_variants, n)) < p
        tasks.append(
            TaskVerdicts(
                f"t{t}",
                1,
                c,
                tuple(f"i{i}" for i in range(n)),
                {v: tuple(bool(x) for x in draws[k]) for k, v in enumerate(names)},
                groups,
            )
        )
    return VerdictTable(tuple(names), {v: float(k + 1) for k, v in enumerate(names)}, tuple(tasks))


def null_replays(
    n_replays: int,
    config: RaceConfig,
    *,
    n_variants: int = 3,
    task_sizes: Sequence[int] = (200, 200, 200),
    chances: Sequence[float] = (0.25, 0.5, 0.0),
    seed: int = 0,
    cluster_size: int = 0,
    cluster_effect: float = 0.0,
    clustered: bool = True,
) -> float:
    """Share of `n_replays` null races (fresh simulated verdicts each, identical per-item
    success probabilities) that declare any two variants different in capability, across
    all rounds. (Per GB they do differ: the simulated variants use 1, 2, 3... GB.) With
    `cluster_size`, items come in clusters of that many sharing one p, tested clustered
    (unless not `clustered`: the same tables tested plain); `cluster_effect` as in
    `simulated_table`."""
    rng = np.random.default_rng(seed)
    hits = 0
    for k in range(n_replays):
        table = simulated_table(
            n_variants,
            task_sizes,
            chances,
            rng,
            cluster_size=cluster_size,
            cluster_effect=cluster_effect,
        )
        if not clustered:
            plain = tuple(dataclasses.replace(t, clusters=None) for t in table.tasks)
            table = dataclasses.replace(table, tasks=plain)
        arr = _Arrays(table)
        state = _replay_one(arr, table.memory_gb, config, np.random.default_rng(k))[0]
        hits += any(d.kind == CAPABILITY for d in state.decisions.values())
    return hits / max(n_replays, 1)


@dataclass(frozen=True)
class Projection:
    """How many items (per variant, the same task mix) the race would need to settle each
    variant, projected from the full run's paired differences and SEs (SE ~ 1 / sqrt(n)):
    `need[v]` (inf when never), and the share of item evaluations a suite of `scale` times
    this one's size would use, each variant's need rounded up to the race's round grid."""

    n_items: int
    need: dict[str, float]
    shares: dict[float, float]


def settle_projection(
    table: VerdictTable, config: RaceConfig, scales: Sequence[float] = (1.0, 4.0, 16.0, 64.0)
) -> Projection:
    """The items at which each pair's questions are expected to be decided (the observed
    difference reaching the look's critical z at the projected SE, i.e. settled in about half
    of the races; Holm's and Shaffer's steps and the variants dropped on the way ignored):
    - capability: apart when |diff| / SE_n >= z(alpha / R, two-sided), or (a margin d > 0,
      |diff| < d) tied when (d - |diff|) / SE_n >= z(alpha / R, one-sided), SE floored
      (stats.margin_se_floor);
    - per GB (ranking per GB, unless the more capable one uses no more memory): apart.
    A variant stops at its first beat (a capability lead of one using no more memory) or when
    its last pair is settled. What it shows: whether a suite of this mix, however long, lets
    the race stop early on these variants (README "Racing").

    Two variants 10 points apart with SE 5 on 100 items, the same memory: apart needs
    100 * (2.576 * 5 / 10)^2 = 166 items, so at this size (100) never; at 4x (400) the loser
    is beaten, and the winner's only pair settled, at the 1/2 round: share 0.5.
    """
    n = table.n_items
    alpha = config.alpha_per_look
    z_apart = NormalDist().inv_cdf(1 - alpha / 2)
    z_tied = NormalDist().inv_cdf(1 - alpha)
    mem = table.memory_gb
    settle = {v: 0.0 for v in table.variants}
    beaten = {v: math.inf for v in table.variants}
    margin = config.margin
    for a, b in combinations(table.variants, 2):
        counts = table.counts(a, b)
        cap = paired_test(counts)
        apart = n * (z_apart * cap.se / abs(cap.diff)) ** 2 if abs(cap.diff) > 1e-9 else math.inf
        tied = math.inf
        if abs(cap.diff) < margin:
            se = max(cap.se, margin_se_floor([(c, k.n) for c, k in counts], margin))
            tied = n * (z_tied * se / (margin - abs(cap.diff))) ** 2
        pair = min(apart, tied)
        lead, trail = (a, b) if cap.diff > 0 else (b, a)
        if apart < tied and mem[lead] <= mem[trail]:
            beaten[trail] = min(beaten[trail], apart)
        elif config.rank_by == PER_GB:
            gb = paired_test(counts, scale_a=1 / mem[a], scale_b=1 / mem[b])
            per_gb = n * (z_apart * gb.se / abs(gb.diff)) ** 2 if gb.diff else math.inf
            pair = max(pair, per_gb)
        for v in (a, b):
            settle[v] = max(settle[v], pair)
    need = {v: min(beaten[v], settle[v]) for v in table.variants}
    fractions = [min(1.0, config.first_fraction * 2**r) for r in range(config.rounds)]
    shares = {}
    for scale in scales:
        used = [next((f for f in fractions if f * scale * n >= need[v]), 1.0) for v in need]
        shares[scale] = sum(used) / len(used)
    return Projection(n, need, shares)
