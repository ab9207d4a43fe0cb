"""Multiple-choice scoring: the log-likelihood of each choice after the item's context."""

from __future__ import annotations

import time
from collections.abc import Sequence

from edgeeval import records as rec
from edgeeval.engine.backend import Backend
from edgeeval.engine.batch import BatchScorer, OnDone
from edgeeval.metrics import score_samples
from edgeeval.tasks.suite import McItem, Task


def continuation_tokens(
    backend: Backend, context: str, choice: str, context_tokens: list[int]
) -> list[int]:
    """Tokens of `choice` as they appear after `context` (tokenizing the joined text, so the
    word boundary is tokenized as the model sees it), falling back to the choice alone."""
    whole = backend.tokenize(context + choice, add_bos=True)
    n = len(context_tokens)
    if whole[:n] == context_tokens and len(whole) > n:
        return whole[n:]
    return backend.tokenize(choice, add_bos=False)


def score_task(
    backend: Backend,
    task: Task,
    items: Sequence[McItem],
    batch: BatchScorer | None = None,
    on_done: OnDone | None = None,
) -> tuple[rec.TaskScore, list[rec.SampleResult]]:
    """Score multiple-choice items by log-likelihood; returns the task score and the samples.
    With `batch`, several questions share each decode (BatchEngine.choice_logliks_many).
    `on_done(n)`: n questions scored so far (progress only)."""
    start = time.perf_counter()
    questions = []
    for item in items:
        ctx = backend.tokenize(item.context, add_bos=True)
        questions.append(
            (ctx, [continuation_tokens(backend, item.context, c, ctx) for c in item.choices])
        )
    if batch is not None:
        all_logliks = batch.choice_logliks_many(questions, on_done=on_done)
    else:
        all_logliks = []
        for ctx, conts in questions:
            all_logliks.append(backend.choice_logliks(ctx, conts))
            if on_done is not None:
                on_done(len(all_logliks))
    samples = [
        rec.SampleResult(
            task=task.name,
            item_id=item.id,
            gold=item.gold,
            logliks=tuple(logliks),
            choice_chars=tuple(len(c.encode()) for c in item.choices),
            cluster=item.cluster,
            cluster_by=task.cluster_by if item.cluster else "",
        )
        for item, logliks in zip(items, all_logliks, strict=True)
    ]
    score = score_samples(
        samples,
        task=task.name,
        version=task.version,
        category=task.category,
        chance=task.chance,
        elapsed_s=time.perf_counter() - start,
    )
    return score, samples
