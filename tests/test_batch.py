"""Batched evaluation (engine/batch.py): the scoring paths with a fake batch engine, and real
llama.cpp on SmolLM2-135M: batched greedy generation against one-at-a-time, slot reuse,
a prompt over the context in one slot, and batched multiple-choice log-likelihoods."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeeval import records as rec
from edgeeval.engine.backend import GenerationResult, LlamaBackend, LoadOptions
from edgeeval.engine.batch import (
    BatchEngine,
    GenRequest,
    default_eval_batch,
    resolve_eval_batch,
    shared_prefix,
)
from edgeeval.score.choice import score_task
from edgeeval.score.generate import score_generate_task
from edgeeval.score.tasks import score_by_kind
from edgeeval.tasks.suite import GenItem, McItem
from tests.fake_backend import FakeBackend, FakeTask


def _gen_items(n: int) -> tuple[GenItem, ...]:
    return tuple(
        GenItem(f"q{i}", f"What is {i} + 1?", str(i + 1), (), "number", ("\nQuestion:",), 32)
        for i in range(n)
    )


# --- logic, no native code ---


def test_batched_generate_task_scores_exactly_as_one_at_a_time():
    replies = ["The answer is 1.", "The answer is 7.\nQuestion: x", "The answer is 3."]
    items = _gen_items(3)
    one = score_generate_task(FakeBackend(replies=replies), FakeTask(), items)
    fake = FakeBackend(replies=replies)
    many = score_generate_task(fake, FakeTask(), items, batch=fake)
    assert ("generate_many", 3) in fake.calls
    assert [s.output for s in many[1]] == [s.output for s in one[1]]
    assert [s.correct for s in many[1]] == [True, False, True]
    assert many[0].acc == one[0].acc == pytest.approx(2 / 3)


def test_an_item_the_batch_could_not_run_is_a_harness_error_for_that_item_only():
    fake = FakeBackend(replies=["The answer is 1.", "The answer is 3."])
    items = _gen_items(3)
    long_item = dataclasses.replace(items[1], question="x" * 400)
    fake.too_long = 300
    score, samples = score_generate_task(
        fake, FakeTask(), (items[0], long_item, items[2]), batch=fake
    )
    assert [s.status for s in samples] == [rec.STATUS_OK, rec.STATUS_ERROR, rec.STATUS_OK]
    assert "does not fit" in samples[1].reason
    assert score.n == 2 and score.acc == 1.0


def test_multiple_choice_goes_through_the_batch_when_given():
    items = [McItem(f"m{i}", "Pick:", (" yes", " no"), i % 2) for i in range(4)]
    fake = FakeBackend(liked=(" no",))
    score, samples = score_task(fake, FakeTask(kind="multiple_choice"), items, batch=fake)
    assert ("choice_logliks_many", 4) in fake.calls
    alone, _ = score_task(FakeBackend(liked=(" no",)), FakeTask(kind="multiple_choice"), items)
    assert score.acc == alone.acc == 0.5
    settings = rec.RunSettings(suite="")
    task = FakeTask(kind="multiple_choice", given=tuple(items))
    by_kind, _, _ = score_by_kind(fake, task, settings, batch=fake)
    assert by_kind.acc == 0.5


def test_eval_batch_defaults_and_settings_key():
    assert resolve_eval_batch(3, 0) == 3
    assert resolve_eval_batch(0, 0) == default_eval_batch("CPU") > 1
    assert default_eval_batch("CUDA") >= default_eval_batch("CPU")
    # unset (0) keeps the keys of runs made before the setting existed
    assert rec.RunSettings().key() == rec.RunSettings(eval_batch=0).key()
    assert rec.RunSettings(eval_batch=4).key() != rec.RunSettings().key()


# --- real llama.cpp ---

PROMPTS = [
    ("def fibonacci(n):\n", 40),
    ("The capital of France is", 6),
    ("Once upon a time", 30),
    ("1, 2, 3, 4,", 25),
    ("import numpy as np\n", 20),
    ("Q: What is 2+2?\nA:", 12),
    ("Write a haiku about the sea.\n", 3),
]


@pytest.fixture(scope="module")
def backend(smollm_path):
    b = LlamaBackend(str(smollm_path), LoadOptions(n_ctx=256, n_threads=2))
    yield b
    b.close()


def _requests(backend: LlamaBackend) -> list[GenRequest]:
    return [GenRequest(backend.prompt_tokens(p, special=False), m, ("\n\n",)) for p, m in PROMPTS]


def _one_at_a_time(backend: LlamaBackend, requests: list[GenRequest]) -> list:
    out: list[GenerationResult | str] = []
    for r in requests:
        try:
            out.append(backend.generate(r.tokens, max_tokens=r.max_tokens, stop=r.stop))
        except ValueError as exc:
            out.append(f"ValueError: {exc}")
    return out


def _differing_tokens(backend: LlamaBackend, a: list, b: list) -> int:
    """Generated tokens that differ between two runs (position by position)."""
    n = 0
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        tx, ty = (backend.tokenize(r.text, add_bos=False) for r in (x, y))
        n += sum(p != q for p, q in zip(tx, ty, strict=False)) + abs(len(tx) - len(ty))
    return n


#: Batch shape changes llama.cpp's CPU numerics (one-row and many-row matrix kernels differ), so
#: a near tie can go the other way: at most this many of the seven outputs may differ. Measured
#: on SmolLM2-135M: B=3 identical; B=8 one output ("import numpy as np\n" continues with
#: "import matplotlib..." alone and "from typing..." batched), both KV layouts.
MAX_DIFFERING_OUTPUTS = 1


def _agree(backend: LlamaBackend, alone: list, together: list) -> None:
    differ = [i for i, (a, b) in enumerate(zip(alone, together, strict=True)) if a != b]
    tokens = _differing_tokens(backend, alone, together)
    assert len(differ) <= MAX_DIFFERING_OUTPUTS, (differ, tokens)


@pytest.mark.real
@pytest.mark.parametrize("n_seq", [3, 8])
def test_batched_greedy_generation_agrees_with_one_at_a_time(backend, n_seq):
    requests = _requests(backend)
    alone = _one_at_a_time(backend, requests)
    engine = BatchEngine(backend, n_seq)
    try:
        together = engine.generate_many(requests)
    finally:
        engine.close()
    assert all(isinstance(r, GenerationResult) for r in together)
    assert [r.n_prompt_tokens for r in together] == [len(r.tokens) for r in requests]
    _agree(backend, alone, together)


@pytest.mark.real
def test_slots_are_reused_when_sequences_finish_at_different_lengths(backend):
    """Two slots, seven requests with budgets from 3 to 40 tokens: every request is served,
    each result is the one its own prompt gives alone, and the budgets are kept."""
    requests = _requests(backend)
    engine = BatchEngine(backend, 2)
    settled: list[int] = []
    try:
        together = engine.generate_many(requests, on_done=settled.append)
        again = engine.generate_many(list(reversed(requests)))  # reused context, new order
    finally:
        engine.close()
    _agree(backend, _one_at_a_time(backend, requests), together)
    _agree(backend, together, list(reversed(again)))
    for request, result in zip(requests, together, strict=True):
        assert result.n_gen_tokens <= request.max_tokens
    assert {r.stop_reason for r in together} >= {"max_tokens"}
    # progress as sequences finish: each count once, rising to all of them (two slots: one
    # at a time at first)
    assert settled[0] == 1 and settled[-1] == len(requests) and settled == sorted(set(settled))


@pytest.mark.real
def test_a_prompt_over_the_context_fails_alone_and_does_not_disturb_the_others(backend):
    requests = _requests(backend)
    too_long = GenRequest(backend.tokenize("word " * 400, add_bos=True), 10, ())
    mixed = requests[:3] + [too_long] + requests[3:]
    engine = BatchEngine(backend, 4)
    try:
        together = engine.generate_many(mixed)
    finally:
        engine.close()
    assert isinstance(together[3], str) and "does not fit n_ctx=256" in together[3]
    with pytest.raises(ValueError, match="does not fit"):
        backend.generate(too_long.tokens, max_tokens=10)
    _agree(backend, _one_at_a_time(backend, requests), together[:3] + together[4:])


@pytest.mark.real
def test_batched_choice_logliks_match_the_shared_prefix_path(backend):
    """Same picks; log-likelihoods within 0.2 nats (batch-shape numerics, summed over up to
    four tokens)."""
    texts = [
        ("Question: Which is a fruit?\nAnswer:", [" apple", " a big car engine", " rock"]),
        ("2 + 2 =", [" 4", " five hundred", " 3"]),
        ("The sky is", [" blue", " green"]),
        ("Paris is the capital of", [" France", " Spain", " the moon base", " Peru"]),
        ("def add(a, b):\n    return", [" a + b", " a - b"]),
    ]
    questions = [
        (backend.tokenize(c, add_bos=True), [backend.tokenize(x, add_bos=False) for x in xs])
        for c, xs in texts
    ]
    alone = [backend.choice_logliks(c, xs) for c, xs in questions]
    engine = BatchEngine(backend, 2)  # three groups: 2 + 2 + 1 questions
    try:
        together = engine.choice_logliks_many(questions)
    finally:
        engine.close()
    assert [len(x) for x in together] == [len(x) for x in alone]
    assert [int(np.argmax(x)) for x in together] == [int(np.argmax(x)) for x in alone]
    for a, b in zip(alone, together, strict=True):
        assert np.allclose(a, b, atol=0.2), (a, b)


# --- a prompt prefix shared by every request, decoded once ---

FEW_SHOT = (
    "Question: What is 2 + 3?\nAnswer: 5\n\nQuestion: What is 14 - 6?\nAnswer: 8\n\n"
    "Question: What is 4 * 7?\nAnswer: 28\n\nQuestion: What is "
)


class _CountingLib:
    """llama_cpp with its calls to `name` counted (everything else passes through)."""

    def __init__(self, lib, name: str) -> None:
        self._lib, self._name, self.calls = lib, name, 0

    def __getattr__(self, attr):
        value = getattr(self._lib, attr)
        if attr != self._name:
            return value

        def counted(*args):
            self.calls += 1
            return value(*args)

        return counted


def _spied(backend: LlamaBackend, n_seq: int, call):
    """`call(engine)` on a fresh BatchEngine of `n_seq` sequences; returns its result and the
    number of tokens in each of the engine's decodes."""
    engine = BatchEngine(backend, n_seq)
    seen: list[int] = []
    decode = engine._decode

    def spy(entries):
        seen.append(len(entries))
        return decode(entries)

    engine._decode = spy  # type: ignore[method-assign]
    try:
        return call(engine), seen
    finally:
        engine.close()


