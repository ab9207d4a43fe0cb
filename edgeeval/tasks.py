"""Offline multiple-choice tasks: `benchmarks/*.yaml` parsed, validated and turned into items.

A task is one YAML file in `benchmarks/`; its items come either from a seeded generator in this
module (`source: generator:arith`) or from a JSONL data file next to it
(`source: file:data/facts.jsonl`). Every item is a context plus four continuations, scored by
the runner as the log-likelihood of each continuation given the context.

Items depend only on the task file and the seed: generators draw from `random.Random` seeded
with a string such as "arith:0:7:0" (string seeds go through SHA-512, so they are the same on
every machine and Python version; `hash()` is salted per process and is never used).
Suites (`offline`, `quick`) are named lists of tasks in `benchmarks/suites.yaml`.
"""

from __future__ import annotations

import json
import math
import operator
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgeeval import settings
from edgeeval.catalog import suggest
from edgeeval.errors import ConfigError, EdgeevalError, UnknownNameError

KINDS = ("multiple_choice",)
CATEGORIES = ("math", "code", "language", "knowledge", "reasoning")
SUITES_FILE = "suites.yaml"
DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REQUIRED = {"name": str, "version": int, "description": str, "category": str, "kind": str,
             "source": str, "n_items": int}
_OPTIONAL = {"few_shot": list, "template": str, "separator": str, "instructions": str,
             "options": dict}


@dataclass(frozen=True)
class McItem:
    """One multiple-choice item: `context + choices[gold]` is the right continuation."""

    id: str
    context: str
    choices: tuple[str, ...]
    gold: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> McItem:
        return cls(id=data["id"], context=data["context"], choices=tuple(data["choices"]),
                   gold=int(data["gold"]))


@dataclass(frozen=True)
class RawItem:
    """An item before formatting: a question, its answer and wrong answers (no leading space)."""

    question: str
    answer: str
    wrong: tuple[str, ...]
    id: str | None = None


@dataclass(frozen=True)
class Generator:
    """A seeded item generator and the options (name -> default) its YAML may set."""

    make: Callable[..., RawItem]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """One task from `benchmarks/<name>.yaml`; `items()` builds its items for a seed."""

    name: str
    version: int
    description: str
    category: str
    kind: str
    source: str
    chance: float
    n_items: int
    path: str
    few_shot: tuple[tuple[str, str], ...] = ()
    template: str = DEFAULT_TEMPLATE
    separator: str = "\n\n"
    instructions: str = ""
    options: tuple[tuple[str, Any], ...] = ()
    records: tuple[RawItem, ...] = field(default=(), repr=False, compare=False)

    def metadata(self) -> dict[str, Any]:
        """The fields a result record needs (no data records)."""
        keys = ("name", "version", "category", "kind", "source", "chance", "n_items")
        return {key: getattr(self, key) for key in keys}

    def items(self, *, limit: int | None = None, seed: int = 0) -> list[McItem]:
        """`limit` (default `n_items`) items for `seed`; a smaller limit gives a prefix.

        File tasks give at most as many items as the file holds.
        """
        count = self.n_items if limit is None else limit
        if self.source.startswith("generator:"):
            raws = self._generate(count, seed)
        else:
            order = sorted(self.records, key=lambda raw: raw.id or "")
            _rng(self.name, seed, "order").shuffle(order)
            raws = order[:count]
        prefix = [self.instructions] if self.instructions else []
        prefix += [self.render(question) + " " + answer for question, answer in self.few_shot]
        return [self._format(raw, index, seed, prefix) for index, raw in enumerate(raws)]

    def render(self, question: str) -> str:
        """The question put into this task's template (no trailing space)."""
        return self.template.replace("{question}", question)

    def _generate(self, count: int, seed: int) -> list[RawItem]:
        make = GENERATORS[self.source.removeprefix("generator:")].make
        options = dict(self.options)
        seen: set[str] = set()
        out: list[RawItem] = []
        for index in range(count):
            for attempt in range(200):  # redraw duplicates; item i depends only on items < i
                raw = make(_rng(self.name, seed, index, attempt), **options)
                if raw.question not in seen:
                    break
            else:
                raise EdgeevalError(f"task '{self.name}' cannot generate {count} distinct items; "
                                    f"use a smaller --limit")
            seen.add(raw.question)
            out.append(raw)
        return out

    def _format(self, raw: RawItem, index: int, seed: int, prefix: list[str]) -> McItem:
        choices = [raw.answer, *raw.wrong]
        _rng(self.name, seed, "choices", index).shuffle(choices)
        context = self.separator.join([*prefix, self.render(raw.question)])
        return McItem(id=raw.id or f"{self.name}-{index:04d}", context=context,
                      choices=tuple(" " + choice for choice in choices),
                      gold=choices.index(raw.answer))


