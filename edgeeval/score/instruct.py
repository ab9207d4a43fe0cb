"""HumanEval through an instruct model's chat template: EvalPlus's instruct protocol.

The user turn asks for a self-contained Python script in a markdown code block and quotes the
problem (signature and docstring) in a code fence. As EvalPlus does, the assistant's reply is
begun for the model ("Below is a Python script ... tests:" and an opening ```python fence), so
it writes code straight away; it stops at the closing fence or its end-of-turn token. Reasoning
models with thinking on get the plain generation prompt instead (a begun reply would skip their
thinking), think, then answer with a code block.

The program that runs is the first ```python block of the reply (a bare ``` block, else the
whole reply, when there is none), with the thinking removed. It must hold the whole function:
when it does not define the entry point, it is taken as the body and the prompt goes first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from edgeeval.sandbox.template import ChatTemplate, Message, render_chats
from edgeeval.score.extract import strip_thinking
from edgeeval.score.protocol import THINKING_ON, Plan

# The wording of EvalPlus's instruct prompt (a protocol fact, kept so numbers compare).
INSTRUCTION = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block:"
)
RESPONSE = (
    "Below is a Python script with a self-contained function that solves the problem and "
    "passes corresponding tests:"
)
OPEN_FENCE = "```python\n"
STOPS = ("\n```",)  # the end of the begun code block
MIN_TOKENS = 768  # EvalPlus's default budget: the model writes the whole function again
_MARKER = "EDGEEVAL-PREFILL-4b1e"
_BLOCK = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)(?:\n?```|\Z)", re.DOTALL | re.I)


@dataclass(frozen=True)
class CodePrompt:
    """One rendered instruct prompt: its text, the part of the reply already written for the
    model (`begun`), the stop strings and the token budget."""

    text: str
    begun: str
    stops: tuple[str, ...]
    max_tokens: int


def request(prompt: str) -> Message:
    """The user turn for one HumanEval prompt."""
    return {"role": "user", "content": f"{INSTRUCTION}\n```\n{prompt.strip()}\n```\n"}


def render_prompts(
    template: ChatTemplate, prompts: Sequence[str], plan: Plan, max_tokens: int
) -> list[CodePrompt]:
    """Instruct prompts for `prompts`, rendered in the template sandbox (raises
    ChatTemplateError when the template is refused). The reply is begun for the model unless
    it thinks first, or the template drops the begun reply (then: the plain prompt)."""
    variables = plan.variables(template)
    budget = plan.budget(max(max_tokens, MIN_TOKENS))
    if plan.thinking != THINKING_ON:
        begun = f"{RESPONSE}\n{OPEN_FENCE}"
        conversations = [
            [request(p), {"role": "assistant", "content": f"{begun}{_MARKER}\n```\n"}]
            for p in prompts
        ]
        texts = render_chats(
            template, conversations, add_generation_prompt=False, variables=variables
        )
        if all(t.count(_MARKER) == 1 for t in texts):
            return [CodePrompt(t.split(_MARKER)[0], OPEN_FENCE, STOPS, budget) for t in texts]
    texts = render_chats(template, [[request(p)] for p in prompts], variables=variables)
    return [CodePrompt(t, "", (), budget) for t in texts]


def extract_code(reply: str) -> str:
    """The code in a reply: its first ```python block (an unclosed block runs to the end),
    else its first bare ``` block, else the whole reply; thinking removed first.

    >>> extract_code("Sure:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1'
    """
    visible, _ = strip_thinking(reply)
    blocks = list(_BLOCK.finditer(visible))
    tagged = [b for b in blocks if b.group(1)]
    chosen = (tagged or blocks)[0] if blocks else None
    return chosen.group(2).rstrip() if chosen else visible.strip()


def candidate_program(code: str, prompt: str, entry_point: str) -> str:
    """The program to test: the code when it defines `entry_point`, else prompt + code (the
    code is then the function's body).

    >>> candidate_program("    return 1", "def f():\\n", "f")
    'def f():\\n    return 1\\n'
    """
    defines = re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M)
    return code + "\n" if defines else prompt + code + "\n"