@pytest.mark.real
def test_a_shared_few_shot_prefix_is_decoded_once_and_scores_agree(backend):
    """Five questions behind one few-shot block, two per decode (three groups): the block is
    decoded once, not five times; the picks are those of one-at-a-time scoring and the
    log-likelihoods agree within 0.2 nats (batch-shape numerics)."""
    sums = ["12 + 9", "30 - 7", "6 * 3", "45 + 45", "8 * 8"]
    questions = []
    for expr in sums:
        ctx = backend.tokenize(FEW_SHOT + expr + "?\nAnswer:", add_bos=True)
        right = str(eval(expr))  # noqa: S307 - the test's own literal sums
        conts = [backend.tokenize(" " + x, add_bos=False) for x in (right, right + "1", "7")]
        questions.append((ctx, conts))
    prefix = shared_prefix([c for c, _ in questions])
    assert len(prefix) >= 40
    alone = [backend.choice_logliks(c, xs) for c, xs in questions]
    together, seen = _spied(backend, 2, lambda engine: engine.choice_logliks_many(questions))
    own = sum(len(c) - len(prefix) for c, _ in questions)
    conts = sum(len(x) - 1 for _, xs in questions for x in xs)
    assert sum(seen) == len(prefix) + own + conts  # the prefix once, then only own tokens
    assert [int(np.argmax(x)) for x in together] == [int(np.argmax(x)) for x in alone]
    for a, b in zip(alone, together, strict=True):
        assert np.allclose(a, b, atol=0.2), (a, b)


