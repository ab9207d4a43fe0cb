"""Protocols per kind of model (instruct, completion, reasoning) with a scripted FakeBackend:
the prompts each protocol builds, code extraction, thinking budgets, answers cut off while
thinking, Qwen3's thinking on/off rows, and gpt-oss's channels."""

from __future__ import annotations

import dataclasses

import pytest

from edgeeval import records as rec
from edgeeval.report.protocols import protocol_markdown, split_thinking
from edgeeval.report.summarize import rank_rows
from edgeeval.sandbox.codeexec import ExecLimits
from edgeeval.sandbox.jail import UNSAFE, Sandbox
from edgeeval.score import instruct
from edgeeval.score.extract import score_output, strip_thinking
from edgeeval.score.protocol import Plan, cut_in_thinking, plans
from edgeeval.score.tasks import score_by_kind, task_plans
from tests.builders import record
from tests.fake_backend import FakeBackend
from tests.test_generate import CHATML, FakeTask, gen_item, humaneval_items

# R1-Distill style: the generation prompt opens the thinking block.
R1_STYLE = CHATML.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")
# Qwen3 style: `enable_thinking` switches thinking off by writing an empty block.
QWEN3_STYLE = CHATML.replace(
    "{{ '<|im_start|>assistant\\n' }}",
    "{{ '<|im_start|>assistant\\n' }}{% if enable_thinking is defined and not enable_thinking %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}",
)
CODE_SETTINGS = rec.RunSettings(allow_code_exec=True, unsafe_code_exec=True)


def generate_calls(backend: FakeBackend) -> list[tuple]:
    return [c for c in backend.calls if c[0] == "generate"]


def chat_prompts(backend: FakeBackend) -> list[str]:
    return [c[1] for c in backend.calls if c[0] == "prompt_tokens"]


# --- instruct protocol for code (EvalPlus) ----------------------------------------------------


def test_instruct_code_asks_for_a_code_block_through_the_template_and_runs_the_extracted_code():
    items, problems = humaneval_items(2)
    whole = problems[0]["prompt"] + problems[0]["canonical_solution"]
    replies = [
        "from typing import List\n\n" + whole + "\n```\n\nThis works because ...",
        "    return None\n```",  # a body only: the prompt goes first, and it fails the tests
    ]
    backend = FakeBackend(replies=replies, template=CHATML)
    task = FakeTask(kind="code", given=tuple(items))
    score, _, samples = score_by_kind(
        backend, task, CODE_SETTINGS, plan=Plan("instruct"), model_kind="instruct"
    )
    prompt = chat_prompts(backend)[0]
    assert instruct.INSTRUCTION in prompt and problems[0]["prompt"].strip() in prompt
    assert prompt.endswith("<|im_start|>assistant\n" + instruct.RESPONSE + "\n```python\n")
    call = generate_calls(backend)[0]
    assert call[2] >= instruct.MIN_TOKENS and call[3] == instruct.STOPS
    assert [s.status for s in samples] == ["passed", "failed"]
    assert "This works" not in samples[0].extracted
    assert samples[0].extracted.startswith("from typing import List")
    assert samples[1].extracted == problems[1]["prompt"] + "    return None\n"
    assert (score.protocol, score.prompt_format, score.n, score.acc) == (
        "instruct",
        "chat",
        2,
        0.5,
    )


def test_completion_protocol_for_code_is_the_humaneval_prompt_as_it_is():
    items, problems = humaneval_items(1)
    backend = FakeBackend(replies=[problems[0]["canonical_solution"]], template=CHATML)
    score, _, samples = score_by_kind(
        backend, FakeTask(kind="code", given=tuple(items)), CODE_SETTINGS, plan=Plan("completion")
    )
    assert not chat_prompts(backend)  # tokenized as raw text
    assert (score.protocol, score.prompt_format, score.acc) == ("completion", "completion", 1.0)
    assert samples[0].extracted == ""


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("Here:\n```python\ndef f():\n    return 1\n```\nand\n```python\nx = 2\n```", "def f():"),
        ("```\ndef f():\n    return 1\n```", "def f():"),  # a bare block
        ("```py\ndef f():\n    return 1", "def f():"),  # unclosed: runs to the end
        ("def f():\n    return 1", "def f():"),  # no block: the whole reply
        ("<think>```python\nwrong = 1\n```</think>```python\ndef f(): pass\n```", "def f():"),
    ],
)
def test_extract_code_takes_the_first_python_block(reply: str, code: str) -> None:
    extracted = instruct.extract_code(reply)
    assert extracted.startswith(code) and "```" not in extracted and "wrong" not in extracted


