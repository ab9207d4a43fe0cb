"""A Backend without native code, for fast tests of the measuring and scoring logic."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from edgeeval.engine.backend import BenchFacts, GenerationResult, find_stop
from edgeeval.engine.batch import GenRequest, OnDone
from edgeeval.engine.forcing import ThinkForce

#: In a reply scripted for budget forcing: the scripted model would end its generation here
#: (an end-of-generation token); what follows is what it writes when that is passed over.
EOG = "\x04"


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
        self,
        prompt_tokens: list[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        force: ThinkForce | None = None,
    ) -> GenerationResult:
        """The next scripted reply, cut at the first stop string or after max_tokens chars.
        With `force`, it is written character by character under engine.forcing's rule."""
        self.calls.append(("generate", len(prompt_tokens), max_tokens, tuple(stop)))
        text = self.replies.pop(0) if self.replies else ""
        if force is not None:
            return self._forced(text, len(prompt_tokens), max_tokens, stop, force)
        cut = find_stop(text[:max_tokens], stop)
        if cut != -1:
            return GenerationResult(text[:cut], len(prompt_tokens), cut, "stop")
        reason = "max_tokens" if len(text) > max_tokens else "eog"
        return GenerationResult(
            text[:max_tokens], len(prompt_tokens), min(len(text), max_tokens), reason
        )

    @staticmethod
    def _forced(
        script: str, n_prompt: int, max_tokens: int, stop: Sequence[str], force: ThinkForce
    ) -> GenerationResult:
        """One character per token, as the engines loop: when the marker and lead-in are put
        in, the scripted model skips to what its script says after its own end of thinking
        (its answer), or goes on where it was when the script never closes its thinking. An
        EOG in the script ends the generation, except in a forced answer still blank, where
        it is passed over (engine.forcing's eog_allowed)."""
        out, n, i, forced, answer_at = "", 0, 0, False, -1
        while n < max_tokens and i < len(script):
            if script[i] == EOG:
                if force.eog_allowed(out.encode(), answer_at):
                    return GenerationResult(out, n_prompt, n, "eog", forced)
                i += 1
                continue
            out, i, n = out + script[i], i + 1, n + 1
            cut = find_stop(out, stop)
            if cut != -1:
                return GenerationResult(out[:cut], n_prompt, n, "stop", forced)
            if not forced and n < max_tokens and force.due(out.encode(), n):
                forced, out = True, out + force.text
                answer_at = len(out.encode())
                after = script.find(force.close, i)
                script = script[:i] + (
                    script[after + len(force.close) :] if after != -1 else script[i:]
                )
        reason = "max_tokens" if i < len(script) else "eog"
        return GenerationResult(out, n_prompt, n, reason, forced)

    # --- the batched engine's methods (BatchEngine), so a FakeBackend can be the `batch` ---
    def generate_many(
        self, requests: Sequence[GenRequest], on_done: OnDone | None = None
    ) -> list[GenerationResult | str]:
        """generate() for each request in order; a prompt of `too_long` or more tokens is a
        per-item error, as BatchEngine reports it. `on_done(n)` after each (n so far)."""
        self.calls.append(("generate_many", len(requests)))
        out: list[GenerationResult | str] = []
        for r in requests:
            out.append(
                f"ValueError: a prompt of {len(r.tokens)} tokens does not fit"
                if len(r.tokens) >= self.too_long
                else self.generate(r.tokens, max_tokens=r.max_tokens, stop=r.stop, force=r.force)
            )
            if on_done is not None:
                on_done(len(out))
        return out

    def choice_logliks_many(
        self,
        questions: Sequence[tuple[list[int], list[list[int]]]],
        on_done: OnDone | None = None,
    ) -> list[list[float]]:
        """choice_logliks() for each question; `on_done(n)` after every two (n so far), as
        BatchEngine reports after each group of n_seq questions."""
        self.calls.append(("choice_logliks_many", len(questions)))
        out = []
        for ctx, conts in questions:
            out.append(self.choice_logliks(ctx, conts))
            if on_done is not None and (len(out) % 2 == 0 or len(out) == len(questions)):
                on_done(len(out))
        return out

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
