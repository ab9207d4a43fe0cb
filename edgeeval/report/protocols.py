"""How each task was asked, in the report: protocol, thinking mode, what was not counted.

Records made before these fields existed have no protocol; for them nothing here adds a line,
so their reports stay as they were. A reasoning template with a thinking switch (Qwen3) is
measured with thinking on and off: `split_thinking` turns such a record into two ranking rows,
the second named "<variant> (thinking off)".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from edgeeval import records as rec
from edgeeval.text import safe_text

THINKING_OFF_SUFFIX = " (thinking off)"

PROTOCOL_NOTE = (
    "Protocols: instruct = the model's own chat template (few-shot examples as chat turns; "
    "code tasks ask for a self-contained solution in a markdown code block and run the code "
    "extracted from the reply, as EvalPlus does); completion = raw few-shot or HumanEval "
    "prompts (human-eval, lm-eval); loglikelihood = multiple choice scored by the choices' "
    "log-likelihood. Timeouts are the model's failures and count in n; harness errors (a "
    "sandbox that did not start, a prompt longer than the context) are not in n. 'thinking "
    "closed at budget' counts answers whose thinking was still open when the thinking budget "
    "was spent: the template's end-of-thinking marker was put in, then an answer lead-in "
    "(--think-lead-in; the settings line shows it when it is not the default "
    "'\\n\\nFinal answer:'), and the model answered within the answer budget, never ending "
    "before a word of answer (--think-budget-mode force, the default; the other answers "
    "closed their thinking themselves). 'cut in thinking' counts answers that used up their "
    "token budget (answer + thinking budget) while still thinking (--think-budget-mode cut, "
    "or a template whose marker is not known); they are scored as they stand."
)

COLUMNS = (
    "variant",
    "task",
    "protocol",
    "thinking",
    "shots",
    "n",
    "score %",
    "timeouts (in n)",
    "harness errors (not in n)",
    "thinking closed at budget",
    "cut in thinking",
    "thinking chars / answer",
)


def has_protocols(records: Sequence[rec.ModelRecord]) -> bool:
    """True when any task of these records says which protocol scored it."""
    return any(t.protocol for r in records for t in r.tasks)


def split_thinking(records: Sequence[rec.ModelRecord]) -> list[rec.ModelRecord]:
    """Each record measured with thinking on and off as two records (thinking-off scores under
    the name + THINKING_OFF_SUFFIX; multiple-choice scores in both); others unchanged."""
    out: list[rec.ModelRecord] = []
    for record in records:
        if not any(t.thinking == "off" for t in record.tasks):
            out.append(record)
            continue
        on = tuple(t for t in record.tasks if t.thinking != "off")
        off = tuple(t for t in record.tasks if t.thinking != "on")
        variant = dataclasses.replace(
            record.variant, name=record.variant.name + THINKING_OFF_SUFFIX
        )
        out += [
            dataclasses.replace(record, tasks=on),
            dataclasses.replace(record, tasks=off, variant=variant),
        ]
    return out


def protocol_rows(records: Sequence[rec.ModelRecord]) -> list[dict[str, Any]]:
    """One dict per scored or failed task that names its protocol (COLUMNS as keys)."""
    rows = []
    for record in records:
        for t in record.tasks:
            if not t.protocol:
                continue
            rows.append(
                {
                    "variant": record.variant.name,
                    "task": t.task,
                    "protocol": t.protocol,
                    "thinking": t.thinking or "-",
                    "shots": "-" if t.n_shot is None else str(t.n_shot),
                    "n": str(t.n),
                    "score %": f"{100 * t.acc:.1f}" if t.status == rec.STATUS_OK else t.status,
                    "timeouts (in n)": str(t.n_timeout),
                    "harness errors (not in n)": str(t.n_harness_error),
                    "thinking closed at budget": str(t.n_thinking_forced),
                    "cut in thinking": str(t.n_cut_in_thinking),
                    "thinking chars / answer": f"{t.mean_thinking_chars:.0f}",
                }
            )
    return rows


def _cell(value: str) -> str:
    return safe_text(value, 120, markdown=True)


def protocol_markdown(records: Sequence[rec.ModelRecord]) -> list[str]:
    """The "How each task was asked" section as markdown lines ([] for older records)."""
    rows = protocol_rows(records)
    if not rows:
        return []
    lines = [
        "## How each task was asked",
        "",
        PROTOCOL_NOTE,
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|---|---|---|---|" + "---:|" * (len(COLUMNS) - 4),
    ]
    lines += ["| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    return [*lines, ""]
