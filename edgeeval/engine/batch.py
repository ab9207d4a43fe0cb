"""Many sequences in one llama_decode: batched greedy generation and batched choice scoring.

`BatchEngine` opens a second llama.cpp context on a model that `LlamaBackend` already loaded
(the weights are shared; only the KV cache and compute buffers are new), with room for
`n_seq` sequences of `backend.n_ctx` tokens each: the same per-question context as the
one-at-a-time path, so a prompt that does not fit there does not fit here either.

Generation is continuous batching, as llama-server's parallel slots: every decode carries the
next token of each sequence that is generating plus as much of the waiting prompts as fits in
n_batch; when a sequence ends (end-of-generation token, stop string, token budget, full
context) its KV cells are removed (llama_memory_seq_rm) and its slot takes the next request
at once. Each sequence keeps its own state (text so far, stop-string scan position, budget);
the pick is greedy (argmax) as in LlamaBackend.generate, which this mirrors step for step,
budget forcing included (engine.forcing: a reasoning sequence still thinking when its thinking
budget is spent gets the tokens of the end-of-thinking marker and the answer lead-in queued
after its last pick, once, and no end-of-generation while its answer is blank).

Batch shape changes llama.cpp's CPU numerics slightly (matrix kernels differ between one row
and many), so batched and one-at-a-time runs can part ways where two tokens are nearly tied.
"""

from __future__ import annotations

import ctypes
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np

from edgeeval.engine.backend import GenerationResult, LlamaBackend, context_params, find_stop
from edgeeval.engine.forcing import ThinkForce, pick


@dataclass(frozen=True)
class GenRequest:
    """One greedy generation: prompt tokens, a token budget, stop strings, and budget forcing
    for a reasoning model (engine.forcing; None: none)."""

    tokens: list[int]
    max_tokens: int
    stop: tuple[str, ...] = ()
    force: ThinkForce | None = None


#: Progress inside one call: called with how many of its requests or questions are settled so
#: far (not journalled; the caller's progress display rate-limits it)
OnDone = Callable[[int], None]


class BatchGenerator(Protocol):
    def generate_many(
        self, requests: Sequence[GenRequest], on_done: OnDone | None = None
    ) -> list[GenerationResult | str]: ...


class BatchScorer(Protocol):
    def choice_logliks_many(
        self,
        questions: Sequence[tuple[list[int], list[list[int]]]],
        on_done: OnDone | None = None,
    ) -> list[list[float]]: ...


class BatchEngineLike(BatchGenerator, BatchScorer, Protocol):
    """What the accuracy phase asks of a batch engine: BatchEngine, or a test's fake."""


#: Sequences per decode in the accuracy phase when --eval-batch is not given, by backend
#: (engine.host.backend_name), from benchmarks/batch_eval_bench.py on HumanEval-164 (figures in
#: benchmarks/tools/README.md): CPU on 2 cores (Qwen2.5-Coder-0.5B), CUDA on an H200
#: (SmolLM2-135M: B = 8 ran 1195 tok/s, B = 32 717). Backends never measured (Metal, Vulkan)
#: take the CPU's value.
DEFAULT_EVAL_BATCH = {"CPU": 8, "CUDA": 8}


def default_eval_batch(backend_name: str) -> int:
    """The measured default batch for a backend ("CPU", "CUDA", "Metal", ...).

    >>> default_eval_batch("CPU"), default_eval_batch("Vulkan")
    (8, 8)
    """
    return DEFAULT_EVAL_BATCH.get(backend_name, DEFAULT_EVAL_BATCH["CPU"])


def resolve_eval_batch(requested: int, n_gpu_layers: int) -> int:
    """`requested` when set (> 0), else the default for where the layers run: this build's GPU
    backend when any layer is offloaded, the CPU otherwise."""
    if requested > 0:
        return requested
    if n_gpu_layers <= 0:
        return default_eval_batch("CPU")
    from edgeeval.engine.backend import library_info

    return default_eval_batch(library_info().backend)