def _rng(*parts: object) -> random.Random:
    """A generator seeded from `parts` the same way on every machine (SHA-512 of the string)."""
    return random.Random(":".join(str(part) for part in parts))


def _distinct(answer: str, candidates: list[str], rng: random.Random,
              k: int = 3) -> tuple[str, ...]:
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
    wrong = _distinct(str(value), [str(c) for c in candidates if c >= 0], rng)
    return RawItem(question=question, answer=str(value), wrong=wrong)


# --- generator: python-eval --------------------------------------------------------------------

_WORDS = ("apple", "banana", "cherry", "python", "hello", "world", "river", "green", "table",
          "orange", "model", "token", "coffee", "planet", "summer", "letter")
_SAFE = {"len": len, "sorted": sorted, "sum": sum, "max": max, "min": min, "list": list,
         "range": range, "set": set, "int": int, "str": str, "abs": abs}


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
    return f"{text!r}[{start}:{stop}]", [text[start:stop + 1], text[start - 1:stop],
                                          text[start + 1:stop + 1], text[start - 1:stop - 1]]


def _pe_list_slice(rng: random.Random) -> tuple[str, list[Any]]:
    values = _ints(rng, 6)
    start, stop = rng.choice(((1, 3), (2, 4), (0, 3), (2, 5), (1, 4)))
    return f"{values}[{start}:{stop}]", [values[start:stop + 1], values[start + 1:stop + 1],
                                         values[max(start - 1, 0):stop - 1], values[start:stop - 1]]


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
    return f"{sep!r}.join({parts})", [" ".join(parts), joined + sep, sep + joined, "".join(parts),
                                      sep.join(parts[::-1]), "_".join(parts)]


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
    cases = [
        (f"{word!r}[::-1]", [word, word[1:], word[-1], word[::-1][1:]]),
        (f"{word!r}[-1]", [word[0], word[-2], word[:-1], word[-2:]]),
        (f"list(range({a}, {a + n}))", [list(range(a, a + n + 1)), list(range(a + 1, a + n + 1)),
                                         list(range(a, a + n - 1)), [a, a + n]]),
        (f"2 ** {n + 2}", [2 * (n + 2), 2 ** (n + 1), 2 ** (n + 3), (n + 2) ** 2]),
        (f"int('{a}') + {b}", [f"{a}{b}", a + b + 1, a, a * b]),
        (f"'ab' * {n}", ["ab" * (n - 1), "ab" * (n + 1), f"ab{n}", "a" * n + "b" * n]),
        (f"{word!r}.replace({word[0]!r}, 'X')",
         [word, "X" + word, word[1:], word.replace(word[0], "X", 1), word + "X"]),
        (f"max({values})", [min(values), values[0], values[-1], sum(values)]),
    ]
    return rng.choice(cases)


