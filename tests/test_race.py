"""Racing (issue 21): the stopping rule against hand-computed looks, its error control under the
null, the verdict tables it reads from a stored run, and its refusals."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from edgeeval import records as rec
from edgeeval.race import drive, rules
from edgeeval.race.replay import null_replays, replay, report_se
from edgeeval.race.rules import (
    BEATEN,
    CAPABILITY,
    EXHAUSTED,
    PER_GB,
    SETTLED,
    RaceConfig,
    RaceInputError,
    paired_test,
)
from edgeeval.race.verdicts import TaskVerdicts, VerdictTable, build_table
from edgeeval.stats import TaskItems, capability_difference
from edgeeval.store import racelog
from edgeeval.store import runs as store
from tests.builders import record


def table(rights: dict[str, list[int]], memory: dict[str, float], chance: float = 0.0):
    """One task with the given per-item verdicts per variant."""
    n = len(next(iter(rights.values())))
    task = TaskVerdicts(
        "t",
        1,
        chance,
        tuple(f"i{k}" for k in range(n)),
        {v: tuple(bool(x) for x in r) for v, r in rights.items()},
    )
    return VerdictTable(tuple(rights), memory, (task,))


def run_race(tab: VerdictTable, config: RaceConfig) -> rules.RaceState:
    """The race over `tab` in its stored order (every item identical here, so the order
    does not matter): round r answers the first round_sizes(n)[r] items."""
    sizes = rules.round_sizes(len(tab.tasks[0].item_ids), config)

    def evidence_at(r):
        return lambda a, b: tab.counts(a, b, {"t": range(sizes[r])})

    return rules.race(tab.variants, tab.memory_gb, config, evidence_at, lambda r: sizes[r])


def test_two_variants_stop_at_the_look_the_maths_gives():
    """A right on all 64 items, B on none, chance 0: after n items d_i = 1 on every item,
    diff = 100, SE = 100 * sqrt(n) / n, z = sqrt(n). Rounds answer 4, 8, 16, 32, 64 items;
    each look may spend 0.05 / 5 = 0.01 on its one question (Holm over one: p <= 0.01).
    Look 0: z = 2, p = 0.0455: open. Look 1: z = sqrt(8) = 2.83, p = 0.00468 <= 0.01: B is
    beaten after 8 items, and A, alone, is settled."""
    tab = table({"a": [1] * 64, "b": [0] * 64}, {"a": 1.0, "b": 2.0})
    config = RaceConfig(rank_by=CAPABILITY)
    assert rules.round_sizes(64, config) == [4, 8, 16, 32, 64]
    state = run_race(tab, config)
    b, a = state.stops["b"], state.stops["a"]
    assert (b.reason, b.look, b.n_items, b.by) == (BEATEN, 1, 8, "a")
    assert b.p == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(math.sqrt(8) / math.sqrt(2)))))
    assert round(b.p, 5) == 0.00468
    assert (a.reason, a.look, a.n_items) == (SETTLED, 1, 8)
    assert b.text == "stopped after 8 items: beaten by a (p = 0.0047)"


def test_three_variants_holm_moves_the_stop_one_round_later():
    """Add C (3 GB), right everywhere like A. Three questions per look: Holm's first step is
    0.01 / 3 = 0.00333. Look 1 (8 items): p = 0.00468 > 0.00333, nothing is decided. Look 2
    (16 items): z = 4, p = 6.3e-5 for A-B and C-B: B is beaten by A (C uses more memory than
    B, so only A beats it). A and C never separate: both answer all 64 items."""
    tab = table({"a": [1] * 64, "b": [0] * 64, "c": [1] * 64}, {"a": 1.0, "b": 2.0, "c": 3.0})
    state = run_race(tab, RaceConfig(rank_by=CAPABILITY))
    assert (state.stops["b"].reason, state.stops["b"].n_items, state.stops["b"].by) == (
        BEATEN,
        16,
        "a",
    )
    assert [(state.stops[v].reason, state.stops[v].n_items) for v in "ac"] == [
        (EXHAUSTED, 64),
        (EXHAUSTED, 64),
    ]
    assert state.stops["b"].p == pytest.approx(6.334e-5, rel=1e-3)
    used = sum(s.n_items for s in state.stops.values()) / (3 * 64)
    assert used == pytest.approx(0.75)


def test_per_gb_ranking_also_asks_the_order_per_gb():
    """Ranked per GB, A (1 GB) and C (3 GB), equally capable, differ per GB: d_i = 1 - 1/3 on
    every item, z = sqrt(n) again; that order is decided at look 2 with the rest (six
    questions, Holm 0.01/6 .. 0.01: 6.3e-5 passes all), but who is more capable never is."""
    tab = table({"a": [1] * 64, "b": [0] * 64, "c": [1] * 64}, {"a": 1.0, "b": 2.0, "c": 3.0})
    state = run_race(tab, RaceConfig())
    per_gb = state.decisions[("a", "c", PER_GB)]
    assert (per_gb.winner, per_gb.look, per_gb.n_items) == ("a", 2, 16)
    assert ("a", "c", CAPABILITY) not in state.decisions
    assert not rules.pair_settled(state, "a", "c")
    assert state.stops["a"].reason == EXHAUSTED


def test_a_margin_drops_the_larger_of_two_equal_variants_where_the_maths_says():
    """A (1 GB) and C (3 GB) right on every item of a chance-0 task, 256 items, rounds of 16,
    32, 64, 128, 256. Per GB, d_i = 2/3 on every item: z = sqrt(n) = 4 at look 0, decided
    (p = 6.3e-5 <= 0.01 / 3). C's capability lead is 0 with an observed SE of 0; the floor of
    a 10-point margin is 100 * sqrt(0.1 * 0.9 / n) = 30 / sqrt(n), so z = 10 / (30 / sqrt(n))
    = sqrt(n) / 3: 1.89 at 32 items (p = 0.029 > 0.01 / 2), 2.67 at 64 (p = 0.0038 <= 0.005,
    Holm's first step over the two open questions): C stops after 64 items, beaten by A. With
    no margin C answers all 256."""
    tab = table({"a": [1] * 256, "c": [1] * 256}, {"a": 1.0, "c": 3.0})
    state = run_race(tab, RaceConfig(margin=10.0))
    c = state.stops["c"]
    assert (c.reason, c.look, c.n_items, c.by) == (BEATEN, 2, 64, "a")
    assert c.p == pytest.approx(1 - 0.5 * (1 + math.erf((8 / 3) / math.sqrt(2))))
    assert "under 10 points behind" in c.text
    assert state.decisions[("a", "c", rules.WITHIN_MARGIN)].look == 2
    plain = run_race(tab, RaceConfig())
    assert (plain.stops["c"].reason, plain.stops["c"].n_items) == (EXHAUSTED, 256)


def test_agreement_on_a_few_items_proves_no_margin():
    """Ten items on which both agree give an observed SE of 0; the floor keeps the margin
    test honest (the doctest in rules.margin_test computes p = 0.35)."""
    p, test = rules.margin_test([(0.25, rules.TaskCounts(10, 5, 5, 5))], 2.0)
    assert test.se == pytest.approx(100 * math.sqrt(0.02 * (4 / 3 - 0.02) / 10))
    assert p > 0.3
    with pytest.raises(RaceInputError, match="--race-margin -1"):
        RaceConfig(margin=-1.0)


def test_paired_test_agrees_with_the_stats_module():
    """Same difference as stats.capability_difference (clamp included); the SE is the second
    moment: at least the centred paired SE times sqrt((n - 1) / n)."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        n, c = int(rng.integers(5, 40)), float(rng.choice([0.0, 0.25, 0.5]))
        a = (rng.uniform(size=n) < rng.uniform()).astype(int)
        b = (rng.uniform(size=n) < rng.uniform()).astype(int)
        sa, sb = float(rng.uniform(0.5, 2)), float(rng.uniform(0.5, 2))
        mine = paired_test([(c, rules.counts_of(a, b))], scale_a=sa, scale_b=sb)
        theirs = capability_difference(
            [TaskItems("t", tuple(a), tuple(b), c)], scale_a=sa, scale_b=sb
        )
        assert mine.diff == pytest.approx(theirs.diff)
        assert mine.se >= theirs.se * math.sqrt((n - 1) / n) - 1e-9
        plain = capability_difference([TaskItems("t", tuple(a), tuple(b), c)])
        assert report_se([(c, rules.counts_of(a, b))]) == pytest.approx(plain.se)


@pytest.mark.parametrize(
    ("n_variants", "sizes"),
    [(3, (200, 200, 200)), (2, (40,) * 6)],  # the second: the offline suite's shape
)
def test_null_races_declare_a_difference_in_at_most_5_percent(n_variants, sizes):
    """1000 seeded null races (variants with identical per-item success probabilities, fresh
    verdicts each): any capability decision in any of the five rounds is a false one."""
    chances = (0.25, 0.5, 0.0, 0.25, 0.25, 0.0)[: len(sizes)]
    config = RaceConfig(rank_by=CAPABILITY)
    rate = null_replays(
        1000, config, n_variants=n_variants, task_sizes=sizes, chances=chances, seed=21
    )
    assert rate <= 0.05


def test_the_null_check_can_fail_when_looks_are_not_corrected():
    """The same check with the error not split over looks and pairs (alpha 0.5 per look)
    declares differences far more often: the check above has teeth."""
    loose = RaceConfig(rank_by=CAPABILITY, confidence=0.5)
    assert null_replays(200, loose, n_variants=3, seed=21) > 0.05


def test_replay_of_clear_variants_agrees_with_the_full_run_and_saves_items():
    """Three variants far apart (90 %, 50 %, 10 % right on 400 items; memory 1, 2, 3 GB):
    every replay has the full run's order and front, with well under half the items."""
    rng = np.random.default_rng(0)
    rights = {
        v: list((rng.uniform(size=400) < p).astype(int))
        for v, p in (("a", 0.9), ("b", 0.5), ("c", 0.1))
    }
    tab = table(rights, {"a": 1.0, "b": 2.0, "c": 3.0})
    summary = replay(tab, RaceConfig(), n_replays=50)
    assert summary.full.order == ("a", "b", "c") and summary.full.front == {"a"}
    assert summary.full_report_front == {"a"} and summary.report_front == 1.0
    assert summary.answer == 1.0 and summary.false_settle == 0.0
    assert summary.items_used < 0.3


def test_bad_input_names_the_option_or_task():
    with pytest.raises(RaceInputError, match="--confidence 1.5"):
        RaceConfig(confidence=1.5)
    with pytest.raises(RaceInputError, match="--race needs at least two variants"):
        rules.start(["only"], {"only": 1.0}, RaceConfig())
    with pytest.raises(RaceInputError, match="--rank-by"):
        RaceConfig(rank_by="speed")


def test_unpaired_evidence_never_decides():
    """A pair whose items differ is left open, with the reason kept; nobody is beaten."""
    tab = table({"a": [1] * 64, "b": [0] * 64}, {"a": 1.0, "b": 2.0})

    def evidence(a, b):
        raise RaceInputError("task t: a and b answered different items", option="t")

    state = rules.start(tab.variants, tab.memory_gb, RaceConfig())
    for r in range(5):
        state = rules.look(state, evidence, items_done=64, last=r == 4)
    assert not state.decisions
    assert state.not_compared[("a", "b")] == "task t: a and b answered different items"
    assert {s.reason for s in state.stops.values()} == {EXHAUSTED}


def _stored(name, task, answers, version=1, harness_errors=0):
    """A record with one 2-choice task and its per-item scores (as store.items gives them)."""
    score = rec.TaskScore(
        task=task,
        version=version,
        category="x",
        chance=0.5,
        n=len(answers),
        acc=0.5,
        acc_se=0.1,
        acc_norm=0.5,
        acc_norm_se=0.1,
        elapsed_s=0.0,
        protocol="loglikelihood",
        n_harness_error=harness_errors,
    )
    base = record(name, peak_gb=1.0, acc=0.5)
    return dataclasses.replace(base, tasks=(score,)), {(task, ""): answers}


def test_a_changed_task_version_is_refused_naming_the_task():
    ra, sa = _stored("a", "facts", {"x": 1.0, "y": 0.0})
    rb, sb = _stored("b", "facts", {"x": 1.0, "y": 1.0}, version=2)
    with pytest.raises(RaceInputError, match="task facts: version 2 for b but 1 for a"):
        build_table([ra, rb], {"a": sa, "b": sb})


def test_different_items_are_refused_naming_the_task():
    ra, sa = _stored("a", "facts", {"x": 1.0, "y": 0.0})
    rb, sb = _stored("b", "facts", {"x": 1.0, "z": 1.0})
    with pytest.raises(RaceInputError, match="task facts: a has no answer to 1 items"):
        build_table([ra, rb], {"a": sa, "b": sb})


def test_an_item_a_harness_could_not_judge_is_left_out_for_all():
    ra, sa = _stored("a", "facts", {"x": 1.0, "y": 0.0, "w": 1.0})
    rb, sb = _stored("b", "facts", {"x": 0.0, "y": 1.0}, harness_errors=1)
    tab = build_table([ra, rb], {"a": sa, "b": sb})
    assert tab.tasks[0].item_ids == ("x", "y") and tab.dropped_items == 1
    assert tab.tasks[0].right == {"a": (True, False), "b": (False, True)}


# --- the race as the bench runs it: rounds measured, logged, resumed ----------------------


def fake_measure(tab: VerdictTable, calls: list, fail_at: int | None = None):
    """A stand-in for the worker: the stored verdicts of the items asked for."""

    def measure(v, only_ids, r):
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        calls.append((v, r, sum(len(x) for x in only_ids.values())))
        verdicts = {
            t.task: {i: t.right[v][t.item_ids.index(i)] for i in only_ids[t.task]}
            for t in tab.tasks
        }
        return drive.RoundResult(verdicts, memory_gb=tab.memory_gb[v] if r == 0 else None)

    return measure


def clear_table() -> VerdictTable:
    rng = np.random.default_rng(5)
    rights = {
        v: list((rng.uniform(size=160) < p).astype(int))
        for v, p in (("a", 0.9), ("b", 0.5), ("c", 0.85))
    }
    return table(rights, {"a": 1.0, "b": 2.0, "c": 3.0})


def test_a_bench_race_logs_each_round_and_stop(tmp_path):
    tab, calls = clear_table(), []
    items = {"t": list(tab.tasks[0].item_ids)}
    run_id = store.new_run_id()
    state = drive.run_race(
        run_id,
        tab.variants,
        items,
        {"t": 0.0},
        RaceConfig(),
        fake_measure(tab, calls),
        root=tmp_path,
    )
    stops = racelog.race_stops(run_id, tmp_path)
    assert set(stops) == {"a", "b", "c"}
    assert stops["b"].reason == BEATEN and stops["b"].text.startswith("stopped after ")
    assert stops["b"].text == state.stops["b"].text
    # every variant answered exactly the rounds it was running for, never an item twice
    answered = {v: [n for w, _, n in calls if w == v] for v in tab.variants}
    assert answered["b"][-1] == stops["b"].n_items
    lines = racelog.read_race(run_id, tmp_path)
    assert lines[0].kind == racelog.START and lines[0].variants == ("a", "b", "c")


def test_an_interrupted_race_resumes_to_the_same_result(tmp_path):
    tab = clear_table()
    items = {"t": list(tab.tasks[0].item_ids)}
    whole = drive.run_race(
        store.new_run_id(),
        tab.variants,
        items,
        {"t": 0.0},
        RaceConfig(),
        fake_measure(tab, []),
        root=tmp_path,
    )
    run_id, first = store.new_run_id(), []
    with pytest.raises(KeyboardInterrupt):
        drive.run_race(
            run_id,
            tab.variants,
            items,
            {"t": 0.0},
            RaceConfig(),
            fake_measure(tab, first, fail_at=4),
            root=tmp_path,
        )
    second: list = []
    resumed = drive.run_race(
        run_id,
        tab.variants,
        items,
        {"t": 0.0},
        RaceConfig(),
        fake_measure(tab, second),
        root=tmp_path,
    )
    assert resumed.stops == whole.stops and resumed.decisions == whole.decisions
    assert not set(first) & set(second)  # no round of a variant measured twice
    stops = [x for x in racelog.read_race(run_id, tmp_path) if x.kind == racelog.STOP]
    assert sorted(x.variant for x in stops) == ["a", "b", "c"]  # each stop logged once


def test_the_race_rules_replays_and_tables_load_no_stage():
    """The decision logic is pure: rules, replay and verdicts reach only the leaves (and each
    other), never the engine, the runner or the store."""
    from tests.test_architecture import LEAVES, PKG, reaches, unit_of

    for name in ("rules.py", "replay.py", "verdicts.py"):
        reached = reaches(PKG / "race" / name)
        units = {unit_of(p) for p in reached}
        assert units <= LEAVES | {"race", "stats"}, (name, units)
        assert {p.name for p in reached if unit_of(p) == "race"} <= {
            "__init__.py",
            "rules.py",
            "verdicts.py",
        }


def test_the_report_marks_a_variant_the_race_stopped(tmp_path):
    """report.md's status column says why a variant stopped early, from the run's race log;
    a variant that answered every item is not marked."""
    from edgeeval.report.render import render_run

    root = tmp_path / "reports"
    store.write_manifest("r1", {"run_id": "r1"}, root)
    for name, gb, acc in (("a", 1.0, 0.9), ("b", 2.0, 0.3)):
        store.save_record(record(name, peak_gb=gb, acc=acc), root=root)
    stop = rules.Stop("b", BEATEN, 1, 20, by="a", p=0.00042)
    racelog.append_race_line(
        "r1",
        racelog.RaceLine(
            racelog.STOP, variant="b", reason=BEATEN, by="a", p=stop.p, n_items=20, text=stop.text
        ),
        root,
    )
    racelog.append_race_line(
        "r1", racelog.RaceLine(racelog.STOP, variant="a", reason=EXHAUSTED, text="x"), root
    )
    _, rows, paths = render_run("r1", root=root)
    marked = {r.name: r.race_stop for r in rows}
    assert marked == {"a": "", "b": "stopped after 20 items: beaten by a (p = 0.00042)"}
    assert "beaten by a (p = 0.00042)" in paths["md"].read_text()


# --- `edgeeval bench --race`: the rounds through the bench's own measuring path ------------


def test_bench_race_measures_rounds_stores_each_and_marks_the_report(tmp_path, monkeypatch):
    """race.bench with the worker replaced by stored verdicts (no model): each round asks the
    worker for the shared prefix of a real task's items, the items of earlier rounds are not
    asked again, every round's record is stored, the beaten variant stops, the report says so."""
    from edgeeval.race import bench as race_bench
    from edgeeval.report.render import render_run
    from edgeeval.run.runner import BenchOne
    from edgeeval.settings import package_root
    from tests.builders import HOST

    monkeypatch.setenv("EDGEEVAL_REPORTS", str(tmp_path))
    run_settings = rec.RunSettings(tasks=("arith",), task_limit=64, race_confidence=0.95)
    items, _ = race_bench.race_items(run_settings, package_root())
    ids = items["arith"]
    right = {"a": set(ids), "b": set(), "c": set(ids[::2])}
    memory = {"a": 1.0, "b": 2.0, "c": 3.0}
    asked: dict[str, list[str]] = {v: [] for v in right}
    run_id = store.new_run_id()

    def fake_bench_one(variant, settings, get_file, *, attempt=None, only_ids=None, **_):
        attempt(f"key-{variant.name}", variant.name)
        new = [i for i in only_ids["arith"] if i not in asked[variant.name]]
        asked[variant.name] += new
        samples = [
            rec.SampleResult(
                "arith", i, 0, (0.0, -1.0) if i in right[variant.name] else (-1.0, 0.0), (1, 1)
            )
            for i in new
        ]
        n = len(asked[variant.name])
        acc = sum(i in right[variant.name] for i in asked[variant.name]) / n
        base = record(
            variant.name,
            peak_gb=memory[variant.name],
            acc=acc,
            n=n,
            settings=settings,
            run_id=run_id,
        )
        return BenchOne(base, samples, [])

    monkeypatch.setattr(race_bench, "bench_one", fake_bench_one)
    store.write_manifest(run_id, {"run_id": run_id})
    variants = [type("V", (), {"name": v})() for v in ("a", "b", "c")]
    state = race_bench.race_bench(
        variants,
        run_settings,
        run_id=run_id,
        host=HOST,
        force=False,
        root=package_root(),
        get_file=lambda v: None,
        progress=lambda _: None,
    )
    assert state.stops["b"].reason == BEATEN and state.stops["b"].by == "a"
    assert len(set(asked["b"])) == len(asked["b"]) == state.stops["b"].n_items < len(ids)
    assert set(asked["b"]) <= set(asked["a"]) and set(asked["b"]) <= set(asked["c"])  # shared
    assert all(len(set(asked[v])) == len(asked[v]) for v in asked)  # no item asked twice
    stored = list(store.read_jsonl(store.run_dir(run_id) / "records.jsonl", rec.ModelRecord))
    assert len([r for r in stored if r.variant.name == "b"]) == state.stops["b"].look + 1
    _, rows, paths = render_run(run_id)
    assert {r.name: r.race_stop for r in rows} == {
        v: (stop.text if stop.reason != EXHAUSTED else "") for v, stop in state.stops.items()
    }
    assert state.stops["c"].reason == BEATEN  # c: more memory than a and less capable
    assert "beaten by a" in paths["md"].read_text()


# --- clustered tests: where a task's items come in clusters (its `cluster_by`) --------------


def clustered_table(rights, memory, clusters, chance=0.0):
    """`table`, with each item's cluster."""
    tab = table(rights, memory, chance)
    task = dataclasses.replace(tab.tasks[0], clusters=tuple(clusters))
    return dataclasses.replace(tab, tasks=(task,))


def test_clustered_paired_test_against_hand_computed_tables():
    """One chance-0 task of 9 items in clusters of 4, 2 and 3 (A, B right):
    X = 11 11 10 10 (A alone right on 3), Y = 00 01 (B alone on 1), Z = 11 11 10.
    Capability: d = 1 (A alone), -1 (B alone), 0; cluster sums 3, -1, 1; diff = 100 * 3/9;
    plain SE = 100 * sqrt(5) / 9 = 24.85; clustered SE^2 = (100/9)^2 * 3/2 * (9 + 1 + 1):
    SE = 45.13. Per GB (A 1 GB, B 2 GB: d = 1/2 both right, 1 A alone, -1/2 B alone):
    cluster sums 3.5, -0.5, 2; diff = 100 * 5/9 = 55.56; plain sum d^2 = 3/4 + 4 + 1/4 = 5,
    SE 24.85; clustered 3/2 * (12.25 + 0.25 + 4) = 24.75: SE = 100 * sqrt(24.75) / 9 = 55.28."""
    x, y, z = (
        rules.TaskCounts(4, 4, 1, 1),
        rules.TaskCounts(2, 0, 1, 0),
        rules.TaskCounts(3, 3, 2, 2),
    )
    counts = rules.of_clusters([x, y, z])
    assert counts == rules.counts_of(
        [1, 1, 1, 1, 0, 0, 1, 1, 1], [1, 0, 0, 0, 0, 1, 1, 1, 0], list("XXXXYYZZZ")
    )
    cap = paired_test([(0.0, counts)])
    assert cap.diff == pytest.approx(100 / 3)
    assert cap.se == pytest.approx(100 * math.sqrt(1.5 * 11) / 9)
    assert cap.clustered == 1
    plain = paired_test([(0.0, rules.TaskCounts(9, 7, 4, 3))])
    assert plain.se == pytest.approx(100 * math.sqrt(5) / 9) and plain.clustered == 0
    per_gb = paired_test([(0.0, counts)], scale_a=1.0, scale_b=0.5)
    assert per_gb.diff == pytest.approx(500 / 9)
    assert per_gb.se == pytest.approx(100 * math.sqrt(24.75) / 9)
    # the margin test (H0: A leads by 50 points or more) takes the clustered SE too
    p, margin = rules.margin_test([(0.0, counts)], 50.0)
    assert margin.se == pytest.approx(cap.se) and margin.clustered == 1
    assert p == pytest.approx(1 - 0.5 * (1 + math.erf((50 - 100 / 3) / cap.se / math.sqrt(2))))
    # a second, unclustered task adds its plain second moment: SE = 100/2 * sqrt(v1 + v2)
    two = paired_test([(0.0, counts), (0.0, rules.TaskCounts(4, 4, 0, 0))])
    assert two.se == pytest.approx(50 * math.sqrt(16.5 / 81 + 4 / 16)) and two.clustered == 1


def test_a_clustered_second_moment_below_the_plain_one_is_floored():
    """Clusters P = (A alone, B alone), Q the same, R = (A alone): cluster sums 0, 0, 1, so
    CR1 = 3/2 * 1 / 25 is below the plain 5 / 25: the SE stays the plain 100 * sqrt(5) / 5."""
    counts = rules.counts_of([1, 0, 1, 0, 1], [0, 1, 0, 1, 0], list("PPQQR"))
    test = paired_test([(0.0, counts)])
    assert counts.clusters is not None and counts.clusters.groups == 3
    assert test.se == pytest.approx(100 * math.sqrt(5) / 5) and test.clustered == 1
    # one cluster only: plain counts, nothing to cluster
    assert rules.counts_of([1, 0], [0, 1], ["P", "P"]).clusters is None


def test_clustered_paired_test_matches_per_item_sums():
    """The cluster moments give exactly G/(G-1) * sum_c (sum_{i in c} d_i)^2 / n^2 computed
    item by item (any chance, any scales), floored at the plain second moment; and the
    replays' report SE is stats.capability_difference's clustered paired SE."""
    rng = np.random.default_rng(11)
    for _ in range(30):
        n, c = int(rng.integers(6, 50)), float(rng.choice([0.0, 0.25, 0.5]))
        a = (rng.uniform(size=n) < rng.uniform()).astype(int)
        b = (rng.uniform(size=n) < rng.uniform()).astype(int)
        groups = [f"g{k}" for k in rng.integers(0, int(rng.integers(2, 8)), n)]
        sa, sb = float(rng.uniform(0.5, 2)), float(rng.uniform(0.5, 2))
        d = (sa * (a - c) - sb * (b - c)) / (1 - c)
        sums = {g: 0.0 for g in groups}
        for g, x in zip(groups, d, strict=True):
            sums[g] += x
        big = len(sums)
        # per GB, half an item in each discordant cell (rules.PSEUDO_DISCORDANT)
        d_a, d_b = (sa * (1 - c) + sb * c) / (1 - c), -(sb * (1 - c) + sa * c) / (1 - c)
        pseudo = rules.PSEUDO_DISCORDANT * (d_a**2 + d_b**2) if sa != sb else 0.0
        plain = (float(np.sum(d * d)) + pseudo) / n**2
        want = (
            plain
            if big < 2
            else max(plain, big / (big - 1) * sum(v * v for v in sums.values()) / n**2)
        )
        counts = rules.counts_of(a, b, groups)
        got = paired_test([(c, counts)], scale_a=sa, scale_b=sb)
        assert got.se == pytest.approx(100 * math.sqrt(want))
        assert got.clustered == (big >= 2)
        theirs = capability_difference([TaskItems("t", tuple(a), tuple(b), c, tuple(groups))])
        assert report_se([(c, counts)]) == pytest.approx(theirs.se)


def test_a_few_concordant_items_settle_no_order_per_gb():
    """Both right on all 17 items (chance 0.25), 0.826 and 0.849 GB: without the pseudo
    discordant items d_i = s_a - s_b on every item and z = sqrt(17) = 4.1 (decided at any
    look); with half an item in each discordant cell, d_a = 1.211 + 0.25 * 1.178 / 0.75 =
    1.60, d_b = -(1.178 + 0.25 * 1.211 / 0.75) = -1.58, second = 17 * 0.033^2 + 0.5 * (2.56
    + 2.50) = 2.55, SE = 100 * sqrt(2.55) / 17 = 9.4 against a diff of 3.3: z = 0.35."""
    counts = rules.TaskCounts(17, 17, 17, 17)
    test = paired_test([(0.25, counts)], scale_a=1 / 0.826, scale_b=1 / 0.849)
    assert test.z == pytest.approx(0.35, abs=0.01)
    assert paired_test([(0.25, counts)]).p == 1.0  # capability: no discordance, no evidence


def test_clustering_delays_the_stop_by_one_round_as_the_maths_says():
    """A right on all 64 items, B on none, chance 0, items in clusters of 2 (in the stored
    order, which the helper uses). Every d_i = 1, so a cluster's sum is its size 2 and after n
    items (G = n / 2 clusters): clustered SE^2 = (100/n)^2 * G/(G-1) * 4G = (100/n)^2 * 2n *
    G/(G-1), z^2 = n^2 / (2n G/(G-1)) = G - 1 = n/2 - 1 (plain: z^2 = n). One question per
    look at p <= 0.01 (|z| >= 2.576). Plain: look 1 (8 items) z = 2.83, B beaten after 8.
    Clustered: look 1 z = sqrt(3) = 1.73 (p = 0.083), open; look 2 (16 items) z = sqrt(7) =
    2.646, p = 0.0082: B beaten after 16, one round later, and its line says so."""
    rights = {"a": [1] * 64, "b": [0] * 64}
    memory = {"a": 1.0, "b": 2.0}
    config = RaceConfig(rank_by=CAPABILITY)
    tab = clustered_table(rights, memory, [f"c{k // 2}" for k in range(64)])
    plain = run_race(table(rights, memory), config)
    assert (plain.stops["b"].look, plain.stops["b"].n_items) == (1, 8)
    state = run_race(tab, config)
    b = state.stops["b"]
    assert (b.reason, b.look, b.n_items, b.by, b.clustered) == (BEATEN, 2, 16, "a", True)
    assert b.p == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(math.sqrt(7 / 2)))))
    assert round(b.p, 4) == 0.0082
    assert b.text == "stopped after 16 items: beaten by a (p = 0.0082, clustered SEs)"
    assert plain.stops["b"].text == "stopped after 8 items: beaten by a (p = 0.0047)"