@dataclass
class _Slot:
    """The state of one sequence: where it is in its prompt and what it has written."""

    index: int
    n_prompt: int
    budget: int
    reason: str
    stop: tuple[str, ...]
    pending: list[int]  # tokens still to decode: the rest of the prompt, or the last pick
    pos: int  # position of pending[0]
    out: bytearray = field(default_factory=bytearray)
    n_gen: int = 0
    checked: int = 0
    force: ThinkForce | None = None
    forced: bool = False
    answer_at: int = -1  # byte of `out` where a forced answer starts (-1: not forced)


@dataclass(frozen=True)
class _Entry:
    """One token of a batch; `targets` are the tokens whose log-probability its logits give
    (MC scoring), `sample` asks for its logits to pick the next token (generation)."""

    seq: int
    token: int
    pos: int
    targets: tuple[int, ...] = ()
    sample: bool = False


def _log_probs(row: np.ndarray, targets: Sequence[int]) -> list[float]:
    """log softmax(row)[t] for each target (float64, as LlamaBackend's scoring)."""
    row = row.astype(np.float64)
    peak = row.max()
    norm = peak + np.log(np.exp(row - peak).sum())
    return [float(row[t] - norm) for t in targets]


#: A common prompt prefix shorter than this is decoded with each prompt, not shared: sharing
#: costs a copy of the KV buffer per sequence when each sequence has its own.
MIN_SHARED_PREFIX = 8


def shared_prefix(prompts: Sequence[Sequence[int]]) -> list[int]:
    """The tokens every prompt starts with, short of each prompt's last token (whose logits
    every prompt needs for itself); empty for fewer than two prompts or a prefix under
    MIN_SHARED_PREFIX tokens.

    >>> shared_prefix([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 11]])
    [1, 2, 3, 4, 5, 6, 7, 8, 9]
    >>> shared_prefix([list(range(9)), list(range(9))])  # identical: keep the last token
    [0, 1, 2, 3, 4, 5, 6, 7]
    >>> shared_prefix([[1, 2, 3], [1, 2, 4]])
    []
    """
    if len(prompts) < 2 or any(not p for p in prompts):
        return []
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for other in prompts[1:]:
        n = next((i for i in range(n) if other[i] != first[i]), n)
    return list(first[:n]) if n >= MIN_SHARED_PREFIX else []