_PYTHON_EVAL = (_pe_len, _pe_case, _pe_str_slice, _pe_list_slice, _pe_sorted, _pe_sum,
                _pe_divmod, _pe_join, _pe_split, _pe_count_find, _pe_misc)


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
            return RawItem(expression, repr(value), _distinct(repr(value), wrong, rng))
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
    _CodeFamily(("add", "subtract", "multiply", "floor_divide", "remainder", "power"),
                "def {fn}({x}, {y}):\n    return {x}",
                (" + {y}", " - {y}", " * {y}", " // {y}", " % {y}", " ** {y}"),
                (("a", "b"), ("x", "y"), ("m", "n"), ("left", "right")), ((7, 3), (10, 4))),
    _CodeFamily(("is_positive", "is_negative", "is_zero", "is_even", "is_odd"),
                "def {fn}({x}):\n    return {x}",
                (" > 0", " < 0", " == 0", " % 2 == 0", " % 2 == 1"),
                (("n",), ("x",), ("number",), ("value",)), ((-3,), (0,), (4,), (7,), (-2,))),
    _CodeFamily(("largest", "smallest", "total", "count", "first", "last", "reverse", "sort"),
                "def {fn}({x}):\n    return",
                (" max({x})", " min({x})", " sum({x})", " len({x})", " {x}[0]", " {x}[-1]",
                 " {x}[::-1]", " sorted({x})"), _LISTS, (([3, 8, 2, 6],), ([5, 1, 7],))),
    _CodeFamily(("shout", "whisper", "trim", "reverse_text", "words", "title_case"),
                "def {fn}({x}):\n    return",
                (" {x}.upper()", " {x}.lower()", " {x}.strip()", " {x}[::-1]", " {x}.split()",
                 " {x}.title()"), (("text",), ("s",), ("line",)), (("  hello World  ",),)),
    _CodeFamily(("count_negatives", "count_positives", "count_zeros", "count_evens"),
                "def {fn}({x}):\n    n = 0\n    for value in {x}:\n        if value",
                (" < 0:", " > 0:", " == 0:", " % 2 == 0:"), _LISTS,
                (([-2, 0, 3, 5, -1, 4, 7, -6, 8],), ([0, 0, 1, -3],)),
                tail="\n            n += 1\n    return n"),
    _CodeFamily(("sum_all", "product_all", "count_all", "last_of"),
                "def {fn}({x}):\n    result = {init}\n    for value in {x}:\n        result",
                (" += value", " *= value", " += 1", " = value", " -= value"), _LISTS,
                (([2, 3, 4],), ([5, 6],)), tail="\n    return result"),
)
_CODE_REFERENCE: dict[str, Callable[..., Any]] = {
    "add": operator.add, "subtract": operator.sub, "multiply": operator.mul,
    "floor_divide": operator.floordiv, "remainder": operator.mod, "power": operator.pow,
    "is_positive": lambda n: n > 0, "is_negative": lambda n: n < 0, "is_zero": lambda n: n == 0,
    "is_even": lambda n: n % 2 == 0, "is_odd": lambda n: n % 2 == 1,
    "largest": max, "smallest": min, "total": sum, "count": len, "first": lambda v: v[0],
    "last": lambda v: v[-1], "reverse": lambda v: v[::-1], "sort": sorted,
    "shout": str.upper, "whisper": str.lower, "trim": str.strip, "reverse_text": lambda s: s[::-1],
    "words": str.split, "title_case": str.title,
    "count_negatives": lambda v: sum(x < 0 for x in v),
    "count_positives": lambda v: sum(x > 0 for x in v),
    "count_zeros": lambda v: v.count(0), "count_evens": lambda v: sum(x % 2 == 0 for x in v),
    "sum_all": sum, "product_all": math.prod, "count_all": len, "last_of": lambda v: v[-1],
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
    slots = {"fn": fn, "x": params[0], "y": params[-1],
             "init": "1" if fn == "product_all" else "0"}
    question = family.head.format(**slots)
    options = [option.format(**slots) for option in family.options]
    right = [o for o in options if code_passes(question + o + family.tail, fn, family.inputs)]
    if len(right) != 1:
        raise EdgeevalError(f"code-complete: {len(right)} continuations implement {fn}")
    wrong = _distinct(right[0], options, rng)
    return RawItem(question, right[0].removeprefix(" "),
                   tuple(w.removeprefix(" ") for w in wrong))


GENERATORS: dict[str, Generator] = {
    "arith": Generator(make_arith, {"max_operand": 99, "ops": "+-*"}),
    "python-eval": Generator(make_python_eval),
    "code-complete": Generator(make_code_complete),
}


# --- loading -----------------------------------------------------------------------------------


def benchmarks_dir(root: Path | None = None) -> Path:
    return (Path(root) if root is not None else settings.package_root()) / "benchmarks"


def load_tasks(root: Path | None = None) -> dict[str, Task]:
    """Every task defined in `<root>/benchmarks/*.yaml` (except suites.yaml), by name.

    Any invalid file raises ConfigError naming the file and the key.
    """
    folder = benchmarks_dir(root)
    if not folder.is_dir():
        raise ConfigError("no benchmarks directory; run from the repo root or set EDGEEVAL_ROOT",
                          path=folder)
    tasks: dict[str, Task] = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name == SUITES_FILE:
            continue
        task = parse_task(path)
        if task.name in tasks:
            raise ConfigError(f"task name already defined in {tasks[task.name].path}",
                              path=path, key="name")
        tasks[task.name] = task
    return tasks


def get_task(name: str, root: Path | None = None) -> Task:
    """The task called `name`; raises UnknownNameError with close matches."""
    tasks = load_tasks(root)
    if name in tasks:
        return tasks[name]
    raise UnknownNameError("task", name, suggest(name, list(tasks)),
                           hint="known tasks: " + ", ".join(sorted(tasks)))


def load_suites(root: Path | None = None) -> dict[str, tuple[str, ...]]:
    """Suite name -> task names, from `benchmarks/suites.yaml`, each name checked."""
    path = benchmarks_dir(root) / SUITES_FILE
    data = _read_yaml(path)
    known = load_tasks(root)
    suites: dict[str, tuple[str, ...]] = {}
    for suite, names in data.items():
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ConfigError("must be a non-empty list of task names", path=path, key=str(suite))
        for name in names:
            if name not in known:
                near = suggest(name, list(known))
                hint = f"; did you mean '{near[0]}'?" if near else ""
                raise ConfigError(f"unknown task '{name}'{hint}", path=path, key=str(suite))
        suites[str(suite)] = tuple(names)
    return suites


def load_suite(name: str, root: Path | None = None) -> list[Task]:
    """The tasks of suite `name`, in the order suites.yaml lists them."""
    suites = load_suites(root)
    if name not in suites:
        raise UnknownNameError("suite", name, suggest(name, list(suites)),
                               hint="known suites: " + ", ".join(sorted(suites)))
    tasks = load_tasks(root)
    return [tasks[task] for task in suites[name]]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", path=path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=path) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of keys to values", path=path)
    return data


