"""Ranking on hand-built tables: noise-aware dominance, ties, budgets, failures, hosts."""

import pytest

from edgeeval import records as rec
from edgeeval.metrics import capability
from edgeeval.report.summarize import (
    WORKED_EXAMPLE,
    dominates,
    group_by_host,
    main_speed,
    noise,
    rank_label,
    rank_rows,
    summarize_record,
    thread_scaling,
    verdict,
)
from tests.builders import host, record, speed

# With chance 0.25 and acc_se 0.04, capability = (acc - 0.25) / 0.75 * 100 and its SE is
# 0.04 / 0.75 * 100 = 5.33, so two such variants are tied below 1.96 * sqrt(2) * 5.33 = 14.8.
TIE = noise(0.04 / 0.75 * 100, 0.04 / 0.75 * 100)


def by_name(rows):
    return {r.name: r for r in rows}


@pytest.mark.parametrize(
    ("table", "dominated"),
    [
        # (name, peak GB, acc[, acc SE]). Capability 60 vs 20 is beyond noise: the smaller and
        # better one dominates
        ([("small-good", 0.3, 0.70), ("big-bad", 0.6, 0.40)], {"big-bad": "small-good"}),
        # tied within noise (60.0 vs 53.3, gap 6.7 < 14.8) and smaller: still dominates
        ([("small", 0.3, 0.70), ("big", 0.6, 0.65)], {"big": "small"}),
        # tied within noise and the *bigger* one is nominally better: the smaller one still wins
        ([("small", 0.3, 0.65), ("big", 0.6, 0.70)], {"big": "small"}),
        # bigger and better beyond noise: nobody is dominated (a real trade-off)
        ([("small", 0.3, 0.40), ("big", 0.6, 0.85)], {}),
        # same memory, tied: neither dominates the other
        ([("a", 0.5, 0.70), ("b", 0.5, 0.66)], {}),
        # same memory, better beyond noise: dominated
        ([("a", 0.5, 0.85), ("b", 0.5, 0.40)], {"b": "a"}),
        # no noise at all (SE 0 on perfect scores): equal capability, the smaller one dominates
        ([("lean", 0.3, 1.0, 0.0), ("fat", 0.6, 1.0, 0.0)], {"fat": "lean"}),
        # two dominators: named by the best capability per GB (tiny: 50 / 0.2 = 250 per GB)
        ([("tiny", 0.2, 0.625), ("mid", 0.4, 0.85), ("huge", 0.9, 0.40)], {"huge": "tiny"}),
    ],
)
def test_dominance_respects_noise(table, dominated):
    rows = by_name(
        rank_rows([record(n, peak_gb=p, acc=a, acc_se=(*se, 0.04)[0]) for n, p, a, *se in table])
    )
    assert {n: r.dominated_by for n, r in rows.items() if r.dominated_by} == dominated
    assert {n for n, r in rows.items() if r.pareto} == set(rows) - set(dominated)


def test_ties_within_noise_are_shown_and_beyond_noise_are_not():
    rows = by_name(
        rank_rows(
            [
                record("a", peak_gb=0.5, acc=0.70),  # 60.0
                record("b", peak_gb=0.5, acc=0.66),  # 54.7: tied with a
                record("c", peak_gb=0.5, acc=0.50),
            ]
        )
    )  # 33.3: beyond noise
    assert rows["a"].tied_with == ("b",) and rows["b"].tied_with == ("a",)
    assert rows["c"].tied_with == ()
    assert "tied with b" in verdict(rows["a"])
    assert abs(rows["a"].capability - rows["b"].capability) < TIE
    assert abs(rows["a"].capability - rows["c"].capability) > TIE


def test_capability_per_gb_ties_share_a_rank():
    rows = rank_rows(
        [
            record("a", peak_gb=0.50, acc=0.70),  # 120 per GB, SE 10.7
            record("b", peak_gb=0.52, acc=0.70),  # 115 per GB: a tie with a
            record("c", peak_gb=1.00, acc=0.70),
        ]
    )  # 60 per GB: clearly behind
    assert [(r.name, r.rank, rank_label(r)) for r in rows] == [
        ("a", 1, "=1"),
        ("b", 1, "=1"),
        ("c", 3, "3"),
    ]


def test_a_chain_of_small_gaps_does_not_become_one_tie():
    # each neighbour is within noise of the next, but the first and the last are not
    rows = rank_rows(
        [record(f"v{i}", peak_gb=0.5, acc=0.85 - 0.04 * i, acc_se=0.02) for i in range(4)]
    )
    assert [r.rank for r in rows] == [1, 1, 3, 3]


