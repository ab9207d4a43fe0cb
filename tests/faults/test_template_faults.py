"""Issue 20, fault 9: a chat template that renders a lone surrogate ('\\ud800') made the
model's accuracy phase fail with UnicodeEncodeError in the tokenizer. Now the rendering is
refused as "invalid" and each task falls back to completion prompts, with the reason."""

from __future__ import annotations

import pytest

from edgeeval import records as rec
from edgeeval.errors import ChatTemplateError
from edgeeval.sandbox.template import ChatTemplate, render_chat
from edgeeval.score.generate import score_generate_task
from edgeeval.score.protocol import Plan
from edgeeval.score.tasks import score_by_kind
from tests.fake_backend import FakeBackend, FakeTask
from tests.test_generate import gen_item, humaneval_items

LONE_SURROGATE = '{{ "\\ud800" }}{% for m in messages %}{{ m["content"] }}{% endfor %}'
CODE_SETTINGS = rec.RunSettings(allow_code_exec=True, unsafe_code_exec=True)


class Utf8Backend(FakeBackend):
    """A FakeBackend whose tokenizer, like llama.cpp's, takes the prompt as UTF-8 bytes."""

    def prompt_tokens(self, text: str, *, special: bool) -> list[int]:
        text.encode("utf-8")
        return super().prompt_tokens(text, special=special)


def test_a_lone_surrogate_is_refused_as_an_invalid_rendering():
    with pytest.raises(ChatTemplateError) as caught:
        render_chat(ChatTemplate(LONE_SURROGATE), [{"role": "user", "content": "hi"}])
    assert caught.value.reason == "invalid"
    assert "not valid Unicode" in str(caught.value) and "'\\ud800' at character 0" in str(
        caught.value
    )


def test_a_generate_task_falls_back_to_completion_prompts_and_says_why():
    backend = Utf8Backend(replies=["The answer is 3."], template=LONE_SURROGATE)
    score, samples = score_generate_task(
        backend, FakeTask(), [gen_item(2, "3")], model_kind="instruct"
    )
    assert (score.prompt_format, score.status, score.acc) == ("completion", "ok", 1.0)
    assert "chat template invalid" in score.reason and "not valid Unicode" in score.reason
    assert "used completion prompts instead" in score.reason
    assert samples[0].prompt.startswith("Question: ")


def test_a_code_task_under_the_instruct_protocol_falls_back_too():
    items, problems = humaneval_items(1)
    backend = Utf8Backend(replies=[problems[0]["canonical_solution"]], template=LONE_SURROGATE)
    task = FakeTask(kind="code", given=tuple(items))
    score, _, samples = score_by_kind(
        backend, task, CODE_SETTINGS, plan=Plan("instruct"), model_kind="instruct"
    )
    assert (score.prompt_format, score.acc, samples[0].status) == ("completion", 1.0, "passed")
    assert "not valid Unicode" in score.reason and "used completion prompts" in score.reason
