"""Inside the chat-template sandbox process that edgeeval.sandbox.template starts (see its
docstring).

This is the first wall: Jinja's ImmutableSandboxedEnvironment configured as transformers does,
with size checks on every operator, filter, method call and `~` that can build a big value,
output streamed and cut off at the limit, and a CPU-time timer around each render. The second
wall (kernel limits on this process) is set by `serve` before any template is compiled.
The parent process never imports this module.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import resource
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_eval_context

from edgeeval.sandbox.template import ChatTemplate, Message, RenderLimits

_WIDE_FORMAT = re.compile(r"%[^a-zA-Z%]*?(\*|\d{7,})|\{[^{}]*?\d{7,}[^{}]*\}")


class _Stop(BaseException):
    """A limit was hit. BaseException, so no `except Exception` inside Jinja swallows it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _TemplateRaised(Exception):
    """The template called raise_exception(message), as transformers' templates do."""


def serve() -> int:
    """Entry point of the sandbox process: JSON request on stdin, JSON answers on stdout."""
    request = json.loads(sys.stdin.read())
    limits = RenderLimits(**request["limits"])
    conversations = request["conversations"]
    _limit_process(limits, len(conversations))
    template = ChatTemplate(**request["template"])
    answers = _render_all(
        template,
        conversations,
        request["add_generation_prompt"],
        limits,
        request.get("variables") or {},
    )
    sys.stdout.write(json.dumps(answers))
    return 0


def _limit_process(limits: RenderLimits, n: int) -> None:
    """Kernel limits for this process: memory, CPU for all renders, no files, no core dumps."""
    cpu = int(limits.cpu_s * n) + 10
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _render_all(
    template: ChatTemplate,
    conversations: list[list[Message]],
    add_generation_prompt: bool,
    limits: RenderLimits,
    variables: dict[str, Any],
) -> list[dict[str, Any]]:
    env = _LimitedEnvironment(limits)
    try:
        with _cpu_timer(limits.cpu_s):
            compiled = env.from_string(template.source)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a recorded reason
        return [_failure(exc)] * len(conversations)
    out = []
    for messages in conversations:
        context = {
            **variables,
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": template.bos_token,
            "eos_token": template.eos_token,
        }
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
            raise _Stop("too_large", f"{what} of {n:,} characters; the limit is {self.max_chars:,}")

    def items(self, n: int) -> None:
        if n > self.max_items:
            raise _Stop("too_large", f"a list of {n:,} items; the limit is {self.max_items:,}")

    def numbers(self, args: Sequence[Any]) -> None:
        """Integer arguments (widths, counts) are sizes too: `s.ljust(10**9)`."""
        for arg in args:
            if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > self.max_chars:
                raise _Stop(
                    "too_large", f"an argument of {arg:,}; sizes are limited to {self.max_chars:,}"
                )

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
        owner = getattr(
            obj, "__self__", getattr(getattr(obj, "__wrapped__", None), "__self__", None)
        )
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


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    """transformers' tojson: plain json.dumps (Jinja's own escapes <, >, & and ')."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    return time.strftime(str(fmt))


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with size checks on everything that can build big values."""

    intercepted_binops = frozenset({"*", "+", "**", "%"})
    code_generator_class = _CheckedConcat

    def __init__(self, limits: RenderLimits) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.loopcontrols", _GenerationTag],
        )
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
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self.check.binop(operator, left, right)
        return self.check.value(super().call_binop(context, operator, left, right))

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        arguments = list(args)
        self.check.numbers([*arguments, *kwargs.values()])
        self.check.method(obj, arguments)
        return self.check.value(super().call(context, obj, *arguments, **kwargs))

    def checked_concat(self, values: Sequence[Any]) -> str:
        texts = [str(v) for v in values]
        self.check.chars(sum(len(t) for t in texts), "a string")
        return "".join(texts)