def test_the_live_race_tests_a_clustered_task_clustered(tmp_path):
    """drive.run_race with the task's clusters decides on the clustered counts of the prefix
    answered so far (the same stop as rules.race over those counts), later than without."""
    rights = {"a": [1] * 64, "b": [0] * 64}
    tab = clustered_table(rights, {"a": 1.0, "b": 2.0}, [f"c{k // 4}" for k in range(64)])
    ids = list(tab.tasks[0].item_ids)
    cluster = dict(zip(ids, tab.tasks[0].clusters, strict=True))
    config = RaceConfig(rank_by=CAPABILITY)

    def live(clusters):
        return drive.run_race(
            store.new_run_id(),
            tab.variants,
            {"t": ids},
            {"t": 0.0},
            config,
            fake_measure(tab, []),
            root=tmp_path,
            clusters=clusters,
        )

    order = rules.item_order("t", ids, config.seed)
    sizes = rules.round_sizes(64, config)

    def evidence_at(r):
        prefix = order[: sizes[r]]
        return lambda a, b: [
            (
                0.0,
                rules.counts_of(
                    [rights[a][ids.index(i)] for i in prefix],
                    [rights[b][ids.index(i)] for i in prefix],
                    [cluster[i] for i in prefix],
                ),
            )
        ]

    want = rules.race(tab.variants, tab.memory_gb, config, evidence_at, lambda r: sizes[r])
    got = live({"t": cluster})
    assert got.stops == want.stops and got.stops["b"].clustered
    assert got.stops["b"].look > live(None).stops["b"].look


