"""A Backend without native code, for fast tests of the measuring and scoring logic."""

from __future__ import annotations

import random


class FakeBackend:
    """Counts calls; 'tokenizes' by characters; prefers continuations listed in `liked`."""

    n_vocab = 100

    def __init__(self, liked: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple] = []
        self.liked = liked

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
