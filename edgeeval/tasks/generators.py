"""Seeded item generators: arithmetic, Python expression values, code completion, word problems.

Each generator takes a `random.Random` and returns one `RawItem` whose answer it computed itself
(by evaluating the expression, running the code, or folding the arithmetic steps), so no answer is
typed by hand. `generate()` draws the items of a task: item i uses a generator seeded with the
string "<task>:<seed>:<i>:<attempt>" (string seeds go through SHA-512, so they are the same on
every machine and Python version; `hash()` is salted per process and is never used), and
duplicates are redrawn.
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeeval.errors import EdgeevalError
from edgeeval.tasks.wordmath import make_word_problem


@dataclass(frozen=True)
class RawItem:
    """An item before formatting: a question, its answer and wrong answers (no leading space).

    `wrong` is empty for generated-answer items; `solution` is a worked answer when the
    generator writes one (word-math), kept so tests can check every step. `cluster` is the
    item's cluster id (a file: line's `cluster_by` field), "" without one.
    """

    question: str
    answer: str
    wrong: tuple[str, ...]
    id: str | None = None
    solution: str = ""
    cluster: str = ""


@dataclass(frozen=True)
class Generator:
    """A seeded item generator, the task kind it feeds, and the options (name -> default) its YAML
    may set."""

    make: Callable[..., RawItem]
    options: dict[str, Any] = field(default_factory=dict)
    kind: str = "multiple_choice"


def seeded_rng(*parts: object) -> random.Random:
    """A random generator seeded from `parts`, the same on every machine (SHA-512 of the string)."""
    return random.Random(":".join(str(part) for part in parts))


def distinct(answer: str, candidates: list[str], rng: random.Random, k: int = 3) -> tuple[str, ...]:
    """`k` distinct wrong answers drawn from `candidates` (answer and repeats dropped)."""
    pool = list(dict.fromkeys(c for c in candidates if c != answer))
    if len(pool) < k:
        raise ValueError(f"only {len(pool)} distractors for {answer!r}")
    return tuple(rng.sample(pool, k))


# --- generator: arith --------------------------------------------------------------------------


def make_arith(rng: random.Random, *, max_operand: int = 99, ops: str = "+-*") -> RawItem:
    """`a + b`, `a - b` (a > b) or `a * b` (b <= 12), with the answer computed by `eval`.

    Distractors: off by one, off by ten, the answer's digits swapped, and the result of the
    other operator, e.g. "23 + 48" -> 71 with 70, 81, 17 or 72.
    """
    op = rng.choice(ops)
    a = rng.randint(10, max_operand)
    b = rng.randint(2, 12) if op == "*" else rng.randint(10, max_operand)
    if op == "-" and a < b:
        a, b = b, a
    question = f"{a} {op} {b}"
    value = eval(question, {"__builtins__": {}})  # our own digits and one operator
    other = a + b if op != "+" else abs(a - b)
    candidates = [value + 1, value - 1, value + 10, value - 10, int(str(value)[::-1]), other]
    wrong = distinct(str(value), [str(c) for c in candidates if c >= 0], rng)
    return RawItem(question=question, answer=str(value), wrong=wrong)


# --- generator: python-eval --------------------------------------------------------------------

_WORDS = (
    "apple",
    "banana",
    "cherry",
    "python",
    "hello",
    "world",
    "river",
    "green",
    "table",
    "orange",
    "model",
    "token",
    "coffee",
    "planet",
    "summer",
    "letter",
)
_SAFE = {
    "len": len,
    "sorted": sorted,
    "sum": sum,
    "max": max,
    "min": min,
    "list": list,
    "range": range,
    "set": set,
    "int": int,
    "str": str,
    "abs": abs,
}


def safe_eval(expression: str) -> Any:
    """Evaluate one of our generated expressions with only a few harmless builtins."""
    return eval(expression, {"__builtins__": _SAFE})  # never fed text from outside


def _ints(rng: random.Random, n: int, low: int = 1, high: int = 20) -> list[int]:
    return rng.sample(range(low, high), n)


def _pe_len(rng: random.Random) -> tuple[str, list[Any]]:
    text = " ".join(rng.sample(_WORDS, rng.randint(1, 2)))
    n = len(text)
    return f"len({text!r})", [n - 1, n + 1, n + 2, len(text.split())]


def _pe_case(rng: random.Random) -> tuple[str, list[Any]]:
    text = " ".join(rng.sample(_WORDS, 2))
    method = rng.choice(("upper", "title", "capitalize"))
    return f"{text!r}.{method}()", [text.upper(), text.title(), text.capitalize(), text]


def _pe_str_slice(rng: random.Random) -> tuple[str, list[Any]]:
    text = rng.choice(_WORDS)
    start = rng.randint(1, 2)
    stop = rng.randint(start + 2, len(text) - 1)
    return f"{text!r}[{start}:{stop}]", [
        text[start : stop + 1],
        text[start - 1 : stop],
        text[start + 1 : stop + 1],
        text[start - 1 : stop - 1],
    ]


def _pe_list_slice(rng: random.Random) -> tuple[str, list[Any]]:
    values = _ints(rng, 6)
    start, stop = rng.choice(((1, 3), (2, 4), (0, 3), (2, 5), (1, 4)))
    return f"{values}[{start}:{stop}]", [
        values[start : stop + 1],
        values[start + 1 : stop + 1],
        values[max(start - 1, 0) : stop - 1],
        values[start : stop - 1],
    ]


def _pe_sorted(rng: random.Random) -> tuple[str, list[Any]]:
    values = _ints(rng, 4)
    right = sorted(values)
    wrong = [sorted(values, reverse=True), values, right[:2] + right[:1:-1], right[1:] + right[:1]]
    if rng.random() < 0.5:
        return f"sorted({values})", wrong
    return f"sorted({values}, reverse=True)", [right, *wrong[1:]]


def _pe_sum(rng: random.Random) -> tuple[str, list[Any]]:
    values = _ints(rng, rng.randint(3, 4))
    total = sum(values)
    return f"sum({values})", [total + 1, total - 1, total - values[-1], total + 10]


def _pe_divmod(rng: random.Random) -> tuple[str, list[Any]]:
    b = rng.randint(3, 9)
    a = b * rng.randint(2, 9) + rng.randint(1, b - 1)
    if rng.random() < 0.5:
        return f"{a} // {b}", [a // b + 1, a % b, round(a / b, 2), a // b - 1]
    return f"{a} % {b}", [a // b, a % b + 1, b - a % b, a % b - 1]


def _pe_join(rng: random.Random) -> tuple[str, list[Any]]:
    parts = rng.sample(_WORDS, 3)
    sep = rng.choice(("-", ", ", "", "+"))
    joined = sep.join(parts)
    return f"{sep!r}.join({parts})", [
        " ".join(parts),
        joined + sep,
        sep + joined,
        "".join(parts),
        sep.join(parts[::-1]),
        "_".join(parts),
    ]


def _pe_split(rng: random.Random) -> tuple[str, list[Any]]:
    parts = rng.sample(_WORDS, 3)
    sep = rng.choice((",", "-", " "))
    text = sep.join(parts)
    wrong = [[text], parts[:2], parts + [""], parts[::-1]]
    return f"{text!r}.split({sep!r})", wrong


def _pe_count_find(rng: random.Random) -> tuple[str, list[Any]]:
    text = rng.choice(_WORDS)
    letter = rng.choice(sorted(set(text)))
    if rng.random() < 0.5:
        n = text.count(letter)
        return f"{text!r}.count({letter!r})", [n + 1, n - 1, n + 2, 0 if n else 1]
    i = text.find(letter)
    return f"{text!r}.find({letter!r})", [i + 1, i - 1, i + 2, -1, len(text)]


def _pe_misc(rng: random.Random) -> tuple[str, list[Any]]:
    word = rng.choice(_WORDS)
    n = rng.randint(2, 6)
    a, b = rng.randint(10, 60), rng.randint(2, 9)
    values = _ints(rng, 4)
    cases: list[tuple[str, list[Any]]] = [
        (f"{word!r}[::-1]", [word, word[1:], word[-1], word[::-1][1:]]),
        (f"{word!r}[-1]", [word[0], word[-2], word[:-1], word[-2:]]),
        (
            f"list(range({a}, {a + n}))",
            [
                list(range(a, a + n + 1)),
                list(range(a + 1, a + n + 1)),
                list(range(a, a + n - 1)),
                [a, a + n],
            ],
        ),
        (f"2 ** {n + 2}", [2 * (n + 2), 2 ** (n + 1), 2 ** (n + 3), (n + 2) ** 2]),
        (f"int('{a}') + {b}", [f"{a}{b}", a + b + 1, a, a * b]),
        (f"'ab' * {n}", ["ab" * (n - 1), "ab" * (n + 1), f"ab{n}", "a" * n + "b" * n]),
        (
            f"{word!r}.replace({word[0]!r}, 'X')",
            [word, "X" + word, word[1:], word.replace(word[0], "X", 1), word + "X"],
        ),
        (f"max({values})", [min(values), values[0], values[-1], sum(values)]),
    ]
    return rng.choice(cases)


_PYTHON_EVAL = (
    _pe_len,
    _pe_case,
    _pe_str_slice,
    _pe_list_slice,
    _pe_sorted,
    _pe_sum,
    _pe_divmod,
    _pe_join,
    _pe_split,
    _pe_count_find,
    _pe_misc,
)


def make_python_eval(rng: random.Random) -> RawItem:
    """A Python expression and its value, written as the right-hand side of `assert expr ==`.

    The answer is `repr(eval(expr))`, computed here; distractors are values of plausible
    mistakes (off by one, inclusive slice end, the other string method), e.g. for
    `len('hello world')`: 11, with 10, 12 and 2.
    """
    for _ in range(50):
        expression, wrong_values = rng.choice(_PYTHON_EVAL)(rng)
        value = safe_eval(expression)
        wrong = [repr(w) for w in wrong_values if w != value]
        try:
            return RawItem(expression, repr(value), distinct(repr(value), wrong, rng))
        except ValueError:
            continue  # e.g. 'hello'.title() == 'Hello'.capitalize(): draw another expression
    raise EdgeevalError("python-eval generator could not find distinct distractors")


# --- generator: code-complete ------------------------------------------------------------------


@dataclass(frozen=True)
class _CodeFamily:
    """Tiny functions that differ in one spot: `head` + continuation + `tail`.

    `names` are the functions (each with a reference in `_CODE_REFERENCE`), `options` the
    continuations, `params` the parameter-name choices, `inputs` the test calls that tell every
    continuation apart.
    """

    names: tuple[str, ...]
    head: str
    options: tuple[str, ...]
    params: tuple[tuple[str, ...], ...]
    inputs: tuple[tuple[Any, ...], ...]
    tail: str = ""


_LISTS = (("values",), ("items",), ("numbers",), ("xs",))
_CODE_FAMILIES = (
    _CodeFamily(
        ("add", "subtract", "multiply", "floor_divide", "remainder", "power"),
        "def {fn}({x}, {y}):\n    return {x}",
        (" + {y}", " - {y}", " * {y}", " // {y}", " % {y}", " ** {y}"),
        (("a", "b"), ("x", "y"), ("m", "n"), ("left", "right")),
        ((7, 3), (10, 4)),
    ),
    _CodeFamily(
        ("is_positive", "is_negative", "is_zero", "is_even", "is_odd"),
        "def {fn}({x}):\n    return {x}",
        (" > 0", " < 0", " == 0", " % 2 == 0", " % 2 == 1"),
        (("n",), ("x",), ("number",), ("value",)),
        ((-3,), (0,), (4,), (7,), (-2,)),
    ),
    _CodeFamily(
        ("largest", "smallest", "total", "count", "first", "last", "reverse", "sort"),
        "def {fn}({x}):\n    return",
        (
            " max({x})",
            " min({x})",
            " sum({x})",
            " len({x})",
            " {x}[0]",
            " {x}[-1]",
            " {x}[::-1]",
            " sorted({x})",
        ),
        _LISTS,
        (([3, 8, 2, 6],), ([5, 1, 7],)),
    ),
    _CodeFamily(
        ("shout", "whisper", "trim", "reverse_text", "words", "title_case"),
        "def {fn}({x}):\n    return",
        (
            " {x}.upper()",
            " {x}.lower()",
            " {x}.strip()",
            " {x}[::-1]",
            " {x}.split()",
            " {x}.title()",
        ),
        (("text",), ("s",), ("line",)),
        (("  hello World  ",),),
    ),
    _CodeFamily(
        ("count_negatives", "count_positives", "count_zeros", "count_evens"),
        "def {fn}({x}):\n    n = 0\n    for value in {x}:\n        if value",
        (" < 0:", " > 0:", " == 0:", " % 2 == 0:"),
        _LISTS,
        (([-2, 0, 3, 5, -1, 4, 7, -6, 8],), ([0, 0, 1, -3],)),
        tail="\n            n += 1\n    return n",
    ),
    _CodeFamily(
        ("sum_all", "product_all", "count_all", "last_of"),
        "def {fn}({x}):\n    result = {init}\n    for value in {x}:\n        result",
        (" += value", " *= value", " += 1", " = value", " -= value"),
        _LISTS,
        (([2, 3, 4],), ([5, 6],)),
        tail="\n    return result",
    ),
)
_CODE_REFERENCE: dict[str, Callable[..., Any]] = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "floor_divide": operator.floordiv,
    "remainder": operator.mod,
    "power": operator.pow,
    "is_positive": lambda n: n > 0,
    "is_negative": lambda n: n < 0,
    "is_zero": lambda n: n == 0,
    "is_even": lambda n: n % 2 == 0,
    "is_odd": lambda n: n % 2 == 1,
    "largest": max,
    "smallest": min,
    "total": sum,
    "count": len,
    "first": lambda v: v[0],
    "last": lambda v: v[-1],
    "reverse": lambda v: v[::-1],
    "sort": sorted,
    "shout": str.upper,
    "whisper": str.lower,
    "trim": str.strip,
    "reverse_text": lambda s: s[::-1],
    "words": str.split,
    "title_case": str.title,
    "count_negatives": lambda v: sum(x < 0 for x in v),
    "count_positives": lambda v: sum(x > 0 for x in v),
    "count_zeros": lambda v: v.count(0),
    "count_evens": lambda v: sum(x % 2 == 0 for x in v),
    "sum_all": sum,
    "product_all": math.prod,
    "count_all": len,
    "last_of": lambda v: v[-1],
}


def code_passes(source: str, fn: str, inputs: tuple[tuple[Any, ...], ...]) -> bool:
    """True when the function `fn` defined by `source` matches the reference on every input."""
    namespace: dict[str, Any] = {}
    exec(source, {"__builtins__": _SAFE}, namespace)  # our own generated code, no imports
    try:
        return all(namespace[fn](*args) == _CODE_REFERENCE[fn](*args) for args in inputs)
    except (TypeError, ZeroDivisionError, IndexError):
        return False


def make_code_complete(rng: random.Random) -> RawItem:
    """The code after a blank in a tiny function whose name says what it does.

    E.g. `def add(a, b):\\n    return a` -> " + b" (not " - b", " * b", " % b"). Every
    continuation is run on test inputs: exactly one (the answer) matches the reference.
    """
    family = rng.choice(_CODE_FAMILIES)
    fn = rng.choice(family.names)
    params = rng.choice(family.params)
    slots = {"fn": fn, "x": params[0], "y": params[-1], "init": "1" if fn == "product_all" else "0"}
    question = family.head.format(**slots)
    options = [option.format(**slots) for option in family.options]
    right = [o for o in options if code_passes(question + o + family.tail, fn, family.inputs)]
    if len(right) != 1:
        raise EdgeevalError(f"code-complete: {len(right)} continuations implement {fn}")
    wrong = distinct(right[0], options, rng)
    return RawItem(question, right[0].removeprefix(" "), tuple(w.removeprefix(" ") for w in wrong))


# --- generator: word-math ----------------------------------------------------------------------


def make_word_math(rng: random.Random) -> RawItem:
    """A short arithmetic word problem with its integer answer and a worked solution.

    See `edgeeval.tasks.wordmath`: the answer is folded from the problem's steps, e.g. "Ana has 12
    shells. Ana buys 5 more and then gives 3 to a friend. ..." -> answer "14", solution
    "First, 12 + 5 = 17. Then, 17 - 3 = 14. The answer is 14."
    """
    problem = make_word_problem(rng)
    return RawItem(problem.question, str(problem.answer), (), solution=problem.solution)


GENERATORS: dict[str, Generator] = {
    "arith": Generator(make_arith, {"max_operand": 99, "ops": "+-*"}),
    "python-eval": Generator(make_python_eval),
    "code-complete": Generator(make_code_complete),
    "word-math": Generator(make_word_math, kind="generate"),
}


def generate(
    generator: str, task: str, count: int, seed: int, options: dict[str, Any] | None = None
) -> list[RawItem]:
    """`count` distinct items of `generator` for task `task` and `seed`.

    Item i depends only on items before it, so a smaller count gives a prefix of a larger one.
    """
    make = GENERATORS[generator].make
    seen: set[str] = set()
    out: list[RawItem] = []
    for index in range(count):
        for attempt in range(200):  # redraw duplicates
            raw = make(seeded_rng(task, seed, index, attempt), **(options or {}))
            if raw.question not in seen:
                break
        else:
            raise EdgeevalError(
                f"task '{task}' cannot generate {count} distinct items; use a smaller --limit"
            )
        seen.add(raw.question)
        out.append(raw)
    return out
