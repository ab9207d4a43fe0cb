"""Argument types shared by several subcommands: each value is validated once, at the edge."""

from __future__ import annotations

import argparse


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


def name_list(text: str) -> tuple[str, ...]:
    """ "arc-easy,gsm8k" -> ("arc-easy", "gsm8k"), for lm-eval style --tasks.

    >>> name_list("arc-easy, gsm8k")
    ('arc-easy', 'gsm8k')
    """
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names