@pytest.mark.real
def test_generation_behind_a_shared_prefix_agrees_with_one_at_a_time(backend):
    requests = [
        GenRequest(backend.tokenize(FEW_SHOT + expr + "?\nAnswer:", add_bos=True), 6, ("\n",))
        for expr in ["12 + 9", "30 - 7", "6 * 3", "45 + 45", "8 * 8", "99 - 9"]
    ]
    n_prefix = len(shared_prefix([r.tokens for r in requests]))
    assert n_prefix >= 40
    together, seen = _spied(backend, 4, lambda engine: engine.generate_many(requests))
    assert seen[0] == n_prefix  # decoded once, first, alone
    assert sum(seen) < n_prefix * 2 + sum(len(r.tokens) - n_prefix for r in requests) + 6 * 6
    assert [r.n_prompt_tokens for r in together] == [len(r.tokens) for r in requests]
    _agree(backend, _one_at_a_time(backend, requests), together)


@pytest.mark.real
def test_running_sequences_are_moved_down_to_close_gaps(backend):
    """Three slots, three requests; the two in the lowest slots end early, so the last one is
    moved to slot 0 (llama_memory_seq_cp) and finishes there with the text it gives alone."""
    requests = [
        GenRequest(backend.prompt_tokens("The capital of France is", special=False), 2, ()),
        GenRequest(backend.prompt_tokens("1, 2, 3, 4,", special=False), 3, ()),
        GenRequest(backend.prompt_tokens("def fibonacci(n):\n", special=False), 30, ()),
    ]
    engine = BatchEngine(backend, 3)
    counting = _CountingLib(engine._lib, "llama_memory_seq_cp")
    engine._lib = counting
    try:
        together = engine.generate_many(requests)
    finally:
        engine._lib = counting._lib
        engine.close()
    assert counting.calls >= 1
    assert together[2].n_gen_tokens > max(together[0].n_gen_tokens, together[1].n_gen_tokens)
    _agree(backend, _one_at_a_time(backend, requests), together)
