"""Budget forcing (issue 24 part 2): a reasoning model still thinking when its thinking budget
is spent gets the template's end-of-thinking marker and answers with the answer budget.

The scripted FakeBackend writes one character per token under engine.forcing's rule; the real
tests run LlamaBackend.generate and BatchEngine on SmolLM2-135M behind a crafted template that
opens a think block (the model never closes it itself, so every sequence is forced)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeeval import records as rec
from edgeeval.cli.bench import run_settings_from_args
from edgeeval.cli.main import build_parser
from edgeeval.engine.backend import GenerationResult, LlamaBackend, LoadOptions
from edgeeval.engine.batch import BatchEngine, GenRequest
from edgeeval.engine.forcing import ThinkForce, pick
from edgeeval.errors import ConfigError
from edgeeval.report.protocols import protocol_rows
from edgeeval.sandbox.template import ChatTemplate
from edgeeval.score.extract import THINK_CLOSE
from edgeeval.score.generate import marker_tokens
from edgeeval.score.protocol import cut_in_thinking, plans
from edgeeval.score.tasks import score_by_kind, task_plans
from edgeeval.settings import THINK_LEAD_IN
from tests.builders import record
from tests.fake_backend import EOG, FakeBackend
from tests.test_generate import CHATML, FakeTask, gen_item
from tests.test_protocols import QWEN3_STYLE, R1_STYLE

THINK = 100  # thinking budget (tokens; characters on the fake)
ANSWER = 64  # gen_item's answer budget
LONG = "Let me think. " * 40  # 560 characters of thinking, never closed
FORCED = THINK_CLOSE + THINK_LEAD_IN  # what a forced close puts in, by default


def _score(replies, template=R1_STYLE, mode="force", batch=False, n=None, lead=THINK_LEAD_IN):
    backend = FakeBackend(replies=list(replies), template=template)
    task = FakeTask(given=tuple(gen_item(2, "3") for _ in range(n or len(replies))))
    settings = rec.RunSettings(max_think_tokens=THINK, think_budget_mode=mode, think_lead_in=lead)
    [plan, *_] = task_plans(backend, task, settings, model_kind="instruct")
    score, _, samples = score_by_kind(
        backend, task, settings, plan=plan, batch=backend if batch else None
    )
    return backend, score, samples


# --- the rule ---------------------------------------------------------------------------------


def test_the_rule_waits_for_the_budget_an_open_block_and_a_whole_utf8_character():
    force = ThinkForce(3, (7,), open_in_prompt=True)
    assert not force.due(b"ab", 2)  # under the budget
    assert force.due(b"abc", 3)  # spent, still thinking (the prompt opened the block)
    assert not force.due(b"a</think>b", 10)  # closed by the model itself
    assert not force.due("é".encode()[:1] + b"ab", 3)  # half a character: wait for it
    assert ThinkForce(3, (7,)).due(b"x<think>y", 3)
    assert not ThinkForce(3, (7,)).due(b"plain answer", 3)  # never opened: not thinking
    with pytest.raises(ValueError, match="marker"):
        ThinkForce(3, ())


def test_a_forced_answer_may_not_end_while_blank_and_pick_takes_the_next_best_token():
    force = ThinkForce(3, (7,), lead="\nFinal answer:")
    assert force.text == "</think>\nFinal answer:"
    out = b"abc" + force.text.encode()
    assert force.eog_allowed(out, -1)  # not forced: the model may end where it likes
    assert not force.eog_allowed(out, len(out))  # forced, nothing written yet
    assert not force.eog_allowed(out + b" \n\t", len(out))  # only white space
    assert force.eog_allowed(out + b" 4", len(out))
    is_eog = {0, 5}.__contains__
    logits = np.array([9.0, 1.0, 2.0, 3.0, 0.5, 8.0])
    assert pick(logits, is_eog) == 0  # allowed: plain argmax
    assert pick(logits, is_eog, allow_eog=False) == 3  # 0 and 5 end it: the next best
    assert pick(np.array([1.0, 2.0]), {0, 1}.__contains__, allow_eog=False) == 1  # only EOGs


# --- plans: which rows force ------------------------------------------------------------------


def test_plans_force_thinking_rows_only_and_fall_back_to_cut_without_a_known_marker():
    r1 = ChatTemplate(R1_STYLE)
    [on] = plans(r1, think_tokens=THINK)
    assert (on.thinking, on.think_close, on.forcing, on.note) == ("on", THINK_CLOSE, True, "")
    assert on.think_lead == THINK_LEAD_IN
    assert plans(r1, think_tokens=THINK, think_lead_in="")[0].think_lead == ""
    [cut] = plans(r1, think_tokens=THINK, think_budget_mode="cut")
    assert (cut.think_close, cut.forcing) == ("", False)
    on, off = plans(ChatTemplate(QWEN3_STYLE), think_tokens=THINK)
    assert (on.forcing, off.forcing, off.think_close) == (True, False, "")
    [plain] = plans(ChatTemplate(CHATML), think_tokens=THINK)  # not a reasoning model
    assert plain == plans(ChatTemplate(CHATML), think_tokens=THINK, think_budget_mode="cut")[0]
    assert not plain.forcing and plain.thinking == ""
    harmony = ChatTemplate("{{ '<|start|>assistant<|channel|>analysis<|message|>' }}")
    [unknown] = plans(harmony, think_tokens=THINK)
    assert not unknown.forcing and "end-of-thinking marker is not known" in unknown.note
    with pytest.raises(ValueError, match="force, cut"):
        plans(r1, think_tokens=THINK, think_budget_mode="sometimes")


def test_the_mode_is_a_setting_in_the_resume_key_and_refused_when_unknown():
    default = rec.RunSettings()
    assert default.think_budget_mode == "force"
    assert rec.RunSettings(think_budget_mode="cut").key() != default.key()
    assert "think_budget_mode" not in default.shown()
    with pytest.raises(ConfigError, match="--think-budget-mode"):
        rec.RunSettings(think_budget_mode="sometimes")
    assert default.think_lead_in == THINK_LEAD_IN and "think_lead_in" not in default.shown()
    other = rec.RunSettings(think_lead_in="\nAnswer:")
    assert other.key() != default.key() and other.shown()["think_lead_in"] == "\nAnswer:"


def test_the_cli_option_sets_the_mode():
    parse = build_parser().parse_args
    assert run_settings_from_args(parse(["bench"])).think_budget_mode == "force"
    cut = run_settings_from_args(parse(["bench", "--think-budget-mode", "cut"]))
    assert cut.think_budget_mode == "cut"
    with pytest.raises(SystemExit):
        parse(["bench", "--think-budget-mode", "sometimes"])
    assert run_settings_from_args(parse(["bench"])).think_lead_in == THINK_LEAD_IN
    typed = parse(["bench", "--think-lead-in", r"\n\nAnswer (C:\\x):"])  # as a shell passes it
    assert run_settings_from_args(typed).think_lead_in == "\n\nAnswer (C:\\x):"
    assert run_settings_from_args(parse(["bench", "--think-lead-in", ""])).think_lead_in == ""


def test_the_marker_and_lead_in_are_tokenized_together():
    backend = FakeBackend(template=R1_STYLE)
    [on] = plans(ChatTemplate(R1_STYLE), think_tokens=THINK, think_lead_in="\nSo:")
    assert marker_tokens(backend, on) == tuple(backend.tokenize("</think>\nSo:", add_bos=False))
    [cut] = plans(ChatTemplate(R1_STYLE), think_tokens=THINK, think_budget_mode="cut")
    assert marker_tokens(backend, cut) == ()


# --- scored on the scripted fake ----------------------------------------------------------------


def test_a_sequence_thinking_past_its_budget_gets_the_marker_once_then_answers():
    """The script thinks for 560 characters, then answers; forced at 100 it gets the marker
    and the lead-in and answers right away, within the answer budget. A script that closes
    early is left alone (no lead-in)."""
    natural = "2 + 1 = 3.\n</think>\nThe answer is 3."
    backend, score, samples = _score([LONG + "</think> 3.", natural])
    forced, alone = samples
    assert forced.output == LONG[:THINK] + "</think>\n\nFinal answer: 3."
    assert forced.output.count(THINK_CLOSE) == 1
    assert forced.output.index(THINK_CLOSE) == THINK  # exactly at the budget
    assert forced.thinking_forced and forced.correct and forced.stop_reason == "eog"
    answer_tokens = forced.n_gen_tokens - THINK
    assert 0 < answer_tokens <= ANSWER
    assert (alone.output, alone.thinking_forced) == (natural, False)
    assert (score.n_thinking_forced, score.n_cut_in_thinking, score.acc) == (1, 0, 1.0)
    assert [c[2] for c in backend.calls if c[0] == "generate"] == [THINK + ANSWER] * 2


def test_an_answer_that_runs_on_is_cut_at_the_answer_budget_after_the_marker():
    backend, score, [sample] = _score([LONG + "</think>" + "x" * 500])
    assert sample.thinking_forced and sample.stop_reason == "max_tokens"
    assert sample.output == LONG[:THINK] + FORCED + "x" * ANSWER
    assert sample.n_gen_tokens == THINK + ANSWER  # the marker's tokens are not counted
    assert score.n_cut_in_thinking == 0  # it is out of its thinking: not cut there


def test_a_forced_answer_never_ends_blank_but_a_natural_one_may():
    """The scripted model would end right after the marker (EOG), as SmolLM2 did: forced, the
    end is passed over until a word is written; after its own close, it ends where it likes."""
    backend, score, [forced, spaced, natural, custom] = _score(
        [
            LONG + "</think>" + EOG + " 3" + EOG + " more",
            LONG + "</think>" + " " + EOG + "\n" + EOG + "3",
            "3</think>" + EOG + " 3",
            LONG + "</think>" + EOG + " 3" + EOG,
        ]
    )
    assert forced.output == LONG[:THINK] + FORCED + " 3" and forced.stop_reason == "eog"
    assert spaced.output == LONG[:THINK] + FORCED + " \n3"
    assert natural.output == "3</think>" and not natural.thinking_forced
    assert all(s.output.partition(THINK_LEAD_IN)[2].strip() for s in (forced, spaced, custom))
    _, _, [bare] = _score([LONG + "</think>" + EOG + "4"], lead="")  # no lead-in: the same rule
    assert bare.output == LONG[:THINK] + THINK_CLOSE + "4"


def test_cut_mode_keeps_the_old_behaviour():
    _, score, [sample] = _score([LONG + "</think>\nThe answer is 3."], mode="cut")
    assert sample.output == LONG[: THINK + ANSWER] and not sample.thinking_forced
    assert (score.n_thinking_forced, score.n_cut_in_thinking, score.acc) == (0, 1, 0.0)


def test_batched_and_one_at_a_time_give_the_same_samples():
    replies = [LONG + "</think>" + EOG + " 3.", "3.\n</think>\nThe answer is 3.", LONG]
    _, alone_score, alone = _score(replies)
    backend, batch_score, together = _score(replies, batch=True)
    assert ("generate_many", 3) in backend.calls
    assert together == alone and batch_score.n_thinking_forced == 2
    assert dataclasses.replace(batch_score, elapsed_s=0) == dataclasses.replace(
        alone_score, elapsed_s=0
    )


def test_a_model_that_does_not_think_is_untouched():
    """No thinking plan, no ThinkForce: the backend's generate is called without `force`
    (so a backend written before forcing still works) and the text is as scripted."""

    class OldBackend(FakeBackend):
        def generate(self, prompt_tokens, *, max_tokens, stop=()):  # no `force`
            return super().generate(prompt_tokens, max_tokens=max_tokens, stop=stop)

    backend = OldBackend(replies=["The answer is 3. " * 10], template=CHATML)
    task = FakeTask(given=(gen_item(2, "3"),))
    settings = rec.RunSettings(max_think_tokens=THINK)
    [plan] = task_plans(backend, task, settings, model_kind="instruct")
    score, _, [sample] = score_by_kind(backend, task, settings, plan=plan)
    assert sample.output == ("The answer is 3. " * 10)[:ANSWER]
    assert not sample.thinking_forced and score.n_thinking_forced == 0


def test_the_report_shows_the_forced_count_beside_the_cut_count():
    _, score, _ = _score([LONG, LONG + "</think> 3"])
    measured = dataclasses.replace(record("m", peak_gb=0.1, acc=0.5), tasks=(score,))
    rows = protocol_rows([measured])
    assert rows[0]["thinking closed at budget"] == "2"
    assert rows[0]["cut in thinking"] == "0"


# --- the real engines -------------------------------------------------------------------------

#: A crafted ChatML template whose generation prompt opens a think block (as R1-Distill's):
#: SmolLM2 has never seen <think>, so it never closes it and every sequence is forced.
OPENS_THINK = R1_STYLE
#: Requests for long replies: a short one ("What is 2 + 3?") ends before any budget of a few
#: tokens and is, rightly, never forced.
QUESTIONS = (
    "Write a long story about a dragon.",
    "Explain in detail how a car engine works.",
    "List the numbers from 1 to 50.",
    "Describe the history of Rome.",
)
REAL_THINK, REAL_ANSWER = 8, 16


@pytest.fixture(scope="module")
def smollm(smollm_path):
    b = LlamaBackend(str(smollm_path), LoadOptions(n_ctx=256, n_threads=2))
    yield b
    b.close()


def _real_requests(backend: LlamaBackend) -> list[GenRequest]:
    template = ChatTemplate(OPENS_THINK, **backend.special_token_texts())
    from edgeeval.sandbox.template import render_chats

    texts = render_chats(template, [[{"role": "user", "content": q}] for q in QUESTIONS])
    marker = tuple(backend.tokenize(FORCED, add_bos=False))
    force = ThinkForce(REAL_THINK, marker, lead=THINK_LEAD_IN, open_in_prompt=True)
    assert all(t.rstrip().endswith("<think>") for t in texts)
    return [
        GenRequest(backend.prompt_tokens(t, special=True), REAL_THINK + REAL_ANSWER, (), force)
        for t in texts
    ]


def _answered(prompt_tokens: list[int], result: GenerationResult | str) -> str:
    """The answer of a forced real sequence, after checking that it is one: forced once, at
    the budget, a word of answer after the lead-in, not cut inside its thinking."""
    assert isinstance(result, GenerationResult), result
    assert result.thinking_forced and result.text.count(FORCED) == 1, result
    assert REAL_THINK < result.n_gen_tokens <= REAL_THINK + REAL_ANSWER, result
    assert not cut_in_thinking("<think>", result.text, result.stop_reason), result
    answer = result.text.split(FORCED)[1]
    assert answer.strip(), result  # a word of answer, never an empty one
    return answer


@pytest.mark.real
def test_real_model_every_sequence_is_forced_once_and_answers(smollm):
    """One at a time and batched, every sequence gets the marker and lead-in exactly at its
    budget and then answers: SmolLM2 once ended right after the bare marker ("List the
    numbers"); end-of-generation is passed over while the answer is blank."""
    requests = _real_requests(smollm)
    alone = [
        smollm.generate(r.tokens, max_tokens=r.max_tokens, stop=r.stop, force=r.force)
        for r in requests
    ]
    together = {}
    for n_seq in (1, 3):
        engine = BatchEngine(smollm, n_seq)
        try:
            together[n_seq] = engine.generate_many(requests)
        finally:
            engine.close()
    for request, result in zip(requests, alone, strict=True):  # the marker sits exactly at
        _answered(request.tokens, result)
        first = smollm.generate(request.tokens, max_tokens=REAL_THINK)  # the budget: the
        assert result.text.split(FORCED)[0] == first.text  # same first REAL_THINK tokens
        assert first.stop_reason == "max_tokens"
    assert together[1] == alone  # one sequence per decode: the same rule, the same positions
    # Three per decode: every sequence is forced at the same step and position as alone, and
    # answers. Here the whole texts were equal to one-at-a-time's (README), as were unforced
    # batched runs; only the text up to the marker is required to be, as batch shape may change
    # llama.cpp's kernels on other hosts (engine/batch.py).
    for request, a, b in zip(requests, alone, together[3], strict=True):
        _answered(request.tokens, b)
        assert b.text.split(FORCED)[0] == a.text.split(FORCED)[0]


@pytest.mark.real
def test_real_model_without_forcing_is_cut_inside_its_thinking(smollm):
    requests = [dataclasses.replace(r, force=None) for r in _real_requests(smollm)]
    for r in requests:
        result = smollm.generate(r.tokens, max_tokens=r.max_tokens, stop=r.stop)
        assert not result.thinking_forced and THINK_CLOSE not in result.text


@pytest.mark.real
def test_real_model_scored_through_the_task_every_answer_is_closed_and_none_cut(
    smollm, monkeypatch
):
    """The scoring path on the real model, batched: the crafted template makes a thinking
    plan, every sequence gets its marker at the budget, and none is cut inside its thinking."""
    monkeypatch.setattr(smollm, "chat_template", lambda: OPENS_THINK)
    items = tuple(
        dataclasses.replace(gen_item(i, "0"), question=q, few_shot=(), max_tokens=REAL_ANSWER)
        for i, q in enumerate(QUESTIONS[:3])
    )
    task = FakeTask(given=items)
    settings = rec.RunSettings(max_think_tokens=REAL_THINK)
    [plan] = task_plans(smollm, task, settings, model_kind="instruct")
    assert plan.forcing
    engine = BatchEngine(smollm, 3)
    try:
        score, _, samples = score_by_kind(smollm, task, settings, plan=plan, batch=engine)
    finally:
        engine.close()
    assert [s.thinking_forced for s in samples] == [True] * 3
    assert all(s.output.count(FORCED) == 1 and s.output.split(FORCED)[1].strip() for s in samples)
    assert (score.n_thinking_forced, score.n_cut_in_thinking) == (3, 0)


# --- a template whose end-of-thinking marker is not known: a warning, then cut mode ---------

HARMONY = "{{ '<|start|>assistant<|channel|>analysis<|message|>' }}"


def test_force_on_a_template_without_a_known_marker_warns_then_runs_in_cut_mode(capsys):
    """gpt-oss-style channels: `--think-budget-mode force` cannot close the thinking, so the
    task runs in cut mode (no lead-in, no forcing), its score carries the note, and the worker
    sends a warning that the run's progress prints as a line."""
    from edgeeval.engine.process import Event
    from edgeeval.run import worker
    from edgeeval.run.accuracy import score_tasks
    from edgeeval.run.runner import _describe

    backend = FakeBackend(replies=[LONG], template=HARMONY)
    task = FakeTask(given=(gen_item(2, "3"),))
    settings = rec.RunSettings(max_think_tokens=THINK)  # force: the default
    journal = worker._ItemJournal(settings, [task], worker._Measured(), None)
    scores = score_tasks(
        backend, [task], settings, model_kind="instruct", on_score=journal.on_score
    )
    [result] = scores.results
    score, [sample] = result.score, result.gen_samples
    assert (score.n_thinking_forced, sample.thinking_forced) == (0, False)
    assert sample.output == LONG[: THINK + ANSWER]  # the budgets added up: cut mode
    assert "end-of-thinking marker is not known" in score.reason
    events = [Event.from_line(line) for line in capsys.readouterr().out.splitlines()]
    [warning] = [e for e in events if e is not None and e.kind == "warning"]
    line = _describe("gpt", warning)
    assert line.startswith(f"gpt: {task.name}") and "warning: --think-budget-mode force" in line
    assert "(cut mode)" in line