def test_extract_code_prefers_a_python_block_over_an_earlier_bare_one():
    reply = "```\n$ python run.py\n```\n```python\ndef f():\n    return 1\n```"
    assert instruct.extract_code(reply) == "def f():\n    return 1"


def test_auto_protocol_follows_the_kind_and_falls_back_without_a_template():
    template_plans = plans(None, requested="instruct", model_kind="instruct")
    assert [(p.protocol, bool(p.note)) for p in template_plans] == [("completion", True)]
    assert plans(None, model_kind="instruct")[0].protocol == "completion"
    from edgeeval.sandbox.template import ChatTemplate

    chatml = ChatTemplate(CHATML)
    assert plans(chatml, model_kind="instruct")[0] == Plan("instruct")
    assert plans(chatml, model_kind="base")[0] == Plan("completion")
    assert plans(chatml, requested="completion", model_kind="instruct")[0] == Plan("completion")
    with pytest.raises(ValueError):
        plans(chatml, requested="chat")


# --- reasoning models -------------------------------------------------------------------------


def test_a_reasoning_model_thinking_past_its_budget_is_counted_as_cut_in_thinking():
    """A scripted model that thinks for 500 characters (tokens here): with a 100-token
    thinking budget on top of the 64-token answer budget it is cut off inside <think> (cut
    mode; tests/test_budget_forcing.py has force mode)."""
    long_thought = "Let me think. " * 40  # 560 characters, never closed
    short = "2 + 1 = 3.\n</think>\nThe answer is 3."
    backend = FakeBackend(replies=[long_thought, short], template=R1_STYLE)
    task = FakeTask(given=(gen_item(2, "3"), gen_item(2, "3")))
    settings = rec.RunSettings(max_think_tokens=100, think_budget_mode="cut")
    [plan] = task_plans(backend, task, settings, model_kind="instruct")  # <think> in template
    assert (plan.protocol, plan.thinking, plan.think_tokens) == ("instruct", "on", 100)
    score, _, samples = score_by_kind(backend, task, settings, plan=plan)
    assert [c[2] for c in generate_calls(backend)] == [164, 164]  # 64 + 100
    assert [s.stop_reason for s in samples] == ["max_tokens", "eog"]
    assert [s.correct for s in samples] == [False, True]
    assert (score.n, score.acc, score.n_cut_in_thinking, score.thinking) == (2, 0.5, 1, "on")
    assert score.mean_thinking_chars > 0


def test_the_catalog_reasoning_flag_gives_a_budget_even_without_think_in_the_template():
    task = FakeTask(given=(gen_item(2, "3"),))
    backend = FakeBackend(template=CHATML)
    default = task_plans(backend, task, rec.RunSettings(), model_kind="instruct")
    assert default == [Plan("instruct")]
    flagged = task_plans(backend, task, rec.RunSettings(), model_kind="instruct", reasoning=True)
    assert flagged == [Plan("instruct", "on", 0)]  # FakeTask has no max_think_tokens
    budget = dataclasses.replace(task, name="t")
    budget.max_think_tokens = 2048  # type: ignore[attr-defined]
    [plan] = task_plans(backend, budget, rec.RunSettings(), reasoning=True)
    assert plan.think_tokens == 2048


