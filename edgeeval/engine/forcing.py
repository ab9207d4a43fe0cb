"""Budget forcing: closing a reasoning model's thinking when its thinking budget is spent.

A generation with a `ThinkForce` counts its generated tokens; once `budget` of them are
generated and the text is still inside its thinking (an open `<think>` never closed, counting
one the prompt ended with), the end-of-thinking marker's tokens are decoded into the sequence
as if the model had written them, its text is added to the output, and the model goes on to
answer with the rest of the token budget (the caller's max_tokens is thinking budget plus
answer budget, so the answer keeps its whole budget). It happens at most once per sequence.

As llama.cpp's reasoning-budget sampler (common/reasoning-budget.cpp), forcing waits for the
output to end on a whole UTF-8 character. Unlike it, the marker's tokens are not counted as
generated tokens and a second `<think>` after the forced close gets no new budget.
LlamaBackend.generate and BatchEngine apply the same rule through `ThinkForce.due`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThinkForce:
    """How one generation is forced out of its thinking: after `budget` generated tokens,
    `tokens` (the marker, tokenized for the model) are decoded and `close` (its text) is
    added to the output. `open_in_prompt`: the prompt ended inside a thinking block (R1's
    template writes `<think>` into the generation prompt)."""

    budget: int
    tokens: tuple[int, ...]
    close: str = "</think>"
    open: str = "<think>"
    open_in_prompt: bool = False

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
