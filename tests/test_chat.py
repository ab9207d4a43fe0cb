"""Chat templates render like transformers renders them, and hostile templates are stopped by
the sandbox (attribute access, huge strings by every route, endless loops) with the reason."""

import sys

import pytest

from edgeeval.errors import ChatTemplateError
from edgeeval.sandbox.template import ChatTemplate, RenderLimits, render_chat, render_chats

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
HELLO = [{"role": "user", "content": "Hi"}]


def render(source: str, **limits: float) -> str:
    return render_chat(
        ChatTemplate(source, bos_token="<s>", eos_token="</s>"),
        HELLO,
        limits=RenderLimits(**limits),
    )


def test_chatml_renders_turns_and_the_generation_prompt():
    messages = [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "2+2?"},
    ]
    assert render_chat(ChatTemplate(CHATML), messages) == (
        "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (
        render_chat(ChatTemplate(CHATML), HELLO, add_generation_prompt=False)
        == "<|im_start|>user\nHi<|im_end|>\n"
    )


def test_many_conversations_render_in_one_call_in_order():
    conversations = [[{"role": "user", "content": str(i)}] for i in range(5)]
    texts = render_chats(ChatTemplate("{{ messages[0].content }}"), conversations)
    assert texts == ["0", "1", "2", "3", "4"]


def test_the_globals_transformers_templates_use():
    assert (
        render("{{ bos_token }}{{ messages|tojson }}{{ eos_token }}")
        == '<s>[{"role": "user", "content": "Hi"}]</s>'
    )  # plain json.dumps, as transformers
    assert render("{{ strftime_now('%Y')|length }}") == "4"
    assert (
        render(
            "{%- for m in messages %}{% if loop.last %}{% break %}{% endif %}"
            "{% endfor %}{% generation %}ok{% endgeneration %}"
        )
        == "ok"
    )


def test_raise_exception_is_reported_with_the_templates_message():
    with pytest.raises(ChatTemplateError, match="System role not supported") as info:
        render("{{ raise_exception('System role not supported') }}")
    assert info.value.reason == "raised"


@pytest.mark.parametrize(
    "source, attribute",
    [
        ("{{ ''.__class__.__mro__ }}", "__class__"),
        ("{{ ''.__class__ }}", "__class__"),  # Jinja alone would print this as empty text
        ("{{ cycler.__init__.__globals__ }}", "__init__"),
        ("{{ messages.pop() }}", "pop"),  # the immutable sandbox: no changing lists
    ],
)
def test_forbidden_attributes_stop_the_render(source, attribute):
    with pytest.raises(ChatTemplateError, match=f"'{attribute}'.*unsafe") as info:
        render(source)
    assert info.value.reason == "unsafe"


@pytest.mark.parametrize(
    "source, message",
    [
        ("{{ 'a' * 100000000 }}", "a string of 100,000,000 characters"),
        ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "output passed 1,000,000"),
        ("{{ (['x' * 1000] * 100000) | join }}", "joined string of 100,000,000"),
        ("{{ ' '.join(['a' * 999999] * 3) }}", "joined string"),
        ("{{ range(100000000) | join }}", "argument of 100,000,000"),
        ("{{ range(200000) | list }}", "Range too big"),
        (
            "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
            "{% endfor %}",
            "a string of 1,048,576",
        ),
        (
            "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
            "{% endfor %}",
            "a string of 1,048,576",
        ),
        ("{{ 'a'.ljust(100000000) }}", "argument of 100,000,000"),
        ("{{ 'a'|center(100000000) }}", "argument of 100,000,000"),
        ("{{ '{:>999999999}'.format(1) }}", "field width"),
        ("{{ '%0999999999d' % 1 }}", "field width"),
        ("{{ 2 ** 100000000 }}", "integer of about"),
    ],
)
def test_huge_values_are_refused_before_they_are_built(source, message):
    with pytest.raises(ChatTemplateError, match=message) as info:
        render(source)
    assert info.value.reason == "too_large"


def test_what_the_checks_miss_hits_the_sandbox_memory_limit():
    # 1,000 references to one string are a small list; printing it needs 900 MB. Reaching the
    # 512 MB limit takes 1.5 s of CPU here, close to the default 2 s CPU limit on a slow
    # host (a CI run hit the timer first), so this test gives the CPU timer room.
    with pytest.raises(ChatTemplateError, match="MemoryError") as info:
        render("{{ ['x' * 900000] * 1000 }}", cpu_s=30.0)
    assert info.value.reason == "too_large"


def test_a_loop_that_prints_nothing_is_stopped_by_the_cpu_timer():
    source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(ChatTemplateError, match="more than 0.3 s of CPU time") as info:
        render(source, cpu_s=0.3)
    assert info.value.reason == "timeout"


def test_the_parent_stops_waiting_at_the_wall_clock_limit(tmp_path, monkeypatch):
    # a sandbox process that hangs without using CPU (no template can do that by itself)
    hang = tmp_path / "python"
    hang.write_text("#!/bin/sh\nexec sleep 60\n")
    hang.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(hang))
    with pytest.raises(ChatTemplateError, match="wall-clock") as info:
        render("{{ 1 }}", cpu_s=0.1, wall_s=0.5)
    assert info.value.reason == "timeout"


def test_a_sandbox_that_dies_is_reported_as_crashed(tmp_path, monkeypatch):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'no jinja here' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(broken))
    with pytest.raises(ChatTemplateError, match="exited with code 3: no jinja here") as info:
        render("{{ 1 }}")
    assert info.value.reason == "crashed"


def test_invalid_jinja_is_reported_with_the_line():
    with pytest.raises(ChatTemplateError, match="line 2") as info:
        render("ok\n{% if %}")
    assert info.value.reason == "invalid"


def test_template_variables_are_passed_and_reserved_names_refused():
    source = "{% if enable_thinking is defined and not enable_thinking %}off{% else %}on{% endif %}"
    template = ChatTemplate(source)
    assert render_chat(template, HELLO) == "on"
    assert render_chat(template, HELLO, variables={"enable_thinking": False}) == "off"
    with pytest.raises(ValueError, match="messages"):
        render_chat(template, HELLO, variables={"messages": "x"})
    with pytest.raises(ValueError, match="obj"):
        render_chat(template, HELLO, variables={"obj": [1]})  # type: ignore[dict-item]
