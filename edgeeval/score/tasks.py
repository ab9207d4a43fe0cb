"""Per task and model: the plans it is scored under, its items scored the way its kind asks,
and what its score records about them.

- `task_plans`: one plan, or two for a reasoning template with a thinking switch (thinking on
  and off; each gives its own TaskScore).
- `score_items`: a list of the task's items scored the way its kind asks (log-likelihood for
  multiple choice, greedy generation for generate, generation plus sandboxed execution for
  code). `score_by_kind` scores a task's whole item list in one go.
- `describe_score`: the few-shot count, the size of the task's source and the
  multiple-choice protocol, added to a score.

edgeeval.run.accuracy runs these over a variant's tasks, whole or in pieces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeeval import records as rec
from edgeeval.engine.backend import Backend
from edgeeval.engine.batch import BatchEngineLike, OnDone
from edgeeval.sandbox.jail import Sandbox
from edgeeval.sandbox.jail import choose as choose_sandbox
from edgeeval.score.choice import score_task
from edgeeval.score.generate import (
    CODE_EXEC_OFF,
    model_template,
    score_code_task,
    score_generate_task,
    skipped_score,
)
from edgeeval.score.protocol import LOGLIKELIHOOD, Plan, plans, thinks

Scored = tuple[rec.TaskScore, list[rec.SampleResult], list[rec.GenSampleResult]]


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
            think_budget_mode=settings.think_budget_mode,
            think_lead_in=settings.think_lead_in,
        )
    )


def skipped(task: Any, settings: rec.RunSettings) -> rec.TaskScore | None:
    """The skipped score of a task that is not run under `settings` (a code task without
    --allow-code-exec), decided before any item is loaded; None for a task that runs."""
    if getattr(task, "kind", "multiple_choice") == "code" and not settings.allow_code_exec:
        return skipped_score(task, CODE_EXEC_OFF, metric="pass@1")
    return None


def task_sandbox(task: Any, settings: rec.RunSettings) -> Sandbox | None:
    """The OS sandbox a code task's programs run in (None for other kinds)."""
    if getattr(task, "kind", "") != "code":
        return None
    return choose_sandbox(unsafe=settings.unsafe_code_exec)


def score_items(
    backend: Backend,
    task: Any,
    items: Sequence[Any],
    *,
    model_kind: str = "",
    plan: Plan | None = None,
    batch: BatchEngineLike | None = None,
    sandbox: Sandbox | None = None,
    on_done: OnDone | None = None,
) -> Scored:
    """`items` of `task` scored the way its kind asks: (score over these items, multiple-choice
    samples, generated samples). `plan` (score.protocol.Plan) is the protocol and thinking
    mode of generate and code tasks; `batch` (engine.batch.BatchEngine) scores several items
    per decode; `sandbox` runs a code task's programs (task_sandbox); `on_done(n)` is told as
    the items scored (generated, for a code task) grow, for progress only."""
    kind = getattr(task, "kind", "multiple_choice")
    if kind == "generate":
        score, generated = score_generate_task(
            backend, task, items, model_kind=model_kind, plan=plan, batch=batch, on_done=on_done
        )
        return score, [], generated
    if kind == "code":
        score, generated = score_code_task(
            backend, task, items, sandbox=sandbox, plan=plan, batch=batch, on_done=on_done
        )
        return score, [], generated
    if kind != "multiple_choice":
        raise ValueError(f"task {task.name}: unknown kind {kind!r}")
    score, samples = score_task(backend, task, items, batch, on_done)
    return score, samples, []


def score_by_kind(
    backend: Backend,
    task: Any,
    settings: rec.RunSettings,
    *,
    model_kind: str = "",
    plan: Plan | None = None,
    batch: BatchEngineLike | None = None,
) -> Scored:
    """Score one task's whole item list in one go (only when `settings.allow_code_exec` for a
    code task; otherwise recorded as skipped). Returns the described task score, the
    multiple-choice samples and the generated samples."""
    gone = skipped(task, settings)
    if gone is not None:  # skip before loading any items
        return gone, [], []
    items = task.items(limit=settings.task_limit, seed=settings.seed, sample=settings.task_sample)
    score, samples, generated = score_items(
        backend,
        task,
        items,
        model_kind=model_kind,
        plan=plan,
        batch=batch,
        sandbox=task_sandbox(task, settings),
    )
    return describe_score(score, task_facts(task, items)), samples, generated


@dataclass(frozen=True)
class TaskFacts:
    """What a task's score records about the task itself, whatever items were scored: few-shot
    examples per prompt, the source's size and the protocol of multiple choice."""

    n_shot: int
    n_source: int | None
    protocol: str = ""


def task_facts(task: Any, items: Sequence[Any]) -> TaskFacts:
    """The facts of `task` run on `items` (its whole selected item list)."""
    kind = getattr(task, "kind", "multiple_choice")
    if kind == "generate":
        shots = len(items[0].few_shot) if items else len(getattr(task, "few_shot", ()))
    else:
        shots = 0 if kind == "code" else len(getattr(task, "few_shot", ()))
    size = getattr(task, "source_size", None)
    return TaskFacts(
        n_shot=shots,
        n_source=size() if callable(size) else None,
        protocol=LOGLIKELIHOOD if kind == "multiple_choice" else "",
    )


def describe_score(score: rec.TaskScore, facts: TaskFacts) -> rec.TaskScore:
    """`score` with its few-shot count, source size (lm-eval's n-samples "original") and, for
    multiple choice, the protocol."""
    return dataclasses.replace(
        score,
        n_shot=facts.n_shot,
        n_source=facts.n_source,
        protocol=score.protocol or facts.protocol,
    )