def test_replays_on_a_clustered_table_use_the_clustered_counts():
    """The replays' cluster moments (one matrix product per look) equal those counted item by
    item along the same seeded order, and 50 replays on a clustered table run."""
    from edgeeval.race import replay as rp

    rng = np.random.default_rng(4)
    tab = rp.simulated_table(3, (48, 30), (0.25, 0.0), rng, cluster_size=5)
    tab = dataclasses.replace(
        tab, tasks=(tab.tasks[0], dataclasses.replace(tab.tasks[1], clusters=None))
    )
    arr, config = rp._Arrays(tab), RaceConfig()
    evidence_at = rp._replay_one(arr, tab.memory_gb, config, np.random.default_rng(7))[3]
    orders = np.random.default_rng(7)
    perms = [orders.permutation(len(t.item_ids)) for t in tab.tasks]
    for r in range(config.rounds):
        ids = {
            t.task: list(p[: rules.round_sizes(len(t.item_ids), config)[r]])
            for t, p in zip(tab.tasks, perms, strict=True)
        }
        for a, b in (("v0", "v1"), ("v2", "v0")):
            assert evidence_at(r)(a, b) == tab.counts(a, b, ids)
    assert evidence_at(config.rounds - 1)("v0", "v1")[0][1].clusters.groups == 10
    summary = replay(tab, RaceConfig(rank_by=CAPABILITY), n_replays=50)
    assert summary.n_replays == 50 and 0.0 < summary.items_used <= 1.0


