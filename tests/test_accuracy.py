"""The one accuracy path (edgeeval.run.accuracy) on the FakeBackend: a task scored in pieces
(chunks, shards, skipped and selected items) scores as in one go, and streams its items."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from edgeeval import records as rec
from edgeeval.engine.backend import GenerationResult
from edgeeval.run.accuracy import (
    Chunk,
    plan_key,
    row_key,
    score_tasks,
    task_score_from_items,
)
from edgeeval.score.tasks import score_by_kind
from edgeeval.tasks.suite import GenItem, McItem
from tests.fake_backend import FakeBackend, FakeTask

SHOT = (("What is 1 + 1?", "The answer is 2."),)
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SWITCHED = "{% if enable_thinking %}<think>{% endif %}" + CHATML  # Qwen3's thinking switch


class ByPrompt(FakeBackend):
    """Answers from the prompt alone, so an item gets the same reply in any chunk or order."""

    def generate(
        self, prompt_tokens: list[int], *, max_tokens: int, stop: Sequence[str] = ()
    ) -> GenerationResult:
        self.calls.append(("generate", len(prompt_tokens), max_tokens, tuple(stop)))
        text = f"The answer is {len(prompt_tokens) % 3}."
        return GenerationResult(text, len(prompt_tokens), len(text), "eog")


def mc_task(n: int) -> FakeTask:
    items = tuple(
        McItem(f"m{i}", f"Q{i}: {'x' * i}", (" 5", " 6", " 7" * (i % 2 + 1)), i % 3)
        for i in range(n)
    )
    return FakeTask(name="mc", kind="multiple_choice", chance=1 / 3, given=items)


def gen_task(n: int, name: str = "gen") -> FakeTask:
    items = tuple(
        GenItem(f"g{i}", f"What is {'y' * i}?", str(2 * i % 3), SHOT, "number", ("\n",), 32)
        for i in range(n)
    )
    return FakeTask(name=name, kind="generate", given=items)


def _same(a: rec.TaskScore, b: rec.TaskScore) -> bool:
    """Equal apart from the time taken."""
    return dataclasses.replace(a, elapsed_s=0.0) == dataclasses.replace(b, elapsed_s=0.0)


SETTINGS = rec.RunSettings(protocol="instruct")


@pytest.mark.parametrize("chunk_size", [1, 3, 16])
def test_chunked_scoring_gives_the_one_go_score_and_streams_every_item(chunk_size):
    tasks = [mc_task(7), gen_task(7)]
    streamed: list[tuple[str, Chunk, list, list]] = []
    got = score_tasks(
        ByPrompt(liked=(" 5",), template=CHATML),
        tasks,
        SETTINGS,
        chunk_size=chunk_size,
        on_items=lambda *args: streamed.append(args),
    )
    one_go = [score_by_kind(ByPrompt(liked=(" 5",), template=CHATML), t, SETTINGS) for t in tasks]
    assert len(got.scores) == 2
    for score, (whole, _, _) in zip(got.scores, one_go, strict=True):
        assert _same(score, whole)
    assert got.samples == one_go[0][1] and got.gen_samples == one_go[1][2]
    assert 0 < got.scores[0].acc < 1 and 0 < got.scores[1].acc < 1  # a real mix of answers
    assert got.scores[1].protocol == "instruct" and got.scores[0].protocol == "loglikelihood"
    assert len(streamed) == 2 * -(-7 // chunk_size)
    assert [s.item_id for _, _, samples, _ in streamed for s in samples] == [
        f"m{i}" for i in range(7)
    ]
    assert all(len(c.positions) <= chunk_size for _, c, _, _ in streamed)


def test_the_union_of_shards_scores_like_the_whole():
    tasks = [mc_task(5), gen_task(5)]
    whole = score_tasks(ByPrompt(liked=(" 5",)), tasks, SETTINGS)
    parts = [score_tasks(ByPrompt(liked=(" 5",)), tasks, SETTINGS, shard=(k, 3)) for k in range(3)]
    assert [r.positions for r in parts[1].results] == [(1, 4), (1, 4)]
    for i, result in enumerate(whole.results):
        pieces = [p.results[i] for p in parts]
        pairs = sorted(
            (pos, row)
            for p in pieces
            for pos, row in zip(p.positions, p.samples or p.gen_samples, strict=True)
        )
        rows = [row for _, row in pairs]
        mc = result.kind == "multiple_choice"
        merged = task_score_from_items(pieces[0].score, rows if mc else [], [] if mc else rows)
        assert _same(merged, result.score)
        assert rows == list(result.samples or result.gen_samples)


def test_a_shard_that_draws_no_item_of_a_task_scores_nothing_for_it():
    got = score_tasks(ByPrompt(), [gen_task(2)], SETTINGS, shard=(2, 3))
    (result,) = got.results
    assert result.score is None and result.positions == () and got.scores == []


def test_skip_and_only_select_items_and_the_rest_completes_the_task():
    task = gen_task(6)
    whole = score_tasks(ByPrompt(), [task], SETTINGS).results[0]
    first = score_tasks(ByPrompt(), [task], SETTINGS, only_ids={"gen": {"g0", "g3", "g5"}})
    assert [g.item_id for g in first.gen_samples] == ["g0", "g3", "g5"]
    assert first.results[0].positions == (0, 3, 5)
    rest = score_tasks(ByPrompt(), [task], SETTINGS, skip_ids={"gen": {"g0", "g3", "g5"}})
    assert [g.item_id for g in rest.gen_samples] == ["g1", "g2", "g4"]
    rows = sorted([*first.gen_samples, *rest.gen_samples], key=lambda g: g.item_id)
    assert _same(task_score_from_items(rest.scores[0], [], rows), whole.score)
    # a task `only_ids` does not name scores nothing
    other = score_tasks(ByPrompt(), [task, gen_task(2, "b")], SETTINGS, only_ids={"b": {"g1"}})
    assert [r.score is None for r in other.results] == [True, False]


def test_a_thinking_row_is_selected_by_its_plan_key():
    task = gen_task(3)
    backend = ByPrompt(template=SWITCHED)
    got = score_tasks(backend, [task], SETTINGS, skip_ids={plan_key("gen", "on"): {"g0", "g1"}})
    on, off = got.results
    assert (on.thinking, off.thinking) == ("on", "off")
    assert [g.item_id for g in on.gen_samples] == ["g2"]
    assert [g.item_id for g in off.gen_samples] == ["g0", "g1", "g2"]
    assert {row_key(g) for g in on.gen_samples} == {"gen@on"}
    assert on.score.thinking == "on" and off.score.n == 3


def test_a_skipped_code_task_is_recorded_in_every_shard_and_rescores_as_skipped():
    code = FakeTask(name="he", kind="code")
    got = score_tasks(FakeBackend(), [code], rec.RunSettings(), shard=(1, 2))
    (score,) = got.scores
    assert score.status == rec.STATUS_SKIPPED and score.metric == "pass@1"
    assert task_score_from_items(score, [], []) == score


def test_a_score_from_no_items_or_mixed_items_is_refused():
    score = score_tasks(ByPrompt(liked=(" 5",)), [mc_task(2)], SETTINGS)
    like, samples = score.scores[0], score.samples
    with pytest.raises(ValueError, match="no scored items"):
        task_score_from_items(like, [], [])
    gens = score_tasks(ByPrompt(), [gen_task(1)], SETTINGS).gen_samples
    with pytest.raises(ValueError, match="both"):
        task_score_from_items(like, samples, gens)


class Refusing(ByPrompt):
    def generate(self, prompt_tokens, *, max_tokens, stop=()):  # type: ignore[override]
        raise RuntimeError("decode failed")


@pytest.mark.parametrize("backend", [ByPrompt, Refusing])
def test_a_generate_task_keeps_its_template_note_when_rescored(backend):
    broken = backend(template="{{ raise_exception('no') }}")  # the sandbox refuses it
    got = score_tasks(broken, [gen_task(3)], SETTINGS, chunk_size=1)
    (score,) = got.scores
    assert score.prompt_format == "completion" and "used completion prompts" in score.reason
    assert _same(task_score_from_items(score, [], got.gen_samples), score)
    if backend is Refusing:  # nothing judged: the score says so, before the note
        assert score.status == rec.STATUS_ERROR and score.n_harness_error == 3
        assert score.reason.startswith("no sample could be judged")


def test_threads_are_set_for_every_task_and_a_bad_chunk_size_is_refused():
    backend = ByPrompt()
    score_tasks(backend, [gen_task(1), gen_task(1, "b")], SETTINGS, n_threads=3)
    assert [c for c in backend.calls if c[0] == "threads"] == [("threads", 3)] * 2
    with pytest.raises(ValueError, match="chunk_size"):
        score_tasks(backend, [gen_task(1)], SETTINGS, chunk_size=-1)
