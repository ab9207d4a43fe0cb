"""The one module that imports llama_cpp.

`LlamaBackend` wraps a loaded model and context and offers exactly what the measuring code
needs: llama-bench style prompt/generation loops on synthetic tokens, and per-position
log-probabilities for scoring choices with a shared prefix. `FakeBackend` in tests implements
the same methods without native code.
"""

from __future__ import annotations

import ctypes
import random
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    n_vocab: int

    def clear(self) -> None: ...
    def bench_prompt(self, n_tokens: int, rng: random.Random, *, first: bool = True) -> None: ...
    def bench_gen(self, n_tokens: int, rng: random.Random) -> None: ...
    def set_threads(self, n_threads: int) -> None: ...
    def tokenize(self, text: str, *, add_bos: bool) -> list[int]: ...
    def choice_logliks(self, context: list[int], continuations: list[list[int]]) -> list[float]: ...
    def first_token(self, prompt: str) -> int: ...


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int = 2048
    n_threads: int = 2
    n_batch: int = 512
    n_ubatch: int = 512
    n_gpu_layers: int = 0
    flash_attn: bool = False
    use_mmap: bool = True
    use_mlock: bool = False
    seed: int = 0


def library_info() -> dict[str, Any]:
    """Version and build facts of the llama.cpp inside llama-cpp-python."""
    import llama_cpp

    system_info = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    return {
        "llama_cpp_python_version": getattr(llama_cpp, "__version__", "unknown"),
        "system_info": system_info,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
    }


def _log_softmax_at(row: np.ndarray, token: int) -> float:
    row = row.astype(np.float64)
    peak = row.max()
    return float(row[token] - peak - np.log(np.exp(row - peak).sum()))


class LlamaBackend:
    """A llama.cpp model + context, driven through the C API for tight timing loops."""

    def __init__(self, path: str, options: LoadOptions) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=path, n_ctx=options.n_ctx, n_batch=options.n_batch,
            n_ubatch=options.n_ubatch, n_threads=options.n_threads,
            n_threads_batch=options.n_threads, n_gpu_layers=options.n_gpu_layers,
            flash_attn=options.flash_attn, use_mmap=options.use_mmap,
            use_mlock=options.use_mlock, seed=options.seed,
            logits_all=False, verbose=False,
        )
        self.options = options
        self.ctx = self.llm._ctx.ctx
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        vocab = llama_cpp.llama_model_get_vocab(self.llm._model.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(vocab))
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.ctx))
        self._batch = llama_cpp.llama_batch_init(options.n_batch, 0, 1)

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        self.llm.close()

    def model_facts(self) -> dict[str, Any]:
        model = self.llm._model.model
        return {"n_ctx_train": int(self._lib.llama_model_n_ctx_train(model)),
                "n_params": int(self._lib.llama_model_n_params(model)),
                "model_size_bytes": int(self._lib.llama_model_size(model))}

    def set_threads(self, n_threads: int) -> None:
        """Change the thread count without reloading (llama-bench does the same per test)."""
        self._lib.llama_set_n_threads(self.ctx, n_threads, n_threads)

    def first_token(self, prompt: str) -> int:
        """Tokenize `prompt`, decode it and pick the next token greedily: one TTFT request."""
        tokens = self.tokenize(prompt, add_bos=True)
        return int(np.argmax(self._decode_logits(tokens, 0, want_all=False)[-1]))

    # --- llama-bench style loops (synthetic tokens; callers time them) ---
    def clear(self) -> None:
        self._lib.llama_memory_clear(self.mem, False)

    def _decode_one_batch(self, tokens: list[int]) -> None:
        array = (self._lib.llama_token * len(tokens))(*tokens)
        result = self._lib.llama_decode(self.ctx, self._lib.llama_batch_get_one(array, len(tokens)))
        if result != 0:
            raise RuntimeError(f"llama_decode failed with code {result}")

    def bench_prompt(self, n_tokens: int, rng: random.Random, *, first: bool = True) -> None:
        """Decode `n_tokens` random tokens in n_batch chunks, as llama-bench's test_prompt."""
        done = 0
        while done < n_tokens:
            size = min(n_tokens - done, self.options.n_batch)
            chunk = [rng.randrange(self.n_vocab) for _ in range(size)]
            if done == 0 and first and self.add_bos:
                chunk[0] = self.bos
            self._decode_one_batch(chunk)
            done += size
        self._lib.llama_synchronize(self.ctx)

    def bench_gen(self, n_tokens: int, rng: random.Random) -> None:
        """`n_tokens` single-token decodes, as llama-bench's test_gen."""
        token = self.bos if self.add_bos else rng.randrange(self.n_vocab)
        for _ in range(n_tokens):
            self._decode_one_batch([token])
            self._lib.llama_synchronize(self.ctx)
            token = rng.randrange(self.n_vocab)

    # --- scoring ---
    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False))

    def _decode_logits(self, tokens: list[int], pos0: int, *, want_all: bool) -> np.ndarray:
        """Decode tokens at positions pos0.. in sequence 0; return logits rows requested."""
        rows = []
        for start in range(0, len(tokens), self.options.n_batch):
            chunk = tokens[start:start + self.options.n_batch]
            last_chunk = start + len(chunk) == len(tokens)
            batch = self._batch
            batch.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = pos0 + start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = want_all or (last_chunk and i == len(chunk) - 1)
            result = self._lib.llama_decode(self.ctx, batch)
            if result != 0:
                raise RuntimeError(f"llama_decode failed with code {result}")
            n_out = len(chunk) if want_all else int(last_chunk)
            if n_out:
                pointer = self._lib.llama_get_logits(self.ctx)
                flat = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                                             shape=(n_out * self.n_vocab,))
                rows.append(flat.reshape(n_out, self.n_vocab).copy())
        return np.concatenate(rows) if rows else np.zeros((0, self.n_vocab), np.float32)

    def choice_logliks(self, context: list[int], continuations: list[list[int]]) -> list[float]:
        """Sum of log p(continuation tokens | context) for each continuation.

        The context is decoded once; for each continuation the KV cache is cut back to the
        context and only the continuation's tokens are decoded. The logits at position i
        predict token i+1, so the first continuation token is scored with the context's last
        row and the continuation's own last token never needs decoding.
        """
        self.clear()
        last = self._decode_logits(context, 0, want_all=False)[-1]
        n = len(context)
        out = []
        for cont in continuations:
            self._lib.llama_memory_seq_rm(self.mem, 0, n, -1)
            rows = [last]
            if len(cont) > 1:
                rows.extend(self._decode_logits(cont[:-1], n, want_all=True))
            pairs = zip(rows, cont, strict=True)
            out.append(sum(_log_softmax_at(row, tok) for row, tok in pairs))
        return out

    def full_logliks(self, context: list[int], continuations: list[list[int]]) -> list[float]:
        """Same result as choice_logliks, re-evaluating context+continuation each time."""
        out = []
        for cont in continuations:
            self.clear()
            tokens = context + cont
            rows = self._decode_logits(tokens[:-1], 0, want_all=True)
            out.append(sum(_log_softmax_at(rows[len(context) - 1 + i], tok)
                           for i, tok in enumerate(cont)))
        return out