@pytest.mark.parametrize(
    ("budget", "ranked", "over"),
    [
        (None, ["small", "mid", "big"], []),
        (0.5, ["small", "mid"], ["big"]),
        (0.25, ["small"], ["mid", "big"]),
        (0.1, [], ["small", "mid", "big"]),
    ],
)
def test_budget_ranks_only_what_fits(budget, ranked, over):
    # SE 1 point: capability per GB 200, 160, 93 are clearly apart, so ranks are not shared
    rows = rank_rows(
        [
            record("big", peak_gb=1.0, acc=0.95, acc_se=0.01),
            record("mid", peak_gb=0.5, acc=0.85, acc_se=0.01),
            record("small", peak_gb=0.2, acc=0.55, acc_se=0.01),
            record("dead", peak_gb=0.1, acc=0.0, status=rec.STATUS_CRASH),
        ],
        budget_gb=budget,
    )
    assert [r.name for r in rows if r.rank] == ranked
    assert [r.rank for r in rows if r.rank] == list(range(1, len(ranked) + 1))
    assert [r.name for r in rows if r.over_budget] == over
    assert all(verdict(r) == "over budget" for r in rows if r.over_budget)
    assert rows[-1].name == "dead" and rows[-1].rank is None  # failed: last, never ranked


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="budget_gb"):
        rank_rows([record("a", peak_gb=0.5, acc=0.5)], budget_gb=0)


@pytest.mark.parametrize(
    "status", [rec.STATUS_CRASH, rec.STATUS_ERROR, rec.STATUS_TIMEOUT, rec.STATUS_SKIPPED]
)
def test_a_failed_variant_is_shown_as_failed_and_never_ranked_as_zero(status):
    rows = rank_rows(
        [
            record("failed", peak_gb=0.05, acc=0.0, status=status),
            record("weak", peak_gb=0.9, acc=0.26),
        ]
    )
    failed = by_name(rows)["failed"]
    assert rows[-1] is failed and failed.rank is None and rank_label(failed) == "-"
    assert failed.capability is None and failed.capability_per_gb is None
    assert verdict(failed) == status
    # a failed variant dominates nothing, even though it "used" less memory
    assert by_name(rows)["weak"].dominated_by == "" and by_name(rows)["weak"].rank == 1
    assert not dominates(failed, by_name(rows)["weak"])


def test_dominance_is_judged_per_host():
    other = host("h2", "laptop")
    rows = by_name(
        rank_rows(
            [
                record("a", peak_gb=0.3, acc=0.85),
                record("b", peak_gb=0.6, acc=0.40, host_info=other),
            ]
        )
    )
    assert rows["b"].dominated_by == "" and rows["a"].tied_with == ()


def test_worked_example_in_the_report_matches_the_code():
    cap, se = capability([(0.625, 0.05, 0.25), (0.5, 0.05, 0.5)])
    assert (round(cap, 1), round(se, 1)) == (25.0, 6.0)
    assert round(cap / 0.5, 1) == 50.0 and round(se / 0.5, 1) == 12.0
    assert round(noise(se, 5.0), 1) == 15.3
    for text in ("25.0", "6.0", "50.0", "12.0", "15.3", "dominated by A"):
        assert text in WORKED_EXAMPLE


def test_headline_speed_is_the_plain_test_at_the_configured_threads():
    speeds = [
        speed("pp32", [50.0], n_threads=1),
        speed("tg8", [20.0], n_threads=1),
        speed("pp32+tg8", [30.0], n_threads=2),
        speed("tg8 @ d64", [9.0], n_threads=2),
        speed("pp32", [90.0], n_threads=2),
        speed("tg8", [35.0], n_threads=2),
    ]
    r = record("a", peak_gb=0.2, acc=0.5, speeds=speeds)  # n_threads=0: the host's 2 cores
    assert main_speed(r, "tg").avg_ts == 35.0 and main_speed(r, "pp").avg_ts == 90.0
    row = summarize_record(r)
    assert (row.pp_ts, row.tg_ts) == (90.0, 35.0)


def test_thread_scaling_reads_sweeps_and_other_runs_on_the_same_host():
    sweep = [speed("tg8", [20.0], n_threads=1), speed("tg8", [35.0], n_threads=2)]
    run = record(
        "a",
        peak_gb=0.2,
        acc=0.5,
        speeds=sweep,
        run_id="r2",
        settings=rec.RunSettings(sweep_threads=(1, 2)),
    )
    four = record(
        "a",
        peak_gb=0.2,
        acc=0.5,
        run_id="r1",
        settings=rec.RunSettings(n_threads=4),
        speeds=[speed("tg8", [50.0], n_threads=4)],
    )
    elsewhere = record(
        "a",
        peak_gb=0.2,
        acc=0.5,
        run_id="r3",
        host_info=host("h2", "x"),
        speeds=[speed("tg8", [99.0], n_threads=8)],
    )
    series = thread_scaling([run], [four, elsewhere, run])
    assert [(p.threads, p.tg_ts) for p in series["a"]] == [(1, 20.0), (2, 35.0), (4, 50.0)]


