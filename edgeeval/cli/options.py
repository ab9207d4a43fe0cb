"""Argument types shared by several subcommands: each value is validated once, at the edge."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def positive_gb(text: str) -> float:
    """A memory budget in GB (10^9 bytes): a number above zero.

    >>> positive_gb("8")
    8.0
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GB, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of GB, got {text}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """ "1,2,4" -> (1, 2, 4), for llama-bench style sweep options.

    >>> int_list("1,2,4")
    (1, 2, 4)
    """
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """A count of at least 1 (tokens, repetitions, items, context size).

    >>> positive_int("3")
    3
    """
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """A count that may be 0 (few-shot examples).

    >>> non_negative_int("0")
    0
    """
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """A duration in seconds above zero.

    >>> positive_seconds("1.5")
    1.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def list_of(minimum: int, maximum: int | None = None) -> Callable[[str], tuple[int, ...]]:
    """An int_list type whose entries lie in [minimum, maximum].

    >>> list_of(0, 1)("0,1")
    (0, 1)
    """

    def parse(text: str) -> tuple[int, ...]:
        values = int_list(text)
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one value, got {text!r}")
        bad = [v for v in values if v < minimum or (maximum is not None and v > maximum)]
        if bad:
            allowed = f"{minimum}..{maximum}" if maximum is not None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"each value must be {allowed}, got {bad[0]}")
        return values

    return parse


def context_length(text: str) -> int:
    """A context length in tokens: a whole number from 1 to 2^24.

    >>> context_length("8192")
    8192
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of tokens, got {text!r}") from None
    if not 0 < value <= 1 << 24:
        raise argparse.ArgumentTypeError(f"must be from 1 to {1 << 24} tokens, got {text}")
    return value


def name_list(text: str) -> tuple[str, ...]:
    """ "arc-easy,gsm8k" -> ("arc-easy", "gsm8k"), for lm-eval style --tasks.

    >>> name_list("arc-easy, gsm8k")
    ('arc-easy', 'gsm8k')
    """
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, without the hidden spellings: an option's lm-eval underscore alias
    (`--num_fewshot` beside `--num-fewshot`) parses but is not shown in --help."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = hidden_aliases_removed(action.option_strings)
        if shown == action.option_strings:
            return super()._format_action_invocation(action)
        return super()._format_action_invocation(_with_strings(action, shown))


def hidden_aliases_removed(strings: Sequence[str]) -> list[str]:
    """The option strings --help shows: a `--long_name` is hidden when `--long-name` or another
    spelling without underscores is there too.

    >>> hidden_aliases_removed(["--num-fewshot", "--num_fewshot"])
    ['--num-fewshot']
    """
    plain = [s for s in strings if "_" not in s]
    return plain if plain else list(strings)


def _with_strings(action: argparse.Action, strings: list[str]) -> argparse.Action:
    import copy

    shown = copy.copy(action)
    shown.option_strings = strings
    return shown


#: The formats `-o` prints a speed table in (llama-bench's `-o`).
SPEED_FORMATS = ("md", "csv", "json", "jsonl", "sql")
