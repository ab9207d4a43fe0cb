"""Chat templates, rendered in a sandbox with time and size limits (DESIGN.md, Promises 4).

A GGUF carries its chat template as Jinja source (`tokenizer.chat_template`): code written by
whoever made the file. edgeeval renders it the way transformers does (Jinja's
ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, the same `tojson`,
`raise_exception`, `strftime_now`, `bos_token`, `eos_token`, `add_generation_prompt`), inside
two walls:

1. In Jinja, for precise errors: an unsafe attribute (`''.__class__`) raises at once instead of
   rendering as empty; `*`, `+`, `**`, `%`, `~`, every filter and every method call are checked
   against the size limits *before* they build their result where the size is predictable
   (`'a' * 10**8`, `x|join`, `s.ljust(n)`), and after otherwise; the output is streamed with
   `Template.generate()` and cut off at the limit; a CPU-time timer (ITIMER_PROF) bounds each
   render, which also catches loops that print nothing.
2. Around Jinja, for what the first wall does not foresee: the rendering runs in a fresh
   interpreter with RLIMIT_AS (memory), RLIMIT_CPU and a wall-clock timeout in the parent.

Why a child process: the caller is the worker that holds the model, so a template must neither
exhaust its memory nor stop it. Python cannot cap memory per call, and SIGALRM-style timers
work only in the main thread and cannot interrupt one long C call (a huge `str.join`); the
kernel's limits on a separate process can. All conversations of a task go to one child, so the
interpreter start (about 0.1 s) is paid once per task, not per prompt.

This module is the parent side; what runs inside the child (the first wall and the kernel
limits) is edgeeval.sandbox.template_child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeGuard

from edgeeval.errors import ChatTemplateError

Message = dict[str, str]
#: Extra template variables a caller may set: Qwen3's `enable_thinking`, gpt-oss's
#: `reasoning_effort`. Only plain values; the names the renderer itself sets are refused.
Variables = dict[str, bool | int | str]
_RESERVED = ("messages", "add_generation_prompt", "bos_token", "eos_token")
REASONS = ("unsafe", "too_large", "timeout", "invalid", "raised", "error", "crashed")


@dataclass(frozen=True)
class RenderLimits:
    """What one sandboxed rendering may use. A prompt is a few thousand characters; a million
    is far past any context window, yet small enough to hold without harm."""

    max_chars: int = 1_000_000  # the output, and any string built on the way
    max_items: int = 100_000  # any list built on the way (Jinja's own range limit)
    cpu_s: float = 2.0  # CPU seconds per conversation
    memory_bytes: int = 512 * 2**20  # address space of the sandbox process
    wall_s: float = 30.0  # wall clock for the whole child, plus cpu_s per render


@dataclass(frozen=True)
class ChatTemplate:
    """A model's template source and the special-token texts it may print."""

    source: str
    bos_token: str = ""
    eos_token: str = ""


def render_chat(
    template: ChatTemplate,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool = True,
    limits: RenderLimits = RenderLimits(),
    variables: Variables | None = None,
) -> str:
    """The prompt text for one conversation; raises ChatTemplateError when refused."""
    return render_chats(
        template,
        [messages],
        add_generation_prompt=add_generation_prompt,
        limits=limits,
        variables=variables,
    )[0]


def render_chats(
    template: ChatTemplate,
    conversations: Sequence[Sequence[Message]],
    *,
    add_generation_prompt: bool = True,
    limits: RenderLimits = RenderLimits(),
    variables: Variables | None = None,
) -> list[str]:
    """Prompt texts for many conversations, rendered in one sandbox process. `variables` are
    extra names the template sees (`{"enable_thinking": False}`).

    Raises ChatTemplateError (with `reason`) for the first conversation that fails, also for
    a text that is not valid Unicode (a lone surrogate: reason "invalid").
    """
    if not conversations:
        return []
    variables = dict(variables or {})
    for name, value in variables.items():
        if name in _RESERVED or not isinstance(value, bool | int | str):
            raise ValueError(f"template variable {name!r} cannot be set to {value!r}")
    request = {
        "template": asdict(template),
        "limits": asdict(limits),
        "add_generation_prompt": add_generation_prompt,
        "conversations": [list(c) for c in conversations],
        "variables": variables,
    }
    answers = _run_sandbox(request, limits, len(conversations))
    out = []
    for answer in answers:
        if "error" in answer:
            raise ChatTemplateError(answer["error"]["message"], reason=answer["error"]["reason"])
        out.append(_encodable(answer["text"]))
    return out


def _encodable(text: str) -> str:
    """`text` if it can be encoded as UTF-8 (what every tokenizer takes); a lone surrogate
    (`"\\ud800"` in the template) raises ChatTemplateError("invalid") instead, so the
    caller falls back to completion prompts rather than failing in the tokenizer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise ChatTemplateError(
            f"the template rendered text that is not valid Unicode ({exc.reason}: "
            f"{bad!r} at character {exc.start})",
            reason="invalid",
        ) from None
    return text


def _run_sandbox(request: dict[str, Any], limits: RenderLimits, n: int) -> list[dict[str, Any]]:
    """Send the request to a fresh interpreter; return its per-conversation answers."""
    package_parent = str(Path(__file__).resolve().parents[2])
    code = (
        f"import sys; sys.path.insert(0, {package_parent!r}); "
        "from edgeeval.sandbox.template_child import serve; raise SystemExit(serve())"
    )
    timeout = limits.wall_s + limits.cpu_s * n
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", code],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ChatTemplateError(
            f"rendering took over {timeout:.0f} s of wall-clock time", reason="timeout"
        ) from None
    if proc.returncode == -signal.SIGXCPU:
        raise ChatTemplateError("the sandbox process ran out of CPU time", reason="timeout")
    try:
        answers = json.loads(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        answers = None
    if not _well_formed(answers, n):
        tail = proc.stderr.strip().splitlines()[-3:]
        raise ChatTemplateError(
            f"the sandbox process exited with code {proc.returncode}: " + " | ".join(tail),
            reason="crashed",
        )
    return answers


def _well_formed(answers: Any, n: int) -> TypeGuard[list[dict[str, Any]]]:
    if not isinstance(answers, list) or len(answers) != n:
        return False
    return all(
        isinstance(a, dict)
        and (
            isinstance(a.get("text"), str)
            or (isinstance(a.get("error"), dict) and a["error"].get("reason") in REASONS)
        )
        for a in answers
    )
