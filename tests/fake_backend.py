"""A Backend without native code, for fast tests of the measuring and scoring logic."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from edgeeval.engine.backend import BenchFacts, GenerationResult, find_stop
from edgeeval.engine.batch import GenRequest


class FakeBackend:
    """Counts calls; 'tokenizes' by characters; prefers continuations listed in `liked`."""

    n_vocab = 100
    too_long = 10**9  # generate_many: prompts of this many tokens or more do not fit

    def __init__(
        self, liked: tuple[str, ...] = (), replies: Sequence[str] = (), template: str | None = None
    ) -> None:
        self.calls: list[tuple] = []
        self.liked = liked
        self.replies = list(replies)  # what generate() returns, in order ("" when used up)
        self.template = template

    def clear(self) -> None:
        self.calls.append(("clear",))

    def bench_prompt(self, n_tokens: int, rng: random.Random, *, first: bool = True) -> None:
        self.calls.append(("prompt", n_tokens))

    def bench_gen(self, n_tokens: int, rng: random.Random) -> None:
        self.calls.append(("gen", n_tokens))

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return ([1] if add_bos else []) + [ord(c) % self.n_vocab for c in text]

    def set_threads(self, n_threads: int) -> None:
        self.calls.append(("threads", n_threads))

    def first_token(self, prompt: str) -> int:
        self.calls.append(("first", len(prompt)))
        return 0

    def choice_logliks(self, context: list[int], continuations: list[list[int]]) -> list[float]:
        liked = [[ord(c) % self.n_vocab for c in text] for text in self.liked]
        return [0.0 if cont in liked else -1.0 * len(cont) for cont in continuations]

    # --- generation: one character is one token ---
    def prompt_tokens(self, text: str, *, special: bool) -> list[int]:
        self.calls.append(("prompt_tokens", text, special))
        return self.tokenize(text, add_bos=True)

    def generate(
        self, prompt_tokens: list[int], *, max_tokens: int, stop: Sequence[str] = ()
    ) -> GenerationResult:
        """The next scripted reply, cut at the first stop string or after max_tokens chars."""
        self.calls.append(("generate", len(prompt_tokens), max_tokens, tuple(stop)))
        text = self.replies.pop(0) if self.replies else ""
        cut = find_stop(text[:max_tokens], stop)
        if cut != -1:
            return GenerationResult(text[:cut], len(prompt_tokens), cut, "stop")
        reason = "max_tokens" if len(text) > max_tokens else "eog"
        return GenerationResult(
            text[:max_tokens], len(prompt_tokens), min(len(text), max_tokens), reason
        )

    # --- the batched engine's methods (BatchEngine), so a FakeBackend can be the `batch` ---
    def generate_many(self, requests: Sequence[GenRequest]) -> list[GenerationResult | str]:
        """generate() for each request in order; a prompt of `too_long` or more tokens is a
        per-item error, as BatchEngine reports it."""
        self.calls.append(("generate_many", len(requests)))
        return [
            f"ValueError: a prompt of {len(r.tokens)} tokens does not fit"
            if len(r.tokens) >= self.too_long
            else self.generate(r.tokens, max_tokens=r.max_tokens, stop=r.stop)
            for r in requests
        ]

    def choice_logliks_many(
        self, questions: Sequence[tuple[list[int], list[list[int]]]]
    ) -> list[list[float]]:
        self.calls.append(("choice_logliks_many", len(questions)))
        return [self.choice_logliks(ctx, conts) for ctx, conts in questions]

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(chr(t) for t in tokens)

    def chat_template(self) -> str | None:
        return self.template

    def special_token_texts(self) -> dict[str, str]:
        return {"bos_token": "<s>", "eos_token": "</s>"}

    def describe(self) -> BenchFacts:
        return BenchFacts(model_type="fake 1M F16", type_k="f16", type_v="f16")


@dataclasses.dataclass
class FakeTask:
    """A task that hands out the items it was given (`given`), whatever the limit or seed."""

    name: str = "t"
    version: int = 1
    category: str = "math"
    kind: str = "generate"
    chance: float = 0.0
    given: tuple = ()

    def items(self, *, limit: int | None = None, seed: int = 0, sample: int | None = None) -> list:
        return list(self.given)
