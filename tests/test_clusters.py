"""Clustered standard errors end to end: a task's `cluster_by` puts each item's cluster on
the item, the scorers put it on every per-item result and cluster the task's SE, the store
writes it on every per-item line and reads it back for the comparisons (and the race)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgeeval import records as rec
from edgeeval.metrics import binomial_se, clustered_se, pick
from edgeeval.run.accuracy import score_tasks, task_score_from_items
from edgeeval.score.generate import task_score
from edgeeval.store import items as store_items
from edgeeval.store import runs as store
from edgeeval.tasks.suite import load_tasks
from tests.builders import record
from tests.fake_backend import FakeBackend

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = rec.RunSettings()


class Alphabetical(FakeBackend):
    """Prefers the continuation that sorts first: right on some items, wrong on others."""

    def choice_logliks(self, context: list[int], continuations: list[list[int]]) -> list[float]:
        first = min(continuations)
        return [0.0 if c == first else -1.0 for c in continuations]


class KnowsTopics(FakeBackend):
    """Right on every item of the topics it knows, wrong on all others: answers that move
    together within a cluster, the case clustered SEs exist for."""

    def __init__(self, items, topics: set[str]) -> None:
        super().__init__()
        self.gold = {
            tuple(self.tokenize(i.context, add_bos=True)): (
                self.tokenize(i.choices[i.gold], add_bos=False),
                i.cluster in topics,
            )
            for i in items
        }

    def choice_logliks(self, context: list[int], continuations: list[list[int]]) -> list[float]:
        gold, known = self.gold[tuple(context)]
        if known:
            return [0.0 if c == gold else -1.0 for c in continuations]
        wrong = next(c for c in continuations if c != gold)
        return [0.0 if c == wrong else -1.0 for c in continuations]


def test_a_scored_clustered_task_carries_its_clusters_and_a_clustered_se():
    task = load_tasks(ROOT)["pydoc-cloze"]
    items = task.items()
    # right on the two largest topics of the 40 items (types: 8, compound: 6), wrong elsewhere
    backend = KnowsTopics(items, {"types", "compound"})
    got = score_tasks(backend, [task], SETTINGS, chunk_size=7)  # several chunks
    (score,) = got.scores
    samples = got.samples
    topics = {item.id: item.cluster for item in items}
    assert [s.cluster for s in samples] == [topics[s.item_id] for s in samples]
    assert {s.cluster_by for s in samples} == {"topic"}
    hits = [float(pick(s.logliks, s.choice_chars, normalize=False) == s.gold) for s in samples]
    assert hits == [float(s.cluster in ("types", "compound")) for s in samples]
    groups = len(set(topics.values()))
    assert (score.cluster_by, score.n_clusters) == ("topic", groups)
    assert score.acc_se == pytest.approx(clustered_se(hits, [s.cluster for s in samples]))
    # answers that move together by topic: the clustered SE is well above the binomial one
    assert score.acc_se > 1.5 * binomial_se(score.acc, score.n)
    # the same score again from the stored results alone (resume, shards): clustered alike
    again = task_score_from_items(score, samples, [])
    assert (again.acc_se, again.n_clusters, again.cluster_by) == (
        score.acc_se,
        score.n_clusters,
        "topic",
    )


def test_an_unclustered_task_keeps_its_binomial_se():
    task = load_tasks(ROOT)["facts"]
    (score,) = score_tasks(Alphabetical(), [task], SETTINGS).scores
    assert (score.cluster_by, score.n_clusters) == ("", 0)
    assert score.acc_se == pytest.approx(binomial_se(score.acc, score.n))


def test_mixed_or_missing_cluster_ids_leave_the_se_unclustered():
    """A resumed run whose earlier items were scored before clusters were recorded: some
    samples name one, some do not. Half-clustered is not clustered: the binomial SE."""
    base = rec.SampleResult("t", "t-0", 0, (-1.0, -2.0), (1, 1))
    samples = [
        dataclasses.replace(
            base, item_id=f"t-{i}", gold=i % 2, cluster="p" if i < 3 else "", cluster_by="page"
        )
        for i in range(6)
    ]
    score = task_score_from_items(
        rec.TaskScore("t", 1, "x", 0.5, 6, 0.5, 0.2, 0.5, 0.2, 0.0), samples, []
    )
    assert score.n_clusters == 0 and score.acc_se == pytest.approx(binomial_se(0.5, 6))


def test_generated_answers_cluster_the_same_way():
    # correct 1 1 0 | 0 0 0 in two clusters: mean 1/3, residual sums 1, -1;
    # SE^2 = 2/1 * 2 / 36 = 1/9 -> 1/3 (binomial: sqrt(2/9 / 5) = 0.2108)
    samples = [
        rec.GenSampleResult(
            "g", f"g-{i}", "generate", "ok", "p", "o", correct=i < 2, cluster="ab"[i // 3]
        )
        for i in range(6)
    ]
    samples = [dataclasses.replace(s, cluster_by="passage") for s in samples]
    meta = rec.TaskScore("g", 1, "math", 0.0, 6, 0.0, 0.0, 0.0, 0.0, 0.0)
    score = task_score(_Meta(meta), samples, metric="acc")
    assert score.acc_se == pytest.approx(1 / 3)
    assert (score.n_clusters, score.cluster_by) == (2, "passage")


@dataclasses.dataclass
class _Meta:
    score: rec.TaskScore

    @property
    def name(self) -> str:
        return self.score.task

    @property
    def version(self) -> int:
        return self.score.version

    @property
    def category(self) -> str:
        return self.score.category

    @property
    def chance(self) -> float:
        return self.score.chance


def test_every_per_item_line_records_its_cluster_and_the_store_reads_them_back(tmp_path):
    task = load_tasks(ROOT)["pydoc-cloze"]
    got = score_tasks(Alphabetical(), [task], SETTINGS)
    (score,) = got.scores
    r = dataclasses.replace(record("a", peak_gb=0.5, acc=score.acc), tasks=(score,))
    store.save_record(r, got.samples, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "r1" / "samples.jsonl").read_text().splitlines()]
    assert all(d["cluster"] and d["cluster_by"] == "topic" for d in lines)
    # the stored lines still load as results, clusters and all
    assert list(store.load_samples("r1", tmp_path)) == got.samples
    loaded = store_items.load_items(
        "r1", tmp_path, store_items.records_in_file_order("r1", tmp_path), concurrent=False
    )
    ids = [s.item_id for s in got.samples]
    assert loaded.cluster_by == {"pydoc-cloze": "topic"}
    assert loaded.clusters_of("pydoc-cloze", ids) == tuple(s.cluster for s in got.samples)
    # the race's task keys name a thinking mode: the clusters are the item's, whatever the mode
    assert loaded.clusters_of("pydoc-cloze@off", ids) == loaded.clusters_of("pydoc-cloze", ids)


def test_items_without_clusters_give_the_race_none(tmp_path):
    items = store_items.RunItems("r", store_items.ATTRIBUTED)
    assert items.clusters_of("facts", ["a", "b"]) is None
    one = store_items.RunItems(
        "r", store_items.ATTRIBUTED, clusters={("t", "1"): "p", ("t", "2"): "p"}
    )
    assert one.clusters_of("t", ["1", "2"]) is None  # one cluster: nothing to cluster over


def test_lines_that_disagree_on_an_items_cluster_are_not_clustered(tmp_path):
    """The task file changed its cluster_by between two invocations of one run: its items'
    clusters are ambiguous, so the task is left unclustered rather than guessed."""
    a = record("a", peak_gb=0.5, acc=0.5, n=2)
    b = record("b", peak_gb=0.5, acc=0.5, n=2)
    first = [
        rec.SampleResult("t", f"t-{i}", 0, (-1.0, -2.0), (1, 1), f"s{i}", "subject")
        for i in range(2)
    ]
    second = [dataclasses.replace(s, cluster="x" + s.cluster, cluster_by="topic") for s in first]
    store.save_record(a, first, tmp_path)
    store.save_record(b, second, tmp_path)
    loaded = store_items.load_items(
        "r1", tmp_path, store_items.records_in_file_order("r1", tmp_path), concurrent=False
    )
    assert loaded.cluster_by == {} and loaded.clusters_of("t", ["t-0", "t-1"]) is None
