import pytest

from edgeeval import records as rec
from edgeeval.report.summarize import rank_rows
from tests.builders import record


def test_ranking_by_capability_per_gb_with_dominance():
    rows = rank_rows(
        [
            record("big-good", peak_gb=1.0, acc=0.85),  # cap 80, 80/GB
            record("small-ok", peak_gb=0.25, acc=0.55),  # cap 40, 160/GB
            record("mid-bad", peak_gb=0.5, acc=0.40),  # cap 20, 40/GB: dominated by small-ok
        ]
    )
    assert [r.name for r in rows] == ["small-ok", "big-good", "mid-bad"]
    assert [r.rank for r in rows] == [1, 2, 3]
    assert rows[0].capability == pytest.approx(40.0)
    assert rows[0].capability_per_gb == pytest.approx(160.0)
    assert rows[2].dominated_by == "small-ok"
    assert rows[0].dominated_by == "" and rows[1].dominated_by == ""


def test_failed_variant_is_listed_but_never_ranked_as_zero():
    rows = rank_rows(
        [
            record("crashed", peak_gb=0.1, acc=0.0, status=rec.STATUS_CRASH),
            record("fine", peak_gb=0.5, acc=0.5),
        ]
    )
    assert [r.name for r in rows] == ["fine", "crashed"]
    crashed = rows[1]
    assert crashed.rank is None and crashed.capability is None
    assert crashed.capability_per_gb is None and crashed.status == "crash"


def test_below_chance_accuracy_clamps_to_zero_capability():
    rows = rank_rows([record("guesser", peak_gb=0.5, acc=0.2)])
    assert rows[0].capability == 0.0


def test_a_task_at_100_or_0_percent_is_not_shown_as_certain():
    """2 of 2 right: the binomial SE is 0, the report shows the Wilson interval's SE (issue 22);
    an accuracy between 0 and 1 keeps its stored SE."""
    perfect, missed, middle = (
        rank_rows([record(name, peak_gb=1.0, acc=acc, n=2, acc_se=se, chance=0.0)])[0]
        for name, acc, se in (("a", 1.0, 0.0), ("b", 0.0, 0.0), ("c", 0.5, 0.5))
    )
    assert perfect.task_acc_se["t"] == pytest.approx(0.1678, abs=1e-4)
    assert missed.task_acc_se["t"] == pytest.approx(0.1678, abs=1e-4)
    assert perfect.capability_se == pytest.approx(16.78, abs=0.01)
    assert middle.task_acc_se["t"] == 0.5 and middle.capability_se == pytest.approx(50.0)