def test_group_by_host_needs_two_hosts_and_matches_file_and_settings():
    mine = [record("a", peak_gb=0.2, acc=0.5), record("b", peak_gb=0.4, acc=0.6)]
    assert group_by_host(mine, mine) == []
    laptop = host("h2", "laptop")
    theirs = [
        record("a", peak_gb=0.3, acc=0.5, host_info=laptop, run_id="x"),
        record(
            "b",
            peak_gb=0.5,
            acc=0.6,
            host_info=laptop,
            run_id="x",
            settings=rec.RunSettings(n_ctx=512),
        ),
    ]  # other settings: not comparable
    groups = group_by_host(mine, [*mine, *theirs])
    assert [(g.host.hostname, [r.name for r in g.rows]) for g in groups] == [
        ("box", ["a", "b"]),
        ("laptop", ["a"]),
    ]
    assert groups[1].run_ids == ("x",)


def test_a_batched_accuracy_phase_does_not_change_the_memory_a_variant_ranks_by():
    """With eval_batch 8 the whole run's peak holds 8 sequences' KV caches; the ranking uses
    the peak of load + speed tests (one sequence), so the two variants keep the order they
    have at batch 1. An unbatched record still ranks by its whole peak."""
    import dataclasses

    def batched(r, *, whole_gb: float, speed_gb: float):
        memory = dataclasses.replace(
            r.memory,
            peak_rss_bytes=int(whole_gb * 1e9),
            eval_batch=8,
            speed_peak_rss_bytes=int(speed_gb * 1e9),
        )
        return dataclasses.replace(r, memory=memory)

    small = batched(record("small", acc=0.55, peak_gb=1), whole_gb=0.64, speed_gb=0.25)
    large = batched(record("large", acc=0.70, peak_gb=1), whole_gb=0.94, speed_gb=0.69)
    rows = by_name(rank_rows([small, large]))
    assert rows["small"].peak_rss_gb == pytest.approx(0.25)
    assert rows["large"].peak_rss_gb == pytest.approx(0.69)
    assert rows["small"].rank == 1  # 40 / 0.25 = 160 per GB against 60 / 0.69 = 87
    alone = record("alone", acc=0.55, peak_gb=0.64)
    assert summarize_record(alone).peak_rss_gb == pytest.approx(0.64)


def test_on_cuda_the_device_memory_counts_with_the_host_peak():
    """Offloaded layers keep their weights and KV cache in device memory, outside RSS: NVML's
    figure is added, over the same span as the host peak (up to the accuracy phase when it is
    batched). Without NVML (None) the host peak alone ranks, as on CPU and Metal."""
    import dataclasses

    def on_gpu(r, *, gpu_gb: float, speed_gpu_gb: float | None = None, batch: int = 1):
        memory = dataclasses.replace(
            r.memory,
            peak_gpu_bytes=int(gpu_gb * 1e9),
            speed_peak_gpu_bytes=None if speed_gpu_gb is None else int(speed_gpu_gb * 1e9),
            eval_batch=batch,
            speed_peak_rss_bytes=int(0.2e9) if batch > 1 else None,
        )
        return dataclasses.replace(r, memory=memory)

    plain = on_gpu(record("plain", acc=0.55, peak_gb=0.3), gpu_gb=0.9)
    assert summarize_record(plain).peak_rss_gb == pytest.approx(1.2)
    batched = on_gpu(record("b", acc=0.55, peak_gb=0.3), gpu_gb=1.5, speed_gpu_gb=0.9, batch=8)
    assert summarize_record(batched).peak_rss_gb == pytest.approx(0.2 + 0.9)
    unread = on_gpu(record("u", acc=0.55, peak_gb=0.3), gpu_gb=1.5, batch=8)  # no speed-phase read
    assert summarize_record(unread).peak_rss_gb == pytest.approx(0.2 + 1.5)
    mac = dataclasses.replace(
        record("mac", acc=0.55, peak_gb=0.3),
        memory=dataclasses.replace(
            record("m", acc=0.5, peak_gb=0.3).memory, peak_footprint_bytes=int(2e9)
        ),
    )
    assert summarize_record(mac).peak_rss_gb == pytest.approx(0.3)
