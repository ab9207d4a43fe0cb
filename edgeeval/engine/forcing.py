"""Budget forcing: closing a reasoning model's thinking when its thinking budget is spent.

A generation with a `ThinkForce` counts its generated tokens; once `budget` of them are
generated and the text is still inside its thinking (an open `<think>` never closed, counting
one the prompt ended with), the end-of-thinking marker and the answer lead-in (`lead`; the
runs' default is settings.THINK_LEAD_IN, as s1's "Final Answer:" after the marker) are
decoded into the sequence as if the model had written them, their text is added to the
output, and the model goes on to answer with the rest of the token budget (the caller's
max_tokens is thinking budget plus answer budget, so the answer keeps its whole budget). It
happens at most once per sequence. After a forced close, end-of-generation is not picked
while the answer is still blank (`eog_allowed`): the best other token is taken instead, so a
forced sequence always writes an answer (a small model may otherwise end right after the
marker).

As llama.cpp's reasoning-budget sampler (common/reasoning-budget.cpp), forcing waits for the
output to end on a whole UTF-8 character. Unlike it, the marker's tokens are not counted as
generated tokens and a second `<think>` after the forced close gets no new budget.
LlamaBackend.generate and BatchEngine apply the same rule through `ThinkForce.due`,
`ThinkForce.eog_allowed` and `pick`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ThinkForce:
    """How one generation is forced out of its thinking: after `budget` generated tokens,
    `tokens` (the marker followed by the lead-in, tokenized together for the model) are
    decoded and `close` + `lead` (their text) is added to the output. `open_in_prompt`: the
    prompt ended inside a thinking block (R1's template writes `<think>` into the generation
    prompt)."""

    budget: int
    tokens: tuple[int, ...]
    close: str = "</think>"
    open: str = "<think>"
    open_in_prompt: bool = False
    lead: str = ""

    @property
    def text(self) -> str:
        """What the forced tokens add to the output: the marker, then the lead-in."""
        return self.close + self.lead

    def __post_init__(self) -> None:
        if self.budget < 0 or not self.tokens or not self.close:
            raise ValueError(
                f"budget forcing needs a budget >= 0 and a marker, got budget={self.budget}, "
                f"marker {self.close!r} of {len(self.tokens)} tokens"
            )

    def thinking(self, text: str) -> bool:
        """True while `text` (the output so far) is inside a thinking block.

        >>> f = ThinkForce(4, (9,), open_in_prompt=True)
        >>> f.thinking("so 2+2"), f.thinking("so</think> 4"), f.thinking("a</think><think>b")
        (True, False, True)
        """
        full = (self.open if self.open_in_prompt else "") + text
        return full.rfind(self.open) > full.rfind(self.close)

    def due(self, out: bytes | bytearray, n_gen: int) -> bool:
        """True when the marker goes in now: `n_gen` >= budget, the output `out` ends on a
        whole UTF-8 character, and it is still thinking."""
        if n_gen < self.budget:
            return False
        try:
            text = out.decode("utf-8")
        except UnicodeDecodeError:  # a character split across tokens: wait for its end
            return False
        return self.thinking(text)

    def eog_allowed(self, out: bytes | bytearray, answer_at: int) -> bool:
        """False while a forced answer is blank: the marker and lead-in went in, ending at
        byte `answer_at` of `out` (-1: not forced), and nothing but white space came after.

        >>> f = ThinkForce(2, (9,))
        >>> f.eog_allowed(b"ab</think>", -1), f.eog_allowed(b"ab</think> \\n", 10)
        (True, False)
        >>> f.eog_allowed(b"ab</think> 4", 10)
        True
        """
        if answer_at < 0:
            return True
        return bool(bytes(out[answer_at:]).decode("utf-8", "ignore").strip())


def pick(logits: np.ndarray, is_eog: Callable[[int], bool], allow_eog: bool = True) -> int:
    """The greedy pick from `logits`; without `allow_eog`, the best token that does not end
    the generation (a model has a few end-of-generation tokens: EOS, EOT, <|im_end|>, ...).

    >>> eog = {2}.__contains__
    >>> pick(np.array([0.0, 1.0, 3.0]), eog), pick(np.array([0.0, 1.0, 3.0]), eog, False)
    (2, 1)
    """
    token = int(np.argmax(logits))
    if allow_eog or not is_eog(token):
        return token
    masked = np.array(logits, dtype=np.float64)
    while is_eog(token):
        masked[token] = -np.inf
        token = int(np.argmax(masked))
        if masked[token] == -np.inf:  # every token ends the generation: nothing else to pick
            return int(np.argmax(logits))
    return token
