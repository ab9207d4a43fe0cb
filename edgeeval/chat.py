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
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_eval_context

from edgeeval.errors import ChatTemplateError

Message = dict[str, str]
REASONS = ("unsafe", "too_large", "timeout", "invalid", "raised", "error", "crashed")
_WIDE_FORMAT = re.compile(r"%[^a-zA-Z%]*?(\*|\d{7,})|\{[^{}]*?\d{7,}[^{}]*\}")


@dataclass(frozen=True)
class RenderLimits:
    """What one sandboxed rendering may use. A prompt is a few thousand characters; a million
    is far past any context window, yet small enough to hold without harm."""

    max_chars: int = 1_000_000        # the output, and any string built on the way
    max_items: int = 100_000          # any list built on the way (Jinja's own range limit)
    cpu_s: float = 2.0                # CPU seconds per conversation
    memory_bytes: int = 512 * 2**20   # address space of the sandbox process
    wall_s: float = 30.0              # wall clock for the whole child, plus cpu_s per render


@dataclass(frozen=True)
class ChatTemplate:
    """A model's template source and the special-token texts it may print."""

    source: str
    bos_token: str = ""
    eos_token: str = ""


def render_chat(template: ChatTemplate, messages: Sequence[Message], *,
                add_generation_prompt: bool = True,
                limits: RenderLimits = RenderLimits()) -> str:
    """The prompt text for one conversation; raises ChatTemplateError when refused."""
    return render_chats(template, [messages], add_generation_prompt=add_generation_prompt,
                        limits=limits)[0]


def render_chats(template: ChatTemplate, conversations: Sequence[Sequence[Message]], *,
                 add_generation_prompt: bool = True,
                 limits: RenderLimits = RenderLimits()) -> list[str]:
    """Prompt texts for many conversations, rendered in one sandbox process.

    Raises ChatTemplateError (with `reason`) for the first conversation that fails.
    """
    if not conversations:
        return []
    request = {"template": asdict(template), "limits": asdict(limits),
               "add_generation_prompt": add_generation_prompt,
               "conversations": [list(c) for c in conversations]}
    answers = _run_sandbox(request, limits, len(conversations))
    out = []
    for answer in answers:
        if "error" in answer:
            raise ChatTemplateError(answer["error"]["message"], reason=answer["error"]["reason"])
        out.append(answer["text"])
    return out