class BatchEngine:
    """A context for `n_seq` parallel sequences on `backend`'s loaded model.

    The prompt prefix that all requests of one call share (a few-shot block, a chat template's
    system turn) is decoded once and copied to every sequence (llama_memory_seq_cp); a finished
    sequence is cut back to it, not emptied, so the next prompt in its slot decodes only its
    own tokens. Decoding the prefix apart changes the batch shapes, so the numbers can differ
    from one-at-a-time decoding as batching itself does (see the module docstring)."""

    def __init__(self, backend: LlamaBackend, n_seq: int, *, unified: bool = False) -> None:
        if n_seq < 1:
            raise ValueError(f"a batch needs at least one sequence, got {n_seq}")
        lib = backend._lib
        self._lib, self.backend, self.n_seq = lib, backend, n_seq
        self.n_ctx_seq = backend.n_ctx
        params = context_params(lib, backend.options)  # the speed tests' own, widened
        params.n_seq_max = n_seq
        params.n_ctx = n_seq * backend.n_ctx
        params.kv_unified = self.unified = unified
        params.n_batch = max(int(params.n_batch), n_seq)
        self.n_batch = int(params.n_batch)
        self.ctx = lib.llama_init_from_model(backend.model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context for {n_seq} sequences")
        self.mem = lib.llama_get_memory(self.ctx)
        self._keep = 0  # length of the prefix shared by every sequence (see _share_prefix)
        self._batch = lib.llama_batch_init(self.n_batch, 0, 1)
        self._vocab = backend._vocab()
        self._is_eog = partial(lib.llama_vocab_is_eog, self._vocab)
        if int(lib.llama_n_ctx_seq(self.ctx)) < self.n_ctx_seq:
            self.close()
            raise RuntimeError(f"llama.cpp gave under {self.n_ctx_seq} cells per sequence")

    def close(self) -> None:
        """Free the context and its KV cache (the model stays loaded)."""
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if self.ctx:
            self._lib.llama_free(self.ctx)
            self.ctx = None

    def set_threads(self, n_threads: int) -> None:
        self._lib.llama_set_n_threads(self.ctx, n_threads, n_threads)

    # --- decoding a list of entries ---
    def _decode(self, entries: Sequence[_Entry]) -> list[Any]:
        """Decode `entries` in n_batch chunks. Returns, per entry, the log-probabilities of
        its targets, a copy of its logits when `sample`, or None."""
        out: list[Any] = []
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start : start + self.n_batch]
            batch = self._batch
            batch.n_tokens = len(chunk)
            for i, e in enumerate(chunk):
                batch.token[i], batch.pos[i] = e.token, e.pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = e.seq
                batch.logits[i] = bool(e.targets) or e.sample
            code = self._lib.llama_decode(self.ctx, batch)
            if code != 0:
                raise RuntimeError(f"llama_decode failed with code {code}")
            out.extend(self._read(i, e) for i, e in enumerate(chunk))
        return out

    def _read(self, i: int, entry: _Entry) -> Any:
        if not (entry.targets or entry.sample):
            return None
        pointer = self._lib.llama_get_logits_ith(self.ctx, i)
        row = np.ctypeslib.as_array(
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.backend.n_vocab,)
        )
        return row.copy() if entry.sample else _log_probs(row, entry.targets)

    def _clear(self) -> None:
        self._lib.llama_memory_clear(self.mem, False)

    # --- generation ---
    def generate_many(
        self, requests: Sequence[GenRequest], on_done: OnDone | None = None
    ) -> list[GenerationResult | str]:
        """Greedy continuations of every request, at most n_seq at a time (continuous
        batching). Returns one entry per request, in order: the GenerationResult, or the
        reason it could not run ("ValueError: a prompt of ...", a failed decode) as a string;
        a failure touches only the sequences in the decode that failed. `on_done(n)` is
        called whenever the number of settled requests grows (n of them so far)."""
        results: list[GenerationResult | str | None] = [None] * len(requests)
        waiting = deque(range(len(requests)))
        slots: dict[int, _Slot] = {}
        free = list(range(self.n_seq))
        fits = [r.tokens for r in requests if 0 < len(r.tokens) < self.n_ctx_seq]
        self._keep = self._share_prefix(shared_prefix(fits))
        settled = 0
        while waiting or slots:
            if on_done is not None:  # settled at admission, by a failed decode or by the last
                now = sum(r is not None for r in results)
                if now > settled:
                    settled = now
                    on_done(settled)
            while free and waiting:
                index = waiting.popleft()
                slot = self._admit(index, requests[index], results)
                if slot is not None:  # the lowest free id: llama.cpp splits a batch of
                    seq = min(free)  # per-sequence KV streams at gaps between seq ids
                    free.remove(seq)
                    slots[seq] = slot
            if not slots:
                break
            if not waiting and not self.unified:
                self._compact(slots, free)
            entries = self._schedule(slots)
            try:
                rows = self._decode(entries)
            except RuntimeError as exc:
                for seq in {e.seq for e in entries}:
                    results[slots[seq].index] = f"RuntimeError: {exc}"
                    self._release(seq, slots, free)
                continue
            for entry, row in zip(entries, rows, strict=True):
                if entry.sample:
                    done = self._advance(slots[entry.seq], row)
                    if done is not None:
                        results[slots[entry.seq].index] = done
                        self._release(entry.seq, slots, free)
        if on_done is not None and len(requests) > settled:
            on_done(len(requests))
        return [r if r is not None else "RuntimeError: not generated" for r in results]

    def _admit(
        self, index: int, request: GenRequest, results: list[GenerationResult | str | None]
    ) -> _Slot | None:
        """A slot for `request`, or None when it is settled without decoding (a prompt that
        does not fit: the same ValueError text as LlamaBackend.generate; no budget)."""
        n_prompt = len(request.tokens)
        if not 0 < n_prompt < self.n_ctx_seq:
            results[index] = (
                f"ValueError: a prompt of {n_prompt} tokens does not fit n_ctx={self.n_ctx_seq}"
            )
            return None
        budget = min(request.max_tokens, self.n_ctx_seq - n_prompt)
        reason = "max_tokens" if budget == request.max_tokens else "n_ctx"
        if budget <= 0:
            results[index] = GenerationResult("", n_prompt, 0, reason)
            return None
        keep = self._keep  # every prompt that fits starts with the shared prefix
        return _Slot(
            index,
            n_prompt,
            budget,
            reason,
            request.stop,
            list(request.tokens[keep:]),
            keep,
            force=request.force,
        )

    def _schedule(self, slots: dict[int, _Slot]) -> list[_Entry]:
        """The next decode: one token for each generating sequence, then prompt tokens of the
        sequences still prefilling, up to n_batch (the last prompt token asks for logits)."""
        entries: list[_Entry] = []
        generating = [s for s in sorted(slots) if slots[s].n_gen > 0]
        prefilling = [s for s in sorted(slots) if slots[s].n_gen == 0]
        for seq in generating + prefilling:
            slot = slots[seq]
            room = self.n_batch - len(entries)
            if room <= 0:
                break
            take = slot.pending[:room]
            finishes = len(take) == len(slot.pending)
            for k, token in enumerate(take):
                last = finishes and k == len(take) - 1
                entries.append(_Entry(seq, token, slot.pos + k, sample=last))
            slot.pending = slot.pending[len(take) :]
            slot.pos += len(take)
        # in sequence order: llama.cpp groups consecutive sequence ids into one micro-batch
        entries.sort(key=lambda e: e.seq)  # stable: each sequence's positions stay in order
        return entries

    def _advance(self, slot: _Slot, logits: np.ndarray) -> GenerationResult | None:
        """Take the greedy pick from `logits` (end-of-generation passed over while a forced
        answer is blank); returns the result when the sequence is done."""
        force = slot.force
        allow_eog = not force or force.eog_allowed(slot.out, slot.answer_at)
        token = pick(logits, self._is_eog, allow_eog)
        if self._is_eog(token):
            return self._result(slot, "eog")
        slot.out += self.backend._piece(self._vocab, token, special=False)
        slot.n_gen += 1
        text = slot.out.decode("utf-8", "ignore")  # a split multi-byte char waits a token
        cut = find_stop(text, slot.stop, slot.checked)
        if cut != -1:
            return GenerationResult(text[:cut], slot.n_prompt, slot.n_gen, "stop", slot.forced)
        slot.checked = len(text)
        slot.pending = [token]
        if force and not slot.forced and force.due(slot.out, slot.n_gen):
            room = self.n_ctx_seq - slot.n_prompt - len(force.tokens)  # n_gen's cap with it
            if slot.n_gen < min(slot.budget, room):  # as LlamaBackend.generate
                slot.forced = True
                slot.pending = [token, *force.tokens]
                slot.out += force.text.encode("utf-8")
                slot.checked = len(slot.out.decode("utf-8", "ignore"))
                slot.answer_at = len(slot.out)
                if room < slot.budget:
                    slot.budget, slot.reason = room, "n_ctx"
        if slot.n_gen >= slot.budget:
            return self._result(slot, slot.reason)
        return None

    @staticmethod
    def _result(slot: _Slot, reason: str) -> GenerationResult:
        return GenerationResult(
            slot.out.decode("utf-8", "replace"), slot.n_prompt, slot.n_gen, reason, slot.forced
        )

    def _release(self, seq: int, slots: dict[int, _Slot], free: list[int]) -> None:
        """Cut `seq` back to the shared prefix and give its slot to the next request."""
        self._lib.llama_memory_seq_rm(self.mem, seq, self._keep, -1)
        del slots[seq]
        free.append(seq)

    def _compact(self, slots: dict[int, _Slot], free: list[int]) -> None:
        """Move the highest running sequences into the lowest free ids, so the running ids
        stay 0..k-1. With one KV stream per sequence, llama.cpp puts only sequences with
        consecutive ids into one micro-batch, so a gap (a finished sequence with no request
        left to take its slot) would split every decode in the tail of a run into several.
        A move copies the sequence's KV stream (llama_memory_seq_cp) once."""
        while free and max(slots) > min(free):
            high, low = max(slots), min(free)
            self._lib.llama_memory_seq_cp(self.mem, high, low, -1, -1)
            self._lib.llama_memory_seq_rm(self.mem, high, self._keep, -1)
            slots[low] = slots.pop(high)
            free.remove(low)
            free.append(high)

    def _share_prefix(self, prefix: list[int]) -> int:
        """Empty the cache, decode `prefix` once in sequence 0 and copy it to every other
        sequence. Returns its length: the position each sequence is cut back to."""
        self._clear()
        if prefix:
            self._decode([_Entry(0, token, pos) for pos, token in enumerate(prefix)])
            for seq in range(1, self.n_seq):
                self._lib.llama_memory_seq_cp(self.mem, 0, seq, -1, -1)
        return len(prefix)

    # --- multiple choice ---
    def choice_logliks_many(
        self,
        questions: Sequence[tuple[list[int], list[list[int]]]],
        on_done: OnDone | None = None,
    ) -> list[list[float]]:
        """LlamaBackend.choice_logliks for many (context, continuations) questions: up to
        n_seq questions share each decode, one sequence each. Every context is decoded once;
        the first tokens of all its continuations are scored from its last row; then choice
        j of every question is decoded in one batch and cut back to the context again.
        Returns, per question, the summed log-probability of each continuation; `on_done(n)`
        after each group of n_seq questions (n scored so far)."""
        out: list[list[float]] = []
        self._check_fit(questions)
        self._keep = self._share_prefix(shared_prefix([context for context, _ in questions]))
        for start in range(0, len(questions), self.n_seq):
            out.extend(self._score_group(questions[start : start + self.n_seq]))
            if on_done is not None:
                on_done(len(out))
        return out

    def _check_fit(self, questions: Sequence[tuple[list[int], list[list[int]]]]) -> None:
        for context, conts in questions:
            need = len(context) + max((len(c) for c in conts), default=0) - 1
            if not context or need > self.n_ctx_seq:
                raise ValueError(f"a question of {need} tokens does not fit n_ctx={self.n_ctx_seq}")

    def _score_group(self, group: Sequence[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        """Score up to n_seq questions, one sequence each, on top of the shared prefix; every
        sequence is cut back to that prefix afterwards."""
        keep = self._keep
        entries = []
        for seq, (context, conts) in enumerate(group):
            firsts = tuple(c[0] for c in conts if c)
            for pos in range(keep, len(context)):
                last = pos == len(context) - 1
                entries.append(_Entry(seq, context[pos], pos, targets=firsts if last else ()))
        heads = {e.seq: r for e, r in zip(entries, self._decode(entries), strict=True) if r}
        sums = [[0.0] * len(conts) for _, conts in group]
        for seq, (_, conts) in enumerate(group):
            nonempty = [j for j, c in enumerate(conts) if c]
            for j, value in zip(nonempty, heads.get(seq, []), strict=True):
                sums[seq][j] = value
        for j in range(max(len(conts) for _, conts in group)):
            self._score_choice(group, j, sums)
        for seq in range(len(group)):
            self._lib.llama_memory_seq_rm(self.mem, seq, keep, -1)
        return sums

    def _score_choice(
        self, group: Sequence[tuple[list[int], list[list[int]]]], j: int, sums: list[list[float]]
    ) -> None:
        """Add the log-probabilities of tokens 2.. of choice j of every question in `group`."""
        entries, owners = [], []
        for seq, (context, conts) in enumerate(group):
            if j >= len(conts) or len(conts[j]) < 2:
                continue
            cont, n = conts[j], len(context)
            for k, token in enumerate(cont[:-1]):
                entries.append(_Entry(seq, token, n + k, targets=(cont[k + 1],)))
                owners.append(seq)
        if not entries:
            return
        for seq, row in zip(owners, self._decode(entries), strict=True):
            sums[seq][j] += row[0]
        for seq, (context, _) in enumerate(group):
            self._lib.llama_memory_seq_rm(self.mem, seq, len(context), -1)
