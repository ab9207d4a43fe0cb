"""Per task and model: the plans it is scored under, and what its score records about them.

The worker asks `task_plans` for each task: one plan, or two for a reasoning template with a
thinking switch (thinking on and off; each gives its own TaskScore). `describe_score` adds the
few-shot count, the size of the task's source and the multiple-choice protocol to a score.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from edgeeval import records as rec
from edgeeval.engine.backend import Backend
from edgeeval.score.generate import model_template
from edgeeval.score.protocol import LOGLIKELIHOOD, Plan, plans, thinks


def think_budget(task: Any, settings: rec.RunSettings) -> int:
    """Tokens allowed for thinking: --max-think-tokens, else the task's own default."""
    if settings.max_think_tokens is not None:
        return settings.max_think_tokens
    return int(getattr(task, "max_think_tokens", 0) or 0)


def task_plans(
    backend: Backend,
    task: Any,
    settings: rec.RunSettings,
    *,
    model_kind: str = "",
    reasoning: bool = False,
) -> list[Plan | None]:
    """The plans `task` runs under on the loaded model: [None] for multiple choice and for
    code tasks that will be skipped, else one plan per thinking mode (score.protocol.plans)."""
    kind = getattr(task, "kind", "multiple_choice")
    if kind == "multiple_choice" or (kind == "code" and not settings.allow_code_exec):
        return [None]
    template = model_template(backend)
    return list(
        plans(
            template,
            requested=settings.protocol,
            model_kind=model_kind,
            reasoning=thinks(template.source if template else None, reasoning),
            think_tokens=think_budget(task, settings),
        )
    )


def describe_score(score: rec.TaskScore, task: Any, items: Sequence[Any]) -> rec.TaskScore:
    """`score` with its few-shot count, source size (lm-eval's n-samples "original") and, for
    multiple choice, the protocol."""
    kind = getattr(task, "kind", "multiple_choice")
    if kind == "generate":
        shots = len(items[0].few_shot) if items else len(getattr(task, "few_shot", ()))
    else:
        shots = 0 if kind == "code" else len(getattr(task, "few_shot", ()))
    size = getattr(task, "source_size", None)
    return dataclasses.replace(
        score,
        n_shot=shots,
        n_source=size() if callable(size) else None,
        protocol=score.protocol or (LOGLIKELIHOOD if kind == "multiple_choice" else ""),
    )
