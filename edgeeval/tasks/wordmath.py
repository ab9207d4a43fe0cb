"""Small arithmetic word problems, generated from a seed with verified integer answers.

A problem is a story template filled with random names, objects and numbers, plus the
arithmetic `Step`s that solve it. The answer is folded from the steps (each step's value is
computed here, divisions are exact, every value is a positive integer), and the worked
solution is written from the same steps, e.g.

    "Ana has 12 shells. Ana buys 5 more and then gives 3 to a friend. How many shells does
    Ana have now?" -> "First, 12 + 5 = 17. Then, 17 - 3 = 14. The answer is 14."

so the text a model sees and the answer it is scored against cannot disagree.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from dataclasses import dataclass

_OPS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.floordiv,
}
_NAMES = (
    "Ana",
    "Ben",
    "Chloe",
    "David",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Iris",
    "Jonas",
    "Kira",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Pedro",
)
_THINGS = (
    "apples",
    "marbles",
    "stickers",
    "pencils",
    "cookies",
    "books",
    "stamps",
    "shells",
    "cards",
    "balloons",
)


@dataclass(frozen=True)
class Step:
    """One arithmetic step `left op right`; its value is computed, never written by hand."""

    left: int
    op: str
    right: int

    @property
    def value(self) -> int:
        if self.op == "/" and self.left % self.right:
            raise ValueError(f"{self.left} / {self.right} is not exact")
        return _OPS[self.op](self.left, self.right)

    def text(self) -> str:
        """ "12 + 5 = 17"."""
        return f"{self.left} {self.op} {self.right} = {self.value}"


@dataclass(frozen=True)
class WordProblem:
    """A question and the steps that solve it; the answer is the last step's value."""

    question: str
    steps: tuple[Step, ...]

    @property
    def answer(self) -> int:
        return self.steps[-1].value

    @property
    def solution(self) -> str:
        """The worked answer, ending "The answer is N." as the task's few-shot examples do."""
        lines = [f"{step.text()}." for step in self.steps]
        if len(lines) > 1:
            lines = [f"First, {lines[0]}", *(f"Then, {line}" for line in lines[1:])]
        return " ".join([*lines, f"The answer is {self.answer}."])


def _buy_give(rng: random.Random, name: str, thing: str) -> WordProblem:
    a, b = rng.randint(5, 40), rng.randint(2, 30)
    c = rng.randint(1, a + b - 1)
    return WordProblem(
        f"{name} has {a} {thing}. {name} buys {b} more and then gives {c} to a "
        f"friend. How many {thing} does {name} have now?",
        (Step(a, "+", b), Step(a + b, "-", c)),
    )


def _boxes(rng: random.Random, name: str, thing: str) -> WordProblem:
    a, b = rng.randint(3, 25), rng.randint(2, 12)
    return WordProblem(
        f"Each box holds {a} {thing}. {name} has {b} full boxes. How many {thing} "
        f"does {name} have?",
        (Step(a, "*", b),),
    )


def _share(rng: random.Random, name: str, thing: str) -> WordProblem:
    each, friends = rng.randint(2, 15), rng.randint(2, 9)
    total = each * friends
    return WordProblem(
        f"{name} shares {total} {thing} equally among {friends} friends. How many "
        f"{thing} does each friend get?",
        (Step(total, "/", friends),),
    )


def _pages(rng: random.Random, name: str, thing: str) -> WordProblem:
    a, b, c = rng.randint(5, 30), rng.randint(2, 9), rng.randint(1, 40)
    return WordProblem(
        f"{name} reads {a} pages every day for {b} days and then reads {c} more "
        f"pages. How many pages does {name} read in total?",
        (Step(a, "*", b), Step(a * b, "+", c)),
    )


def _shop(rng: random.Random, name: str, thing: str) -> WordProblem:
    b, c = rng.randint(2, 30), rng.randint(2, 30)
    a = b + c + rng.randint(1, 40)
    return WordProblem(
        f"A shop has {a} {thing}. It sells {b} in the morning and {c} in the "
        f"afternoon. How many {thing} are left?",
        (Step(a, "-", b), Step(a - b, "-", c)),
    )


def _change(rng: random.Random, name: str, thing: str) -> WordProblem:
    count, price = rng.randint(2, 6), rng.randint(2, 9)
    bill = next(b for b in (20, 50, 100) if b > count * price)
    return WordProblem(
        f"{name} buys {count} {thing} for {price} dollars each and pays with a "
        f"{bill}-dollar bill. How many dollars of change does {name} get?",
        (Step(count, "*", price), Step(bill, "-", count * price)),
    )


def _garden(rng: random.Random, name: str, thing: str) -> WordProblem:
    rows, per_row = rng.randint(3, 12), rng.randint(3, 12)
    lost = rng.randint(1, rows * per_row - 1)
    return WordProblem(
        f"{name}'s garden has {rows} rows with {per_row} plants in each row. "
        f"{lost} plants die. How many plants are left?",
        (Step(rows, "*", per_row), Step(rows * per_row, "-", lost)),
    )


def _age(rng: random.Random, name: str, thing: str) -> WordProblem:
    age, times, later = rng.randint(5, 12), rng.randint(5, 7), rng.randint(2, 10)
    return WordProblem(
        f"{name} is {age} years old. {name}'s grandfather is {times} times as old "
        f"as {name}. How old will the grandfather be in {later} years?",
        (Step(age, "*", times), Step(age * times, "+", later)),
    )


_TEMPLATES = (_buy_give, _boxes, _share, _pages, _shop, _change, _garden, _age)


def make_word_problem(rng: random.Random) -> WordProblem:
    """One problem from a random template; every step value is checked to be a positive integer."""
    problem = rng.choice(_TEMPLATES)(rng, rng.choice(_NAMES), rng.choice(_THINGS))
    if any(step.value <= 0 for step in problem.steps):  # the templates' ranges exclude this
        raise ValueError(f"non-positive step in {problem.question!r}")
    return problem