def parse_task(path: Path) -> Task:
    """One task file, validated: unknown, missing or mistyped keys raise ConfigError."""
    data = _read_yaml(path)
    _check_keys(data, path)
    _check_values(data, path)
    few_shot = _parse_few_shot(data.get("few_shot") or [], path)
    source = data["source"]
    options = _parse_options(source, data.get("options") or {}, path)
    records = _load_records(source, path) if source.startswith("file:") else ()
    n_choices = len(records[0].wrong) + 1 if records else 4
    return Task(name=data["name"], version=data["version"], description=data["description"],
                category=data["category"], kind=data["kind"], source=source,
                chance=1 / n_choices, n_items=data["n_items"], path=str(path), few_shot=few_shot,
                template=data.get("template", DEFAULT_TEMPLATE),
                separator=data.get("separator", "\n\n"),
                instructions=data.get("instructions", ""), options=options, records=records)


def _check_keys(data: dict[str, Any], path: Path) -> None:
    known = {**_REQUIRED, **_OPTIONAL}
    for key, value in data.items():
        if key not in known:
            near = suggest(str(key), list(known))
            hint = f"did you mean '{near[0]}'?" if near else "known keys: " + ", ".join(known)
            raise ConfigError(f"unknown key; {hint}", path=path, key=str(key))
        kind = known[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"must be {kind.__name__}, got {type(value).__name__}",
                              path=path, key=key)
    for key in _REQUIRED:
        if key not in data:
            raise ConfigError("missing required key", path=path, key=key)