def test_qwen3_style_templates_are_measured_with_thinking_on_and_off():
    backend = FakeBackend(
        replies=["<think>1 + 1 is 2, plus 1 is 3</think>The answer is 3.", "The answer is 4."],
        template=QWEN3_STYLE,
    )
    task = FakeTask(given=(gen_item(2, "3"),))
    settings = rec.RunSettings(max_think_tokens=50)
    found = task_plans(backend, task, settings, model_kind="instruct")
    assert [(p.thinking, p.think_tokens) for p in found] == [("on", 50), ("off", 0)]
    scores = [score_by_kind(backend, task, settings, plan=p)[0] for p in found]
    on_prompt, off_prompt = chat_prompts(backend)
    assert "<think>" not in on_prompt and off_prompt.endswith("<think>\n\n</think>\n\n")
    assert [c[2] for c in generate_calls(backend)] == [114, 64]
    assert [(s.thinking, s.acc) for s in scores] == [("on", 1.0), ("off", 0.0)]

    measured = dataclasses.replace(record("qwen3", peak_gb=0.5, acc=0.5), tasks=tuple(scores))
    rows = rank_rows(split_thinking([measured]))
    assert {r.name: r.task_acc["t"] for r in rows} == {"qwen3": 1.0, "qwen3 (thinking off)": 0.0}
    table = "\n".join(protocol_markdown([measured]))
    assert "| qwen3 | t | instruct | on |" in table
    assert "| qwen3 | t | instruct | off |" in table


def test_cut_in_thinking_reads_open_blocks_in_the_prompt_or_the_output():
    assert cut_in_thinking("...<think>\n", "still going", "max_tokens")
    assert cut_in_thinking("", "<think>still going", "n_ctx")
    assert not cut_in_thinking("", "<think>done</think> 3", "max_tokens")  # answer too long
    assert not cut_in_thinking("...<think>\n", "still going", "eog")  # it stopped by itself
    assert not cut_in_thinking("", "The answer is", "max_tokens")  # no thinking at all


def test_gpt_oss_channels_final_text_is_the_answer():
    harmony = (
        "<|channel|>analysis<|message|>Two plus one is three.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>The answer is 3."
    )
    assert strip_thinking(harmony) == ("The answer is 3.", len("Two plus one is three."))
    assert score_output(harmony, "3", "number").correct
    assert (
        score_output("<|channel|>analysis<|message|>The answer is 3", "3", "number").extracted == ""
    )
    prompt = "<|start|>user<|message|>2+1?<|end|><|start|>assistant"
    assert cut_in_thinking(prompt, "<|channel|>analysis<|message|>hmm, 3", "max_tokens")
    assert not cut_in_thinking(prompt, harmony, "max_tokens")
    assert cut_in_thinking(prompt, "analysisthinking and thinking", "max_tokens")
    # a reply that merely starts with the word is not taken for a channel
    assert strip_thinking("analysis shows the answer is 3") == ("analysis shows the answer is 3", 0)


# --- what the report shows --------------------------------------------------------------------


def test_timeouts_count_as_failures_and_harness_errors_are_shown_apart():
    items, problems = humaneval_items(3)
    replies = [problems[0]["canonical_solution"], "    while True:\n        pass\n", "x"]

    class Broken(FakeBackend):
        def generate(self, prompt_tokens, *, max_tokens, stop=()):  # noqa: ANN001, ANN202
            if len(generate_calls(self)) == 2:
                self.calls.append(("generate",))
                raise RuntimeError("llama_decode failed")
            return super().generate(prompt_tokens, max_tokens=max_tokens, stop=stop)

    backend = Broken(replies=replies)
    from edgeeval.score.generate import score_code_task

    score, _ = score_code_task(
        backend,
        FakeTask(kind="code"),
        items,
        sandbox=Sandbox(UNSAFE),
        limits=ExecLimits(wall_s=1.5, cpu_s=1),
        plan=Plan("completion"),
    )
    assert (score.n, score.acc, score.n_timeout, score.n_harness_error) == (2, 0.5, 1, 1)
    measured = dataclasses.replace(record("m", peak_gb=0.5, acc=0.5), tasks=(score,))
    row = "| m | t | completion | - | - | 2 | 50.0 | 1 | 1 | 0 | 0 |"
    assert row in "\n".join(protocol_markdown([measured]))


def test_records_without_protocols_add_nothing_to_the_report():
    old = record("old", peak_gb=0.5, acc=0.5)
    assert protocol_markdown([old]) == [] and split_thinking([old]) == [old]