def test_null_races_on_clustered_tasks_declare_a_difference_in_at_most_5_percent():
    """The null check on tasks in clusters of 10 items sharing one success probability, tested
    clustered: at most 5 % of 1000 races. With variant-by-cluster effects (each variant's logit
    shifted per cluster by N(0, 1): equal on average over clusters, not item by item) the plain
    test declares a difference in more than 5 % of the same races (7.1 % at this seed), the
    clustered one still in at most 5 % (0.4 %): what clustering is for."""
    config = RaceConfig(rank_by=CAPABILITY)

    def rate(effect, clustered):
        return null_replays(
            1000,
            config,
            seed=21,
            cluster_size=10,
            cluster_effect=effect,
            clustered=clustered,
        )

    assert rate(0.0, True) <= 0.05
    assert rate(1.0, True) <= 0.05 < rate(1.0, False)


def test_verdict_tables_and_bench_items_carry_clusters():
    """build_table takes each task's clusters from store.items (RunItems.clusters_of), aligned
    with the items kept; the bench's race reads a clustered task's clusters from its items
    (pydoc-cloze: by topic) and none for a task without (arith)."""
    from edgeeval.race.bench import race_tasks
    from edgeeval.settings import package_root
    from edgeeval.store.items import ATTRIBUTED, RunItems

    ra, sa = _stored("a", "facts", {"x": 1.0, "y": 0.0, "z": 1.0})
    rb, sb = _stored("b", "facts", {"x": 0.0, "y": 1.0, "z": 1.0})
    got = RunItems(
        "r", ATTRIBUTED, clusters={("facts", "x"): "p", ("facts", "y"): "q", ("facts", "z"): "p"}
    )
    tab = build_table([ra, rb], {"a": sa, "b": sb}, got.clusters_of)
    assert tab.tasks[0].item_ids == ("x", "y", "z") and tab.tasks[0].clusters == ("p", "q", "p")
    assert tab.counts("a", "b")[0][1].clusters.groups == 2
    assert build_table([ra, rb], {"a": sa, "b": sb}).tasks[0].clusters is None
    settings = rec.RunSettings(tasks=("pydoc-cloze", "arith"), task_limit=40)
    items, _, clusters = race_tasks(settings, package_root())
    assert set(clusters) == {"pydoc-cloze"} and set(clusters["pydoc-cloze"]) == set(
        items["pydoc-cloze"]
    )
    assert len(set(clusters["pydoc-cloze"].values())) >= 2


