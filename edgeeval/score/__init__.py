"""A model's answers to scores: choice scoring, generation, extraction, chat, code execution.

`score_by_kind` runs one task the way its kind asks. The sandbox children (chat templates,
generated code) import this package too, so it imports the scorers only when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeeval import records as rec
    from edgeeval.engine.backend import Backend
    from edgeeval.engine.batch import BatchEngineLike
    from edgeeval.score.protocol import Plan
    from edgeeval.tasks.suite import Task


def score_by_kind(
    backend: Backend,
    task: Task,
    settings: rec.RunSettings,
    *,
    model_kind: str = "",
    plan: Plan | None = None,
    batch: BatchEngineLike | None = None,
) -> tuple[rec.TaskScore, list[rec.SampleResult], list[rec.GenSampleResult]]:
    """Score one task the way its kind asks: log-likelihood for multiple choice, greedy
    generation for generate, generation plus sandboxed execution for code (only when
    `settings.allow_code_exec`; otherwise recorded as skipped). Returns the task score, the
    multiple-choice samples and the generated samples. `plan` (score.protocol.Plan) is the
    protocol and thinking mode of generate and code tasks (see score.tasks.task_plans);
    `batch` (engine.batch.BatchEngine) scores several items per decode."""
    from edgeeval.score.choice import score_task
    from edgeeval.score.generate import (
        CODE_EXEC_OFF,
        score_code_task,
        score_generate_task,
        skipped_score,
    )
    from edgeeval.score.tasks import describe_score

    if task.kind == "code" and not settings.allow_code_exec:  # skip before loading any items
        return skipped_score(task, CODE_EXEC_OFF, metric="pass@1"), [], []
    items = task.items(limit=settings.task_limit, seed=settings.seed, sample=settings.task_sample)
    if task.kind == "generate":
        score, generated = score_generate_task(
            backend, task, items, model_kind=model_kind, plan=plan, batch=batch
        )
        return describe_score(score, task, items), [], generated
    if task.kind == "code":
        from edgeeval.sandbox.jail import choose as choose_sandbox

        sandbox = choose_sandbox(unsafe=settings.unsafe_code_exec)
        score, generated = score_code_task(
            backend, task, items, sandbox=sandbox, plan=plan, batch=batch
        )
        return describe_score(score, task, items), [], generated
    if task.kind != "multiple_choice":
        raise ValueError(f"task {task.name}: unknown kind {task.kind!r}")
    score, samples = score_task(backend, task, items, batch)
    return describe_score(score, task, items), samples, []