def _run_sandbox(request: dict[str, Any], limits: RenderLimits, n: int) -> list[dict[str, Any]]:
    """Send the request to a fresh interpreter; return its per-conversation answers."""
    package_parent = str(Path(__file__).resolve().parent.parent)
    code = (f"import sys; sys.path.insert(0, {package_parent!r}); "
            "from edgeeval.chat import _serve; raise SystemExit(_serve())")
    timeout = limits.wall_s + limits.cpu_s * n
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", code], input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ChatTemplateError(f"rendering took over {timeout:.0f} s of wall-clock time",
                                reason="timeout") from None
    if proc.returncode == -signal.SIGXCPU:
        raise ChatTemplateError("the sandbox process ran out of CPU time", reason="timeout")
    try:
        answers = json.loads(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        answers = None
    if not _well_formed(answers, n):
        tail = proc.stderr.strip().splitlines()[-3:]
        raise ChatTemplateError(f"the sandbox process exited with code {proc.returncode}: "
                                + " | ".join(tail), reason="crashed")
    return answers


def _well_formed(answers: Any, n: int) -> bool:
    if not isinstance(answers, list) or len(answers) != n:
        return False
    return all(isinstance(a, dict) and (isinstance(a.get("text"), str) or (
        isinstance(a.get("error"), dict) and a["error"].get("reason") in REASONS))
        for a in answers)


# --- inside the sandbox process ---------------------------------------------------------------


class _Stop(BaseException):
    """A limit was hit. BaseException, so no `except Exception` inside Jinja swallows it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _TemplateRaised(Exception):
    """The template called raise_exception(message), as transformers' templates do."""


def _serve() -> int:
    """Entry point of the sandbox process: JSON request on stdin, JSON answers on stdout."""
    request = json.loads(sys.stdin.read())
    limits = RenderLimits(**request["limits"])
    conversations = request["conversations"]
    _limit_process(limits, len(conversations))
    template = ChatTemplate(**request["template"])
    answers = _render_all(template, conversations, request["add_generation_prompt"], limits)
    sys.stdout.write(json.dumps(answers))
    return 0


def _limit_process(limits: RenderLimits, n: int) -> None:
    """Kernel limits for this process: memory, CPU for all renders, no files, no core dumps."""
    cpu = int(limits.cpu_s * n) + 10
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _render_all(template: ChatTemplate, conversations: list[list[Message]],
                add_generation_prompt: bool, limits: RenderLimits) -> list[dict[str, Any]]:
    env = _LimitedEnvironment(limits)
    try:
        with _cpu_timer(limits.cpu_s):
            compiled = env.from_string(template.source)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a recorded reason
        return [_failure(exc)] * len(conversations)
    out = []
    for messages in conversations:
        context = {"messages": messages, "add_generation_prompt": add_generation_prompt,
                   "bos_token": template.bos_token, "eos_token": template.eos_token}
        try:
            with _cpu_timer(limits.cpu_s):
                out.append({"text": _stream(compiled, context, limits.max_chars)})
        except BaseException as exc:  # noqa: BLE001
            out.append(_failure(exc))
    return out


def _failure(exc: BaseException) -> dict[str, Any]:
    """Map an exception from Jinja or a limit to {"error": {"reason", "message"}}."""
    if isinstance(exc, _Stop):
        reason, message = exc.reason, str(exc)
    elif isinstance(exc, SecurityError):
        reason, message = "unsafe", str(exc)
    elif isinstance(exc, TemplateSyntaxError):
        reason, message = "invalid", f"line {exc.lineno}: {exc.message}"
    elif isinstance(exc, _TemplateRaised):
        reason, message = "raised", str(exc)
    elif isinstance(exc, MemoryError):
        reason, message = "too_large", "MemoryError: the sandbox ran out of its memory limit"
    elif isinstance(exc, (OverflowError, RecursionError)):
        reason, message = "too_large", f"{type(exc).__name__}: {exc}"
    else:
        reason, message = "error", f"{type(exc).__name__}: {exc}"
    return {"error": {"reason": reason, "message": message[:500]}}


@contextlib.contextmanager
def _cpu_timer(seconds: float) -> Iterator[None]:
    """Raise _Stop("timeout") once this process used `seconds` more CPU time (ITIMER_PROF
    counts CPU, not wall time, so a busy machine does not fail a normal template)."""

    def on_timer(signum: int, frame: Any) -> None:
        raise _Stop("timeout", f"rendering used more than {seconds:g} s of CPU time")

    signal.signal(signal.SIGPROF, on_timer)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)


def _stream(template: Any, context: dict[str, Any], max_chars: int) -> str:
    """Render chunk by chunk, stopping as soon as the output passes `max_chars`."""
    parts, size = [], 0
    for chunk in template.generate(**context):
        size += len(chunk)
        if size > max_chars:
            raise _Stop("too_large", f"the output passed {max_chars:,} characters")
        parts.append(chunk)
    return "".join(parts)