def _check_values(data: dict[str, Any], path: Path) -> None:
    if not _NAME.match(data["name"]):
        raise ConfigError("use lowercase letters, digits, '.', '_' or '-'", path=path, key="name")
    if data["version"] < 1 or data["n_items"] < 1:
        key = "version" if data["version"] < 1 else "n_items"
        raise ConfigError("must be a positive integer", path=path, key=key)
    for key, allowed in (("kind", KINDS), ("category", CATEGORIES)):
        if data[key] not in allowed:
            raise ConfigError(f"must be one of {', '.join(allowed)}", path=path, key=key)
    if "{question}" not in data.get("template", "{question}"):
        raise ConfigError("must contain {question}", path=path, key="template")
    if data.get("template", "x").rstrip() != data.get("template", "x"):
        raise ConfigError("must not end with whitespace", path=path, key="template")
    source = data["source"]
    kind, _, target = source.partition(":")
    if kind not in ("generator", "file") or not target:
        raise ConfigError("must be 'generator:<name>' or 'file:<path under benchmarks/>'",
                          path=path, key="source")
    if kind == "generator" and target not in GENERATORS:
        near = suggest(target, list(GENERATORS))
        hint = f"did you mean 'generator:{near[0]}'?" if near else \
            "known generators: " + ", ".join(GENERATORS)
        raise ConfigError(f"unknown generator '{target}'; {hint}", path=path, key="source")


def _parse_few_shot(raw: list[Any], path: Path) -> tuple[tuple[str, str], ...]:
    shots = []
    for index, shot in enumerate(raw):
        if not isinstance(shot, dict) or set(shot) != {"question", "answer"} or \
                not all(isinstance(v, str) and v.strip() == v and v for v in shot.values()):
            raise ConfigError("each example needs exactly 'question' and 'answer' strings, "
                              "without surrounding spaces", path=path, entry=str(index),
                              key="few_shot")
        shots.append((shot["question"], shot["answer"]))
    return tuple(shots)


def _parse_options(source: str, raw: dict[str, Any], path: Path) -> tuple[tuple[str, Any], ...]:
    if raw and not source.startswith("generator:"):
        raise ConfigError("only generator tasks take options", path=path, key="options")
    allowed = GENERATORS[source.removeprefix("generator:")].options if raw else {}
    for key, value in raw.items():
        if key not in allowed:
            known = ", ".join(allowed) or "none"
            raise ConfigError(f"unknown option; known: {known}", path=path, key=f"options.{key}")
        if type(value) is not type(allowed[key]):
            raise ConfigError(f"must be {type(allowed[key]).__name__}", path=path,
                              key=f"options.{key}")
    return tuple(sorted(raw.items()))


def _load_records(source: str, path: Path) -> tuple[RawItem, ...]:
    """The items of a `file:` task: JSONL lines of {id, question, choices, answer}."""
    relative = Path(source.removeprefix("file:"))
    if relative.is_absolute() or ".." in relative.parts:
        raise ConfigError("must be a path inside benchmarks/", path=path, key="source")
    data_path = path.parent / relative
    if not data_path.is_file():
        raise ConfigError(f"data file {data_path} not found", path=path, key="source")
    records = []
    for number, line in enumerate(data_path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            records.append(_parse_record(line, data_path, number))
    if not records:
        raise ConfigError("data file has no items", path=data_path)
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise ConfigError("duplicate item ids", path=data_path, key="id")
    if len({len(r.wrong) for r in records}) != 1:
        raise ConfigError("every item needs the same number of choices", path=data_path,
                          key="choices")
    return tuple(records)


def _parse_record(line: str, path: Path, number: int) -> RawItem:
    where = f"line {number}"
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc}", path=path, entry=where) from None
    if not isinstance(rec, dict):
        raise ConfigError("expected a JSON object", path=path, entry=where)
    for key in ("id", "question", "choices", "answer"):
        if key not in rec:
            raise ConfigError("missing required key", path=path, entry=where, key=key)
    choices, answer = rec["choices"], rec["answer"]
    texts = [rec["question"], rec["id"], answer, *choices] if isinstance(choices, list) else []
    if not texts or not all(isinstance(t, str) and t and t.strip() == t for t in texts):
        raise ConfigError("id, question, answer and choices must be non-empty strings without "
                          "surrounding spaces", path=path, entry=where, key="choices")
    if answer not in choices or len(set(choices)) != len(choices) or len(choices) < 2:
        raise ConfigError("choices must be distinct and include the answer", path=path,
                          entry=where, key="answer")
    wrong = tuple(c for c in choices if c != answer)
    return RawItem(question=rec["question"], answer=answer, wrong=wrong, id=rec["id"])
