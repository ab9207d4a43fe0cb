"""Per-item attribution (store.items), pairs compared on shared items (report.paired), the
ranking's ties on paired SEs, and the answer-first report (report.answer)."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest

from edgeeval import records as rec
from edgeeval.errors import UnattributedItemsError
from edgeeval.metrics import binomial_se, score_samples
from edgeeval.report.answer import answer_section, comparison_section, power_section
from edgeeval.report.paired import PAIRED, UNPAIRED, Pair, load_pairing, paired_ses, pairing
from edgeeval.report.render import render_run
from edgeeval.report.summarize import rank_rows
from edgeeval.store import items as store_items
from edgeeval.store import runs as store
from tests.builders import record

N = 200
RIGHT = (-1.0, -2.0, -3.0, -4.0)  # gold 0 has the highest log-likelihood
WRONG = (-4.0, -1.0, -2.0, -3.0)


def mc_items(right: set[int], task: str = "t") -> list[rec.SampleResult]:
    return [
        rec.SampleResult(task, f"{task}-{i:04d}", 0, RIGHT if i in right else WRONG, (1,) * 4)
        for i in range(N)
    ]


def variant(name: str, right: set[int], peak_gb: float, **kw) -> rec.ModelRecord:
    acc = len(right) / N
    return record(name, peak_gb=peak_gb, acc=acc, n=N, acc_se=binomial_se(acc, N), **kw)


# A right on items 0..119 (acc .60), B on 0..107 (acc .54): 12 discordant items, all A's.
A_RIGHT, B_RIGHT = set(range(120)), set(range(108))


def save_pair(root, *, legacy: bool = False) -> tuple[rec.ModelRecord, rec.ModelRecord]:
    a, b = variant("a", A_RIGHT, 0.5), variant("b", B_RIGHT, 0.4)
    store.write_manifest("r1", {"run_id": "r1"}, root)
    for r, right in ((a, A_RIGHT), (b, B_RIGHT)):
        if legacy:  # as stored before the lines named their variant
            directory = root / "r1"
            store.append_line(
                directory / "samples.jsonl", "\n".join(map(rec.to_json, mc_items(right)))
            )
            store.save_record(r, root=root)
        else:
            store.save_record(r, mc_items(right), root)
    return a, b


def test_every_per_item_line_names_its_record(tmp_path):
    a, _ = save_pair(tmp_path)
    first = json.loads((tmp_path / "r1" / "samples.jsonl").read_text().splitlines()[0])
    assert {k: first[k] for k in store_items.ATTRIBUTION} == {
        "variant": "a",
        "sha256": a.variant.sha256,
        "settings_key": a.settings.key(),
        "host_id": "h1",
        "thinking": "",
    }
    assert store_items.line_key(first) == a.key
    # the added fields do not disturb the old reader
    assert store.load_samples("r1", tmp_path)[0] == mc_items(A_RIGHT)[0]


def test_generated_lines_carry_their_thinking_mode(tmp_path):
    r = variant("a", A_RIGHT, 0.5)
    gen = rec.GenSampleResult("g", "g-1", "generate", "ok", "p", "o", correct=True, thinking="off")
    store.save_record(r, generations=[gen], root=tmp_path)
    line = json.loads((tmp_path / "r1" / "generations.jsonl").read_text())
    assert (line["variant"], line["thinking"]) == ("a", "off")


def test_attributed_lines_need_no_order(tmp_path):
    a, b = save_pair(tmp_path)
    path = tmp_path / "r1" / "samples.jsonl"
    lines = path.read_text().splitlines()
    random.Random(1).shuffle(lines)  # what resume, the cluster and concurrent pieces can do
    path.write_text("\n".join(lines) + "\n")
    items = store_items.load_items("r1", tmp_path, [a, b], concurrent=False)
    assert items.how == store_items.ATTRIBUTED
    assert sum(items.of(a)[("t", "")].values()) == 120
    assert sum(items.of(b)[("t", "")].values()) == 108


def test_a_legacy_run_in_unambiguous_order_is_attributed_by_order(tmp_path):
    a, b = save_pair(tmp_path, legacy=True)
    in_order = store_items.records_in_file_order("r1", tmp_path)
    items = store_items.load_items("r1", tmp_path, in_order, concurrent=False)
    assert items.how == store_items.BY_ORDER
    assert sum(items.of(a)[("t", "")].values()) == 120
    assert sum(items.of(b)[("t", "")].values()) == 108


def test_a_legacy_run_with_an_orphan_block_is_refused_naming_run_and_file(tmp_path):
    a, b = save_pair(tmp_path, legacy=True)
    # a kill between a variant's samples and its record leaves a block no record owns
    store.append_line(tmp_path / "r1" / "samples.jsonl", rec.to_json(mc_items(set())[0]))
    in_order = store_items.records_in_file_order("r1", tmp_path)
    with pytest.raises(UnattributedItemsError, match=r"run 'r1', samples.jsonl: .*1 line\(s\)"):
        store_items.load_items("r1", tmp_path, in_order, concurrent=False)


def test_a_legacy_run_with_a_torn_line_or_concurrent_writers_is_refused(tmp_path):
    a, b = save_pair(tmp_path, legacy=True)
    with pytest.raises(UnattributedItemsError, match="allow-concurrent"):
        store_items.load_items("r1", tmp_path, [a, b], concurrent=True)
    with open(tmp_path / "r1" / "samples.jsonl", "a") as fh:
        fh.write('{"task": "t", "item_')
    with pytest.raises(UnattributedItemsError, match="unreadable"):
        store_items.load_items("r1", tmp_path, [a, b], concurrent=False)


def test_a_legacy_block_that_does_not_match_the_counts_is_refused(tmp_path):
    a, b = save_pair(tmp_path, legacy=True)
    more = [a, dataclasses.replace(b, tasks=(dataclasses.replace(b.tasks[0], n=250),))]
    with pytest.raises(
        UnattributedItemsError, match="lines 201..450 do not hold the item counts of 'b'"
    ):
        store_items.load_items("r1", tmp_path, more, concurrent=False)
    fewer = [a, dataclasses.replace(b, tasks=(dataclasses.replace(b.tasks[0], n=150),))]
    with pytest.raises(
        UnattributedItemsError, match="50 line\\(s\\) after the last record's block"
    ):
        store_items.load_items("r1", tmp_path, fewer, concurrent=False)


def test_paired_se_by_hand_and_the_tie_it_breaks(tmp_path):
    a, b = save_pair(tmp_path)
    pairs = pairing([a, b], load_pairing("r1", tmp_path, [a, b]))
    (pair,) = pairs.pairs
    assert pair.method == PAIRED
    # gains (x - .25) / .75: capability A = 100 * (.6 - .25) / .75 = 46.667, B = 38.667
    assert pair.diff == pytest.approx(8.0)
    # unpaired: 100 * sqrt(.6*.4/199 + .54*.46/199) / .75 = 100 * sqrt(.4884/199) / .75 = 6.61
    assert pair.se_unpaired == pytest.approx(
        100 * math.hypot(binomial_se(0.6, N), binomial_se(0.54, N)) / 0.75
    )
    # paired: d = 4/3 on 12 items, 0 on 188: mean .08; s^2 = (12 (4/3 - .08)^2 + 188 .08^2) / 199
    s2 = (12 * (4 / 3 - 0.08) ** 2 + 188 * 0.08**2) / 199
    assert pair.se == pytest.approx(100 * math.sqrt(s2 / N))
    assert pair.se <= pair.se_unpaired / 2
    (task,) = pair.tasks
    assert (task.only_a, task.only_b) == (12, 0)
    assert task.p_mcnemar == pytest.approx(2 / 2**12)
    # unpaired: 8.0 < 1.96 * 6.6, a tie, and b is smaller: a is dominated by b
    plain = {r.name: r for r in rank_rows([a, b])}
    assert plain["a"].dominated_by == "b" and plain["a"].tied_with == ("b",)
    # paired: 8.0 > 1.96 * 2.2: a is more capable beyond noise; neither dominates
    ranked = {r.name: r for r in rank_rows([a, b], paired=paired_ses(pairs))}
    assert ranked["a"].dominated_by == "" and ranked["a"].tied_with == ()
    assert ranked["b"].dominated_by == ""


def test_a_changed_task_version_is_compared_unpaired_naming_the_task(tmp_path):
    a, b = save_pair(tmp_path)
    b2 = dataclasses.replace(b, tasks=(dataclasses.replace(b.tasks[0], version=2),))
    (pair,) = pairing(
        [a, b2],
        load_pairing("r1", tmp_path, [a, b]).__class__(
            "r1", store_items.ATTRIBUTED, load_pairing("r1", tmp_path, [a, b]).scores
        ),
    ).pairs
    assert pair.method == UNPAIRED
    assert pair.reason == "task t: version 1 vs 2 (changed task)"


def test_a_refused_run_compares_unpaired_and_says_why(tmp_path):
    a, b = save_pair(tmp_path, legacy=True)
    store.append_line(tmp_path / "r1" / "samples.jsonl", rec.to_json(mc_items(set())[0]))
    pairs = pairing([a, b], load_pairing("r1", tmp_path, [a, b]))
    assert pairs.how == "refused" and not pairs.any_paired
    assert "samples.jsonl" in pairs.note and "unpaired" in pairs.note


def test_the_answer_names_the_variant_and_how_sure(tmp_path):
    a, b = save_pair(tmp_path)
    pairs = pairing([a, b], load_pairing("r1", tmp_path, [a, b]))
    rows = rank_rows([a, b], paired=paired_ses(pairs))
    within = answer_section(rows, pairs, 0.45).sentences
    assert within[0].startswith("Within 0.45 GB, run **b**")
    assert "the only measured variant that fits" in within[0]
    classes = answer_section(rows, pairs, None).sentences
    assert classes[0].startswith("Within 0.5 GB, run **a**")
    assert "it leads b by 8.0 ± 2.2 points (paired SE" in classes[0]
    assert classes[0].endswith(": settled.")
    assert classes[1].startswith("Settled pairs (1 of 1): a vs b: 8.0 ± 2.2 (paired)")


def test_an_unsettled_pair_says_how_many_items_would_settle_it():
    # unpaired records only (no per-item lines): 8.0 +- 6.6 is not settled
    a, b = variant("a", A_RIGHT, 0.5), variant("b", B_RIGHT, 0.4)
    pairs = pairing([a, b], store_items.RunItems("r1", store_items.NONE))
    (pair,) = pairs.pairs
    assert pair.method == UNPAIRED and not pair.settled
    # 80 % power for 8.0 at SE 6.6054 on 200 items: 200 * (2.80159 * 6.6054 / 8)^2 = 1070.2
    assert pair.items_to_settle == 1071 - 200
    text = answer_section(rank_rows([a, b]), pairs, None).sentences
    unsettled = "Unsettled pairs (1 of 1): a vs b: 8.0 ± 6.6 (unpaired), about 871 more items"
    assert unsettled in text[-2]
    assert "no per-item lines" in text[-1]


def test_comparison_and_power_sections_print_both_ses(tmp_path):
    a, b = save_pair(tmp_path)
    pairs = pairing([a, b], load_pairing("r1", tmp_path, [a, b]))
    (head, body), (task_head, task_body) = comparison_section(pairs).tables
    row = dict(zip(head, body[0], strict=True))
    assert (row["paired SE"], row["unpaired SE"], row["SE used"]) == ("2.24", "6.61", "paired")
    assert dict(zip(task_head, task_body[0], strict=True))["McNemar p"] == "≤ 0.001"
    ((_, power),) = power_section(pairs).tables
    assert [r[0] for r in power] == ["t", "capability"]


def test_a_rendered_report_opens_with_the_answer(tmp_path):
    save_pair(tmp_path)
    _, rows, paths = render_run("r1", root=tmp_path)
    text = paths["md"].read_text()
    assert text.index("## The answer") < text.index("| rank |")
    assert "## Comparisons: paired vs unpaired standard errors" in text
    assert "| a | b | 8.00 | 2.24 | 6.61 | paired |" in text
    html = paths["html"].read_text()
    assert html.index('<h2 id="the-answer">') < html.index('<h2 id="ranking-by')
    data = json.loads(paths["json"].read_text())
    assert data["comparisons"]["pairs"][0]["method"] == "paired"


def test_a_stored_run_from_before_renders_unpaired_with_a_note(tmp_path):
    save_pair(tmp_path, legacy=True)
    store.append_line(tmp_path / "r1" / "samples.jsonl", rec.to_json(mc_items(set())[0]))
    _, rows, paths = render_run("r1", root=tmp_path)
    text = paths["md"].read_text()
    assert "cannot tell which variant answered each item" in text
    assert "| a | b | 8.00 | - | 6.61 | unpaired |" in text
    assert {r.name: r.dominated_by for r in rows}["a"] == "b"  # the unpaired tie, as before


def test_power_rows_by_hand(tmp_path):
    a, b = save_pair(tmp_path)
    pairs = pairing([a, b], load_pairing("r1", tmp_path, [a, b]))
    ((head, rows),) = power_section(pairs).tables
    # task t, accuracy points: d = 1 on 12 of 200 items: mean .06,
    # s^2 = (12 * .94^2 + 188 * .06^2) / 199 = 11.28 / 199; SE = 100 * sqrt(s^2 / 200) = 1.6835
    se = 100 * math.sqrt(11.28 / 199 / 200)
    z = 1.959964 + 0.841621
    assert rows[0] == ("t", "200", f"{z * se:.1f}", f"{math.ceil(200 * (z * se / 2) ** 2):,}")
    assert rows[0][2:] == ("4.7", "1,113")
    # capability: the paired SE 2.2447 (gain units, test_paired_se_by_hand...): 2.8016 * 2.2447
    cap_se = 100 * math.sqrt((12 * (4 / 3 - 0.08) ** 2 + 188 * 0.08**2) / 199 / N)
    assert rows[1] == ("capability", "200", f"{z * cap_se:.1f}", "1,978")


def test_thinking_rows_get_their_own_items(tmp_path):
    def gen(i: int, thinking: str, right: bool) -> rec.GenSampleResult:
        return rec.GenSampleResult(
            "g", f"g-{i}", "generate", "ok", "p", "o", correct=right, thinking=thinking
        )

    def task(thinking: str, acc: float) -> rec.TaskScore:
        se = binomial_se(acc, 4)
        return rec.TaskScore(
            "g", 1, "x", 0.0, 4, acc, se, acc, se, 1.0, protocol="instruct", thinking=thinking
        )

    q = dataclasses.replace(
        variant("q", A_RIGHT, 0.5),
        tasks=(variant("q", A_RIGHT, 0.5).tasks[0], task("on", 1.0), task("off", 0.25)),
    )
    gens = [gen(i, "on", True) for i in range(4)] + [gen(i, "off", i == 0) for i in range(4)]
    store.save_record(q, mc_items(A_RIGHT), tmp_path, generations=gens)
    pairs = pairing([q], load_pairing("r1", tmp_path, [q]))
    (pair,) = pairs.pairs
    assert (pair.a, pair.b, pair.method) == ("q", "q (thinking off)", PAIRED)
    by_task = {t.task: t for t in pair.tasks}
    assert by_task["t"].diff == 0.0  # multiple choice scores in both rows, the same items
    assert (by_task["g"].only_a, by_task["g"].only_b) == (3, 0)  # on: 4 right, off: 1


def six_items(name: str, right: list[int], clusters: list[str] | None = None):
    """A record of one 6-item task "t" (chance 0) scored from its samples, as a run scores
    it (metrics.score_samples), the samples naming `clusters` by "passage" when given."""
    samples = [
        rec.SampleResult(
            "t",
            f"t-{i}",
            0,
            RIGHT if x else WRONG,
            (1,) * 4,
            cluster=clusters[i] if clusters else "",
            cluster_by="passage" if clusters else "",
        )
        for i, x in enumerate(right)
    ]
    score = score_samples(samples, task="t", version=1, category="x", chance=0.0)
    r = record(name, peak_gb=0.5, acc=score.acc, n=6, chance=0.0)
    return dataclasses.replace(r, tasks=(score,)), samples


def test_lines_that_name_a_cluster_get_clustered_ses(tmp_path):
    # A = 1 1 0 0 1 1, B = 0 0 0 0 0 1 (chance 0: gains are the scores); d = 1 1 0 0 1 0
    # clusters {1,2} {3,4} {5,6}: residual sums 1, -1, 0; CR1 SE^2 = 3/2 * 2 / 36 = 1/12
    # (tests/test_stats.py, by hand); unclustered: s^2 = 0.3, SE^2 = 0.3 / 6 = 0.05
    passages = ["p0", "p0", "p1", "p1", "p2", "p2"]
    (a, la), (b, lb) = (
        six_items("a", [1, 1, 0, 0, 1, 1], passages),
        six_items("b", [0, 0, 0, 0, 0, 1], passages),
    )
    store.save_record(a, la, tmp_path)
    store.save_record(b, lb, tmp_path)
    path = tmp_path / "r1" / "samples.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(d["cluster"], d["cluster_by"]) for d in lines[:2]] == [("p0", "passage")] * 2
    found = pairing([a, b], load_pairing("r1", tmp_path, [a, b]))
    (pair,) = found.pairs
    assert pair.se == pytest.approx(100 * math.sqrt(1 / 12))
    (task,) = pair.tasks
    assert (task.n_clusters, task.cluster_by) == (3, "passage")
    assert task.se == pytest.approx(100 * math.sqrt(1 / 12))
    assert task.clustering == "clustered by passage (3 clusters)"
    # A's own per-task SE is clustered too: 1 1 0 0 1 1, mean 2/3, residual sums
    # 2/3, -4/3, 2/3 -> squares 4/9 + 16/9 + 4/9 = 24/9; SE^2 = 3/2 * 24/9 / 36 = 1/9
    assert a.tasks[0].acc_se == pytest.approx(1 / 3)
    assert (a.tasks[0].cluster_by, a.tasks[0].n_clusters) == ("passage", 3)
    assert found.clustering == {"t": ("passage", (3,))}
    assert "t are clustered by passage (3 clusters)" in found.cluster_note
    # the report says so, in the note and in the per-task table
    section = comparison_section(found)
    assert found.cluster_note in section.sentences
    (_, _), (task_head, task_rows) = section.tables
    assert dict(zip(task_head, task_rows[0], strict=True))["clustered"] == "by passage (3 clusters)"
    # without the cluster ids: the plain paired SE, sqrt(0.05)
    path.write_text(
        "".join(json.dumps({k: v for k, v in d.items() if k != "cluster"}) + "\n" for d in lines)
    )
    (plain,) = pairing([a, b], load_pairing("r1", tmp_path, [a, b])).pairs
    assert plain.se == pytest.approx(100 * math.sqrt(0.05))
    assert (plain.tasks[0].n_clusters, plain.tasks[0].clustering) == (None, "")


def test_clustered_items_widen_the_se_on_correlated_answers(tmp_path):
    """Items that move together within a cluster (A knows a passage B does not) get a larger
    SE clustered than as if independent: 4 passages of 3, d = 1 1 1 | 0 0 0 | 1 1 0 | 0 0 0
    (tests/test_stats.py: clustered SE 0.25 against 0.1487 unclustered)."""
    a_right = [1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    clusters = [c for c in "wxyz" for _ in range(3)]
    for run, given in (("r1", clusters), ("r2", None)):
        for name, right in (("a", a_right), ("b", [0] * 12)):
            samples = [
                rec.SampleResult(
                    "t",
                    f"t-{i}",
                    0,
                    RIGHT if x else WRONG,
                    (1,) * 4,
                    cluster=given[i] if given else "",
                    cluster_by="passage" if given else "",
                )
                for i, x in enumerate(right)
            ]
            score = score_samples(samples, task="t", version=1, category="x", chance=0.0)
            r = record(name, peak_gb=0.5, acc=score.acc, n=12, chance=0.0, run_id=run)
            store.save_record(dataclasses.replace(r, tasks=(score,)), samples, tmp_path)
    ses = {}
    for run in ("r1", "r2"):
        records = list(store.load_records(run, tmp_path))
        (pair,) = pairing(records, load_pairing(run, tmp_path, records)).pairs
        ses[run] = pair.tasks[0].se
    assert ses["r1"] == pytest.approx(25.0)
    assert ses["r2"] == pytest.approx(100 * math.sqrt(420 / 144 / 11 / 12))
    assert ses["r1"] > 1.6 * ses["r2"]


def test_a_stored_run_without_cluster_ids_renders_unclustered_and_says_so(tmp_path):
    """A run stored before clusters were recorded (no `cluster` on its lines, no n_clusters on
    its scores) renders with the SEs it had, and the report says they are unclustered."""
    a, b = save_pair(tmp_path)
    _, _, paths = render_run("r1", root=tmp_path)
    text = paths["md"].read_text()
    assert "Standard errors are unclustered: no per-item result of this run names a cluster" in text
    assert "| a | b | 8.00 | 2.24 | 6.61 | paired |" in text  # the paired SE as before
    lines = (tmp_path / "r1" / "samples.jsonl").read_text()
    assert '"cluster' not in lines  # an unclustered task writes the lines it always did
    data = json.loads(paths["json"].read_text())
    assert data["comparisons"]["clustering"] == {}
    assert "unclustered" in data["comparisons"]["cluster_note"]


def test_comparison_rows_put_the_more_capable_variant_first(tmp_path):
    a, b = save_pair(tmp_path)
    pairs = pairing([b, a], load_pairing("r1", tmp_path, [a, b]))  # b's row comes first
    assert (pairs.pairs[0].a, pairs.pairs[0].diff) == ("b", pytest.approx(-8.0))
    (_, body), (_, tasks) = comparison_section(pairs).tables
    assert body[0][:3] == ("a", "b", "8.00")
    assert tasks[0][:5] == ("a", "b", "t", "200", "6.0")
    assert tasks[0][-3:] == ("12", "0", "≤ 0.001")  # only A (a) right: 12


def test_power_says_so_when_no_item_differed(tmp_path):
    a, b = save_pair(tmp_path)
    same = variant("c", A_RIGHT, 0.45)
    store.save_record(same, mc_items(A_RIGHT), tmp_path)
    pairs = pairing([a, same], load_pairing("r1", tmp_path, [a, b, same]))
    (pair,) = pairs.pairs
    assert (pair.se, pair.diff) == (0.0, 0.0)
    ((_, rows),) = power_section(pairs).tables
    assert rows[0][2:] == ("no item differed", "-")
    (head, body), _ = comparison_section(pairs).tables
    assert dict(zip(head, body[0], strict=True))["detectable"] == "no item differed"
    assert not pair.settled and pair.items_to_settle is None
    rows = rank_rows([a, same], paired=paired_ses(pairs))
    text = answer_section(rows, pairs, None).sentences
    assert text[0].startswith("Within 0.5 GB, run **c**")  # equally capable, and smaller
    assert "it ties with a at 0.0 ± 0.0 points" in text[0]
    # 200 items alike: equal within 2 points, TOST on the floored SE (0.0405, as above)
    assert "equal within 2 points (p = 0.0405); the same answer on every shared item" in text[0]
    assert text[1] == "Settled pairs (0 of 1): none."
    assert "a vs c: 0.0 ± 0.0 (paired), equal within 2 points (p = 0.0405); the same" in text[2]


def test_the_python_api_ranks_with_the_same_paired_ses(tmp_path, monkeypatch):
    from edgeeval.api import load_run

    save_pair(tmp_path)
    monkeypatch.setenv("EDGEEVAL_REPORTS", str(tmp_path))
    rows = {r.name: r for r in load_run("r1").rows}
    assert rows["a"].dominated_by == "" and rows["a"].paired_se["b"][0] == pytest.approx(
        2.2447, abs=1e-4
    )


def test_a_difference_of_rounding_asks_for_no_absurd_item_count():
    """Two requantizations that answered alike on 260 items but for a few discordant pairs
    that cancel: the sums of gains differ by 1e-14 (seen on the seven-variant run). Scaling
    the SE to that would ask for about 7.5e33 items; the report says no difference was seen,
    and how many items a 2-point difference would need: ceil(260 * (2.8016 * 0.67 / 2)^2)."""
    from edgeeval.report.answer import _pair_line

    pair = Pair("q8", "q4", PAIRED, 1.1e-14, 0.6, 4.37, 1.0, 260)
    assert not pair.settled and pair.items_to_settle is None
    assert pair.items_for_target == 184
    line = _pair_line(pair)
    assert "no difference seen; about 184 items would detect 2 points" in line
    assert "more items would settle" not in line


def test_a_pair_shown_under_two_points_apart_is_equal_not_unsettled(tmp_path):
    """A right on items 0..119, C on 0..118 and 150: both 60 %, one discordant item each
    way (4-choice, gain step w = 4/3). Paired SE = 100 * sqrt(2 * (4/3)^2 / 199 / 200) =
    0.945 points, below the floor of a 2-point gap on 200 such items, 100 * sqrt(0.02 *
    (4/3 - 0.02) / 200) = 1.146; TOST p = 1 - Phi(2 / 1.146) = 0.0405: equal within 2."""
    from statistics import NormalDist

    c_right = set(range(119)) | {150}
    a, c = variant("a", A_RIGHT, 0.5), variant("c", c_right, 0.4)
    store.write_manifest("r1", {"run_id": "r1"}, tmp_path)
    store.save_record(a, mc_items(A_RIGHT), tmp_path)
    store.save_record(c, mc_items(c_right), tmp_path)
    pairs = pairing([a, c], load_pairing("r1", tmp_path, [a, c]))
    (pair,) = pairs.pairs
    assert pair.method == PAIRED and pair.diff == pytest.approx(0.0, abs=1e-9)
    assert pair.se == pytest.approx(100 * math.sqrt(2 * (4 / 3) ** 2 / 199 / 200), rel=1e-9)
    floor = 100 * math.sqrt(0.02 * (4 / 3 - 0.02) / 200)
    assert pair.equal_p == pytest.approx(1 - NormalDist().cdf(2 / floor), rel=1e-9)
    assert round(pair.equal_p, 4) == 0.0405 and pair.equal and not pair.settled
    rows = rank_rows([a, c], paired=paired_ses(pairs))
    text = answer_section(rows, pairs, None).sentences
    assert "Within 0.5 GB, run **c**" in text[0] or "Within 0.5 GB, run **a**" in text[0]
    assert "equal within 2 points (p = 0.0405)" in text[0]
    assert text[1].startswith("Settled pairs (0 of 1): none")
    assert text[2].startswith("Pairs equal within 2 points (1 of 1): ")
    assert text[3].startswith("Unsettled pairs (0 of 1): none")
    (head, body), _ = comparison_section(pairs).tables
    assert dict(zip(head, body[0], strict=True))["equal within 2 (p)"] == "0.0405"


def test_too_few_items_is_not_equal(tmp_path):
    """The unpaired 8.0 +- 6.6 of a and b is not apart, and not within 2 points either:
    TOST p = 1 - Phi((2 - 8) / 6.6) = 0.82 (the floor, 1.15, is below the SE)."""
    from statistics import NormalDist

    a, b = variant("a", A_RIGHT, 0.5), variant("b", B_RIGHT, 0.4)
    (pair,) = pairing([a, b], store_items.RunItems("r1", store_items.NONE)).pairs
    assert pair.equal_p == pytest.approx(1 - NormalDist().cdf((2 - pair.diff) / pair.se))
    assert pair.equal_p > 0.8 and not pair.equal


def test_items_that_all_agree_prove_no_margin():
    """Two variants alike on all 10 items of one 4-choice task (observed SE 0): the floor of
    a 2-point gap on 10 items is 5.13 points, TOST p = 1 - Phi(2 / 5.125) = 0.3482."""
    from edgeeval.report.paired import _equal_p

    assert _equal_p(0.0, 0.0, [(0.25, 10)]) == pytest.approx(0.3482, abs=1e-4)
    assert _equal_p(0.0, 0.0, []) is None