class _Limits:
    """The size checks, shared by operators, filters, method calls and `~`."""

    def __init__(self, limits: RenderLimits) -> None:
        self.max_chars, self.max_items = limits.max_chars, limits.max_items

    def value(self, value: Any) -> Any:
        """`value` if within the limits (checked after it was built)."""
        if isinstance(value, str):
            self.chars(len(value), "a string")
        elif isinstance(value, (list, tuple, dict, set)):
            self.items(len(value))
        return value

    def chars(self, n: int, what: str) -> None:
        if n > self.max_chars:
            raise _Stop("too_large", f"{what} of {n:,} characters; the limit is "
                                     f"{self.max_chars:,}")

    def items(self, n: int) -> None:
        if n > self.max_items:
            raise _Stop("too_large", f"a list of {n:,} items; the limit is {self.max_items:,}")

    def numbers(self, args: Sequence[Any]) -> None:
        """Integer arguments (widths, counts) are sizes too: `s.ljust(10**9)`."""
        for arg in args:
            if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > self.max_chars:
                raise _Stop("too_large", f"an argument of {arg:,}; sizes are limited to "
                                         f"{self.max_chars:,}")

    def binop(self, operator: str, left: Any, right: Any) -> None:
        """Refuse `'a' * 10**8`, doubling by `+`, `2 ** 10**9` and `'%999999999d' % 1` before
        Python computes them."""
        seqs = (str, list, tuple)
        if operator == "*":
            seq, count = (left, right) if isinstance(left, seqs) else (right, left)
            if isinstance(seq, seqs) and isinstance(count, int):
                self.sized(seq, len(seq) * max(count, 0))
            elif isinstance(left, int) and isinstance(right, int):
                self.bits(abs(left).bit_length() + abs(right).bit_length())
        elif operator == "+" and isinstance(left, seqs) and isinstance(right, seqs):
            self.sized(left, len(left) + len(right))
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            self.bits(abs(left).bit_length() * right)
        elif operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
            raise _Stop("too_large", "a format with a field width over the size limit")

    def sized(self, like: Any, n: int) -> None:
        if isinstance(like, str):
            self.chars(n, "a string")
        else:
            self.items(n)

    def bits(self, n: int) -> None:
        if n > 65536:
            raise _Stop("too_large", f"an integer of about {n:,} bits")

    def join(self, items: list[Any], separator: str) -> None:
        self.items(len(items))
        total = sum(len(x) if isinstance(x, str) else len(str(x)) for x in items)
        self.chars(total + len(separator) * max(len(items) - 1, 0), "a joined string")

    def method(self, obj: Any, args: list[Any]) -> None:
        """Size checks for str methods whose result size follows from their arguments."""
        name = getattr(obj, "__name__", "")
        owner = getattr(obj, "__self__", getattr(getattr(obj, "__wrapped__", None),
                                                 "__self__", None))
        if not isinstance(owner, str):
            return
        if name == "join" and args:
            args[0] = list(args[0])
            self.join(args[0], owner)
        elif name == "replace" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
            grow = max(len(args[1]) - len(args[0]), 0)
            self.chars(len(owner) + owner.count(args[0]) * grow, "a string")
        elif name == "expandtabs" and args and isinstance(args[0], int):
            self.chars(len(owner) + owner.count("\t") * max(args[0], 0), "a string")
        elif name in ("format", "format_map") and _WIDE_FORMAT.search(owner):
            raise _Stop("too_large", "a format with a field width over the size limit")


class _CheckedConcat(CodeGenerator):
    """Compiles `a ~ b` to a size-checked join: the sandbox does not intercept `~`, and
    `{% set ns.s = ns.s ~ ns.s %}` in a loop doubles a string without printing it."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _GenerationTag(Extension):
    """transformers' `{% generation %}...{% endgeneration %}` (marks assistant text for
    training masks); for a prompt it just renders its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    """transformers' tojson: plain json.dumps (Jinja's own escapes <, >, & and ')."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    return time.strftime(str(fmt))


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with size checks on everything that can build big values."""

    intercepted_binops = frozenset({"*", "+", "**", "%"})
    code_generator_class = _CheckedConcat

    def __init__(self, limits: RenderLimits) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True,
                         extensions=["jinja2.ext.loopcontrols", _GenerationTag])
        self.check = _Limits(limits)
        self.filters["tojson"] = _tojson
        self.filters = {name: self._guard(name, f) for name, f in self.filters.items()}
        self.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)

    def _guard(self, name: str, original: Any) -> Any:
        """Wrap a filter: numbers checked before, the result after; `join` fully before."""
        check = self.check
        if name == "join":
            @pass_eval_context
            def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
                items = list(value)
                check.join(items if attribute is None else [], str(d))
                return check.value(original(eval_ctx, items, d, attribute))
            return join

        @functools.wraps(original)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            check.numbers([*args, *kwargs.values()])
            return check.value(original(*args, **kwargs))
        return guarded

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        """Raise at once: Jinja would return an Undefined that prints as empty text."""
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} "
                            "object is unsafe")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self.check.binop(operator, left, right)
        return self.check.value(super().call_binop(context, operator, left, right))

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        arguments = list(args)
        self.check.numbers([*arguments, *kwargs.values()])
        self.check.method(obj, arguments)
        return self.check.value(super().call(context, obj, *arguments, **kwargs))

    def checked_concat(self, values: Sequence[Any]) -> str:
        texts = [str(v) for v in values]
        self.check.chars(sum(len(t) for t in texts), "a string")
        return "".join(texts)