def test_the_race_options_reach_the_race_and_refuse_without_race():
    from edgeeval.cli.bench import run_settings_from_args
    from edgeeval.cli.main import build_parser
    from edgeeval.errors import ConfigError
    from edgeeval.race.bench import race_config

    parse = build_parser().parse_args
    got = run_settings_from_args(
        parse(["bench", "--race", "--race-by", "capability", "--race-margin", "2"])
    )
    config = race_config(got)
    assert (config.rank_by, config.margin, config.confidence) == (CAPABILITY, 2.0, 0.95)
    assert race_config(run_settings_from_args(parse(["bench", "--race"]))).rank_by == PER_GB
    for extra, option in (
        (["--race-by", "capability"], "--race-by"),
        (["--race-margin", "2"], "--race-margin"),
        (["--confidence", "0.9"], "--confidence"),
    ):
        with pytest.raises(ConfigError, match=f"{option} .* add --race"):
            run_settings_from_args(parse(["bench", *extra]))
    with pytest.raises(ConfigError, match="--race-margin -1"):
        run_settings_from_args(parse(["bench", "--race", "--race-margin", "-1"]))


def test_two_equal_variants_stop_as_tied_where_the_maths_says():
    """With `--race-margin 2`: A and C right on the same 512 of 1024 items (chance 0): their
    difference is 0 with an
    observed SE of 0, so the tie test (TOST against 2 points) takes the floor of a 2-point
    gap, 100 * sqrt(0.02 * 0.98 / n) = 14 / sqrt(n): z = 2 / (14 / sqrt(n)) = sqrt(n) / 7.
    Rounds answer 64, 128, 256, 512, 1024 items; the pair is one group of the look (its
    "equal" and "apart" hypotheses cannot both hold), so p <= 0.01. At 256 items z = 2.29,
    p = 0.0111: open; at 512 z = 3.23, p = 0.00061: tied at look 3, and both stop there,
    settled, with half the items. Without the tie they could only run out of items."""
    right = [1, 0] * 512
    tab = table({"a": right, "c": right}, {"a": 1.0, "c": 2.0})
    config = RaceConfig(rank_by=CAPABILITY, margin=2.0)
    assert rules.round_sizes(1024, config) == [64, 128, 256, 512, 1024]
    state = run_race(tab, config)
    tie = state.decisions[("a", "c", rules.TIED)]
    z = 2 / (100 * math.sqrt(0.02 * 0.98 / 512))
    assert tie.p == pytest.approx(1 - 0.5 * (1 + math.erf(z / math.sqrt(2))))
    assert (tie.look, tie.n_items, round(tie.p, 5)) == (3, 512, 0.00061)
    assert [(state.stops[v].reason, state.stops[v].n_items) for v in "ac"] == [
        (SETTLED, 512),
        (SETTLED, 512),
    ]
    assert rules.pair_settled(state, "a", "c")
    assert ("a", "c", CAPABILITY) not in state.decisions
    assert state.stops["a"].text == (
        "stopped after 512 items: its place is settled (equal within 2 points to c)"
    )
    plain = run_race(tab, RaceConfig(rank_by=CAPABILITY))  # no margin: no tie, all items
    assert [(plain.stops[v].reason, plain.stops[v].n_items) for v in "ac"] == [
        (EXHAUSTED, 1024),
        (EXHAUSTED, 1024),
    ]


