"""edgeeval's sandboxed chat-template rendering equals llama-cpp-python's own Jinja2ChatFormatter
on every embedded model, for conversations with a system turn, few-shot turns, a begun
assistant reply and unusual text, with and without the generation prompt.

The reference side is what llama-cpp-python itself builds from the file: the template from the
GGUF metadata and the BOS/EOS texts from its vocabulary (as `Llama.__init__` does). The
edgeeval side goes through its own path: the template and token texts that
LlamaBackend reads, rendered in the sandbox process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeeval.engine.backend import LlamaBackend, LoadOptions
from edgeeval.sandbox.template import ChatTemplate, Message, render_chats
from edgeeval.score.generate import chat_messages
from edgeeval.score.instruct import request
from tests.conftest import _fetch_real

pytestmark = pytest.mark.real

MODELS = [
    "smollm2-135m-instruct-q4_1",
    "qwen2.5-coder-0.5b-instruct-q4_k_m",
    "gemma-3-270m-q4_k_m",
]
SHOTS = (("What is 1 + 1?", "1 + 1 = 2. The answer is 2."), ("And 2 + 2?", "The answer is 4."))
CONVERSATIONS: list[list[Message]] = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [
        {"role": "system", "content": "You are a careful assistant. Answer briefly."},
        {"role": "user", "content": "Name a prime number above 10."},
    ],
    chat_messages("What is 3 + 4?", SHOTS),  # edgeeval's few-shot turns
    [{"role": "system", "content": "Be terse."}, *chat_messages("5 * 6?", SHOTS)],
    [
        request('def f(x: int) -> int:\n    """Double x."""\n'),  # the instruct code request
        {"role": "assistant", "content": "Below is a script:\n```python\ndef f(x):"},
    ],
    [{"role": "user", "content": "naïve — 日本語 {{ not jinja }} {% raw %} <b>&amp;</b>\n\n  x"}],
]


def reference(path: Path) -> tuple[str | None, str, str]:
    """The default template and the BOS/EOS texts as llama-cpp-python reads them."""
    from llama_cpp import Llama

    llm = Llama(str(path), vocab_only=True, verbose=False)
    try:
        eos, bos = llm.token_eos(), llm.token_bos()
        eos_text = llm._model.token_get_text(eos) if eos != -1 else ""
        bos_text = llm._model.token_get_text(bos) if bos != -1 else ""
        return llm.metadata.get("tokenizer.chat_template"), bos_text, eos_text
    finally:
        llm.close()


def reference_render(template: str, bos: str, eos: str, messages: list[Message], **kw) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    add = kw.pop("add_generation_prompt", True)
    formatter = Jinja2ChatFormatter(
        template=template, eos_token=eos, bos_token=bos, add_generation_prompt=add
    )
    return formatter(messages=messages, **kw).prompt


@pytest.fixture(scope="module", params=MODELS)
def model(request: pytest.FixtureRequest) -> tuple[str, ChatTemplate | None, tuple]:
    path = _fetch_real(request.param)
    backend = LlamaBackend(str(path), LoadOptions(n_ctx=64, n_threads=1))
    try:
        source = backend.chat_template()
        ours = ChatTemplate(source, **backend.special_token_texts()) if source else None
    finally:
        backend.close()
    return request.param, ours, reference(path)


def test_the_template_and_token_texts_are_the_ones_llama_cpp_python_reads(model) -> None:
    name, ours, (source, bos, eos) = model
    if name.startswith("gemma"):  # the embedded Gemma 3 270M is the base model
        assert ours is None and source is None
        return
    assert ours is not None and ours.source == source
    assert (ours.bos_token, ours.eos_token) == (bos, eos)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_rendering_equals_llama_cpp_pythons_jinja2_chat_formatter(
    model, add_generation_prompt: bool
) -> None:
    name, ours, (source, bos, eos) = model
    if ours is None:
        pytest.skip(f"{name} has no chat template (a base model: completion prompts)")
    got = render_chats(ours, CONVERSATIONS, add_generation_prompt=add_generation_prompt)
    want = [
        reference_render(source, bos, eos, c, add_generation_prompt=add_generation_prompt)
        for c in CONVERSATIONS
    ]
    for conversation, mine, theirs in zip(CONVERSATIONS, got, want, strict=True):
        assert mine == theirs, conversation
    assert all("What is 3 + 4?" in text for text in got[2:3])


def test_template_variables_reach_the_template_as_in_the_reference(model) -> None:
    """Extra variables (Qwen3's enable_thinking) are passed the same way on both sides."""
    name, ours, (source, bos, eos) = model
    if ours is None:
        pytest.skip(f"{name} has no chat template")
    probe = ChatTemplate(
        source + "{% if enable_thinking is defined %}[thinking={{ enable_thinking }}]{% endif %}",
        ours.bos_token,
        ours.eos_token,
    )
    for value in (True, False):
        got = render_chats(probe, CONVERSATIONS[:2], variables={"enable_thinking": value})
        want = [
            reference_render(probe.source, bos, eos, c, enable_thinking=value)
            for c in CONVERSATIONS[:2]
        ]
        assert got == want and all(t.endswith(f"[thinking={value}]") for t in got)