def test_a_pair_two_points_apart_is_never_tied():
    """Margin 2: A right on the first 13 of every 25 items, C on the first 12 (4 points apart,
    twice the margin, the discordant items spread evenly): the tie is never declared, and the
    lead is (A beats C; they use the same memory)."""
    a = [int(i % 25 < 13) for i in range(1024)]
    c = [int(i % 25 < 12) for i in range(1024)]
    tab = table({"a": a, "c": c}, {"a": 1.0, "c": 1.0})
    state = run_race(tab, RaceConfig(rank_by=CAPABILITY, margin=2.0))
    assert ("a", "c", rules.TIED) not in state.decisions
    assert state.stops["c"].reason == BEATEN and state.stops["c"].by == "a"


def test_the_settle_projection_by_hand():
    """A right on 60 of 100 chance-0 items, B on 50 of them (10 discordant, all A's), the
    same memory, ranked by capability. diff = 10 points, paired SE (second moment) =
    100 * sqrt(10) / 100 = 3.162; apart at alpha / R = 0.01: 100 * (2.5758 * 3.162 / 10)^2 =
    66.3 items, and A's only pair is settled then too. At this size both need the last round
    (50 < 66.3 <= 100: share 1); at 4x (400 items) the 1/4 round (66.3 <= 100): share 0.25."""
    from edgeeval.race.replay import settle_projection

    a = [1] * 60 + [0] * 40
    b = [1] * 50 + [0] * 50
    tab = table({"a": a, "b": b}, {"a": 1.0, "b": 1.0})
    proj = settle_projection(tab, RaceConfig(rank_by=CAPABILITY), scales=(1.0, 4.0))
    assert proj.need["b"] == pytest.approx(100 * (2.5758293 * math.sqrt(10) / 10) ** 2)
    assert round(proj.need["b"], 1) == 66.3
    assert proj.need["a"] == pytest.approx(proj.need["b"])  # its only pair, settled then
    assert proj.shares[1.0] == 1.0
    assert proj.shares[4.0] == pytest.approx((0.25 + 0.25) / 2)


def test_survivor_order_leaves_out_the_order_among_the_beaten():
    """A right on all 800 items; Y on 400, X on 384 of those (Y - X = 2 points, 16 discordant:
    the full run separates them, z = 2 / 0.5 = 4). A beats both at the first look (50 items,
    z about 5), where X and Y often tie (no discordant item among the 50 in about a third of
    the orders) and a tie sorts X first: the separable order then disagrees, the survivors'
    order (which leaves out a pair of two beaten variants) never does."""
    y = [1] * 400 + [0] * 400
    x = [1] * 384 + [0] * 416
    tab = table({"a": [1] * 800, "x": x, "y": y}, {"a": 1.0, "x": 2.0, "y": 2.0})
    s = replay(tab, RaceConfig(rank_by=CAPABILITY), n_replays=200)
    assert s.beaten == {"a": 0.0, "x": 1.0, "y": 1.0}
    assert s.survivor_order == 1.0
    assert 0.2 < 1 - s.separable_order < 0.6
