"""The one module that imports llama_cpp.

`LlamaBackend` wraps a loaded model and context and offers exactly what the measuring code
needs: llama-bench style prompt/generation loops on synthetic tokens, and per-position
log-probabilities for scoring choices with a shared prefix. `FakeBackend` in tests implements
the same methods without native code.
"""

from __future__ import annotations

import ctypes
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, NamedTuple, Protocol

import numpy as np

from edgeeval.engine.forcing import ThinkForce, pick
from edgeeval.engine.host import LibraryInfo
from edgeeval.records import clamp_ubatch


class Backend(Protocol):
    n_vocab: int

    def clear(self) -> None: ...
    def bench_prompt(self, n_tokens: int, rng: random.Random, *, first: bool = True) -> None: ...
    def bench_gen(self, n_tokens: int, rng: random.Random) -> None: ...
    def set_threads(self, n_threads: int) -> None: ...
    def tokenize(self, text: str, *, add_bos: bool) -> list[int]: ...
    def choice_logliks(self, context: list[int], continuations: list[list[int]]) -> list[float]: ...
    def first_token(self, prompt: str) -> int: ...
    def prompt_tokens(self, text: str, *, special: bool) -> list[int]: ...
    def generate(
        self,
        prompt_tokens: list[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        force: ThinkForce | None = None,
    ) -> GenerationResult: ...
    def detokenize(self, tokens: list[int]) -> str: ...
    def chat_template(self) -> str | None: ...
    def special_token_texts(self) -> dict[str, str]: ...
    def describe(self) -> BenchFacts: ...


@dataclass(frozen=True)
class BenchFacts:
    """What llama-bench writes about a loaded model and its context: the model as
    llama_model_desc names it ("qwen2 0.5B Q4_K - Medium") and the KV cache's K and V types
    as ggml_type_name gives them ("f16")."""

    model_type: str
    type_k: str
    type_v: str


@dataclass(frozen=True)
class ModelFacts:
    """What llama.cpp reports about a loaded model: its trained context length, its parameter
    count and the bytes of its tensors."""

    n_ctx_train: int
    n_params: int
    model_size_bytes: int


@dataclass(frozen=True)
class LoadOptions:
    """How a model is loaded. n_ubatch above n_batch is lowered to it (what llama.cpp uses).

    flash_attn is True (on), False (off) or "auto" (llama.cpp decides per device); type_k and
    type_v are the KV cache's ggml type names (llama-bench's -ctk/-ctv); swa_full False gives
    sliding-window layers a cache of their window only (llama-server's default)."""

    n_ctx: int = 2048
    n_threads: int = 2
    n_batch: int = 512
    n_ubatch: int = 512
    n_gpu_layers: int = 0
    flash_attn: bool | str = False
    use_mmap: bool = True
    use_mlock: bool = False
    type_k: str = "f16"
    type_v: str = "f16"
    swa_full: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_ubatch", clamp_ubatch(self.n_ubatch, self.n_batch))

    @property
    def load_key(self) -> tuple[Any, ...]:
        """Everything that needs a new load to change: all options but the thread count
        (set on a loaded context with set_threads)."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "n_threads")


@dataclass(frozen=True)
class GenerationResult:
    """A greedy continuation. `text` excludes the end-of-generation token and the stop string;
    `stop_reason` is "eog", "stop", "max_tokens" or "n_ctx" (the context window was full);
    `thinking_forced`: the end-of-thinking marker and the answer lead-in were put in
    (engine.forcing); their text is in `text`, their tokens are not in n_gen_tokens."""

    text: str
    n_prompt_tokens: int
    n_gen_tokens: int
    stop_reason: str
    thinking_forced: bool = False


def find_stop(text: str, stops: Sequence[str], since: int = 0) -> int:
    """Index in `text` of the earliest stop string that ends at or after `since`, or -1.

    >>> find_stop("x = 1\\ndef g():", ["\\ndef ", "\\nclass "])
    5
    """
    hits = [
        i for stop in stops if stop and (i := text.find(stop, max(0, since - len(stop) + 1))) != -1
    ]
    return min(hits, default=-1)


def library_info() -> LibraryInfo:
    """Version and build facts of the llama.cpp inside llama-cpp-python."""
    import llama_cpp

    system_info = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    return LibraryInfo(
        llama_cpp_python_version=str(getattr(llama_cpp, "__version__", "unknown")),
        system_info=system_info,
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        devices=tuple(device_info()),
        build_commit=ggml_commit(),
        backends=backend_registries(),
    )


def _ggml_fn(name: str, restype: Any, *argtypes: Any) -> Any:
    """A ggml function of the bundled library (libllama links libggml, so its symbols resolve
    through libllama's handle); AttributeError when this build lacks it."""
    import llama_cpp

    return ctypes.CFUNCTYPE(restype, *argtypes)((name, llama_cpp.llama_cpp._lib))


def ggml_commit() -> str:
    """The llama.cpp (ggml) commit the bundled library was built from, as ggml_commit()
    reports it ("0c1e570-dirty"); "unknown", as llama.cpp writes it, when the build lacks it."""
    try:
        raw = _ggml_fn("ggml_commit", ctypes.c_char_p)()
    except (AttributeError, OSError):
        return "unknown"
    return (raw or b"unknown").decode("utf-8", "replace")


def backend_registries() -> tuple[str, ...]:
    """ggml's backend registries in registration order ("CPU", "CUDA", "BLAS", ...): what
    llama-bench's `backends` field lists (all but CPU); () when the API is missing."""
    ptr, size = ctypes.c_void_p, ctypes.c_size_t
    try:
        count = _ggml_fn("ggml_backend_reg_count", size)()
        get = _ggml_fn("ggml_backend_reg_get", ptr, size)
        name = _ggml_fn("ggml_backend_reg_name", ctypes.c_char_p, ptr)
    except (AttributeError, OSError):
        return ()
    return tuple((name(get(i)) or b"").decode("utf-8", "replace") for i in range(count))


def ggml_type_name(type_id: int) -> str:
    """ggml's name of a tensor type id: 1 -> "f16", 8 -> "q8_0"."""
    return (_ggml_fn("ggml_type_name", ctypes.c_char_p, ctypes.c_int)(type_id) or b"?").decode()


#: ggml_backend_dev_type values (ggml-backend.h).
_DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "iGPU", 3: "accelerator"}


def device_info() -> list[dict[str, Any]]:
    """ggml's devices: name, description, type, backend (CPU, CUDA, Metal, Vulkan, ...) and
    memory free/total in bytes, through ggml's backend device API; [] when it is missing."""
    import ctypes

    import llama_cpp

    lib = llama_cpp.llama_cpp._lib
    ptr, size = ctypes.c_void_p, ctypes.c_size_t

    def fn(name: str, restype: Any, *argtypes: Any) -> Any:
        return ctypes.CFUNCTYPE(restype, *argtypes)((name, lib))

    try:
        count = fn("ggml_backend_dev_count", size)()
        get = fn("ggml_backend_dev_get", ptr, size)
        text = {
            k: fn(f"ggml_backend_dev_{k}", ctypes.c_char_p, ptr) for k in ("name", "description")
        }
        kind = fn("ggml_backend_dev_type", ctypes.c_int, ptr)
        memory = fn(
            "ggml_backend_dev_memory", None, ptr, ctypes.POINTER(size), ctypes.POINTER(size)
        )
        reg = fn("ggml_backend_dev_backend_reg", ptr, ptr)
        reg_name = fn("ggml_backend_reg_name", ctypes.c_char_p, ptr)
    except (AttributeError, OSError):
        return []
    devices = []
    for index in range(count):
        dev = get(index)
        free, total = size(), size()
        memory(dev, ctypes.byref(free), ctypes.byref(total))
        devices.append(
            {
                "name": (text["name"](dev) or b"").decode("utf-8", "replace"),
                "description": (text["description"](dev) or b"").decode("utf-8", "replace"),
                "type": _DEVICE_TYPES.get(kind(dev), "unknown"),
                "backend": (reg_name(reg(dev)) or b"").decode("utf-8", "replace"),
                "memory_free_bytes": int(free.value),
                "memory_total_bytes": int(total.value),
            }
        )
    return devices


def _log_softmax_at(row: np.ndarray, token: int) -> float:
    row = row.astype(np.float64)
    peak = row.max()
    return float(row[token] - peak - np.log(np.exp(row - peak).sum()))


_library_ready = False


def _init_library(llama_cpp: Any) -> None:
    """llama_backend_init once per process, and llama.cpp's log kept to errors (llama-cpp-
    python routes it to the "llama-cpp-python" logger)."""
    global _library_ready
    if not _library_ready:
        llama_cpp.llama_backend_init()
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        _library_ready = True


def _model_params(llama_cpp: Any, options: LoadOptions) -> Any:
    """llama_model_params for `options`, set as llama_cpp.Llama sets them."""
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0x7FFFFFFF if options.n_gpu_layers == -1 else options.n_gpu_layers
    modes = {
        (True, True): llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK,
        (False, True): llama_cpp.LLAMA_LOAD_MODE_MLOCK,
        (True, False): llama_cpp.LLAMA_LOAD_MODE_MMAP,
        (False, False): llama_cpp.LLAMA_LOAD_MODE_NONE,
    }
    params.load_mode = modes[(options.use_mmap, options.use_mlock)]
    return params


def llama_bench_load_facts(options: LoadOptions) -> dict[str, Any]:
    """How `options` loads a model, in llama-bench's field names and spellings, read from the
    model and context params edgeeval passes to llama.cpp (the values the speed exports write
    for knobs edgeeval leaves at llama.cpp's defaults; tests check the two agree)."""
    import llama_cpp

    model, ctx = _model_params(llama_cpp, options), context_params(llama_cpp, options)

    def named(prefix: str, value: int) -> str:
        names = {
            int(v): k[len(prefix) :].lower()
            for k, v in vars(llama_cpp).items()
            if k.startswith(prefix) and isinstance(v, int)
        }
        return names.get(int(value), str(value))

    load_mode = named("LLAMA_LOAD_MODE_", model.load_mode)
    return {
        "split_mode": named("LLAMA_SPLIT_MODE_", model.split_mode),
        "main_gpu": int(model.main_gpu),
        "load_mode": {"mmap_mlock": "mmap+mlock", "direct_io": "dio"}.get(load_mode, load_mode),
        "lazy_mode": named("LLAMA_LAZY_MODE_", model.lazy_mode),
        "no_host": bool(model.no_host),
        "repack": bool(model.use_extra_bufts),
        "no_kv_offload": not ctx.offload_kqv,
        "embeddings": bool(ctx.embeddings),
        "no_op_offload": int(not ctx.op_offload),
        "flash_attn": int(ctx.flash_attn_type),
        "type_k": ggml_type_name(int(ctx.type_k)),
        "type_v": ggml_type_name(int(ctx.type_v)),
    }


def context_params(llama_cpp: Any, options: LoadOptions) -> Any:
    """llama_context_params for `options`, with the values llama_cpp.Llama (0.3.x) gives
    the fields it sets, so numbers stay comparable with runs made through it."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = options.n_ctx
    params.n_batch = min(options.n_ctx, options.n_batch)
    params.n_ubatch = clamp_ubatch(options.n_ubatch, params.n_batch)
    params.n_threads = params.n_threads_batch = options.n_threads
    params.flash_attn_type = {
        True: llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        False: llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    }[options.flash_attn]
    params.type_k, params.type_v = kv_type_id(options.type_k), kv_type_id(options.type_v)
    params.swa_full = options.swa_full
    params.yarn_attn_factor, params.yarn_beta_fast, params.yarn_beta_slow = 1.0, 32.0, 1.0
    params.no_perf = False
    return params


class LlamaBackend:
    """A llama.cpp model + context, driven through the C API for tight timing loops."""

    def __init__(self, path: str, options: LoadOptions) -> None:
        """Load the model and make a context, through llama.cpp's C API.

        Not through llama_cpp.Llama: its constructor compiles every chat template in the
        GGUF's metadata with Jinja, so a template with a syntax error or deep nesting would
        stop the model from loading. edgeeval renders templates itself, in a sandbox
        (edgeeval.sandbox.template), and a refused template only changes the prompt format.
        """
        import llama_cpp

        self._lib = llama_cpp
        _init_library(llama_cpp)
        self.options = options
        self.model = llama_cpp.llama_model_load_from_file(
            path.encode("utf-8"), _model_params(llama_cpp, options)
        )
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.ctx = llama_cpp.llama_init_from_model(self.model, context_params(llama_cpp, options))
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            self.model = None
            raise RuntimeError(f"llama.cpp could not make a context for {path}")
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        vocab = self._vocab()
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(vocab))
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.ctx))
        self._batch = llama_cpp.llama_batch_init(options.n_batch, 0, 1)

    def close(self) -> None:
        """Free the batch, the context and the model (context first); safe to call twice."""
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if self.ctx is not None:
            self._lib.llama_free(self.ctx)
            self.ctx = None
        if self.model is not None:
            self._lib.llama_model_free(self.model)
            self.model = None

    def model_facts(self) -> ModelFacts:
        model = self.model
        return ModelFacts(
            n_ctx_train=int(self._lib.llama_model_n_ctx_train(model)),
            n_params=int(self._lib.llama_model_n_params(model)),
            model_size_bytes=int(self._lib.llama_model_size(model)),
        )

    def describe(self) -> BenchFacts:
        """llama-bench's facts of this load: llama_model_desc, and the K and V cache types of
        the context (made from the same `context_params` as this one)."""
        buf = ctypes.create_string_buffer(128)
        self._lib.llama_model_desc(self.model, buf, len(buf))
        params = context_params(self._lib, self.options)
        return BenchFacts(
            model_type=buf.value.decode("utf-8", "replace"),
            type_k=ggml_type_name(int(params.type_k)),
            type_v=ggml_type_name(int(params.type_v)),
        )

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
        return self._tokenize(text, add_bos=add_bos, special=False)

    def _tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        """llama_tokenize; a negative count is the room it needs, so ask again with that."""
        data = text.encode("utf-8")
        room = len(data) + 2
        for _ in range(2):
            out = (self._lib.llama_token * room)()
            n = self._lib.llama_tokenize(
                self._vocab(), data, len(data), out, room, add_bos, special
            )
            if n >= 0:
                return list(out[:n])
            room = -n
        raise RuntimeError(f"llama_tokenize failed for a text of {len(data)} bytes")

    def _decode_logits(self, tokens: list[int], pos0: int, *, want_all: bool) -> np.ndarray:
        """Decode tokens at positions pos0.. in sequence 0; return logits rows requested."""
        rows = []
        for start in range(0, len(tokens), self.options.n_batch):
            chunk = tokens[start : start + self.options.n_batch]
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
                flat = np.ctypeslib.as_array(
                    ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                    shape=(n_out * self.n_vocab,),
                )
                rows.append(flat.reshape(n_out, self.n_vocab).copy())
        return np.concatenate(rows) if rows else np.zeros((0, self.n_vocab), np.float32)

    def choice_logliks(
        self, context: list[int], continuations: list[list[int]], *, reuse_context: bool = True
    ) -> list[float]:
        """Sum of log p(continuation tokens | context) for each continuation.

        The context is decoded once; for each continuation the KV cache is cut back to the
        context and only the continuation's tokens are decoded. The logits at position i
        predict token i+1, so the first continuation token is scored with the context's last
        row and the continuation's own last token never needs decoding.
        With `reuse_context=False` the context is decoded again from an empty cache for every
        continuation: the same arithmetic with no reuse, the baseline for the speed-up.
        (Decoding context and continuation in one batch instead gives slightly different
        numbers, because llama.cpp's CPU kernels depend on the batch shape.)
        """
        last = self._context_row(context)
        n = len(context)
        out = []
        for cont in continuations:
            if reuse_context:
                self._lib.llama_memory_seq_rm(self.mem, 0, n, -1)
            else:
                last = self._context_row(context)
            rows = [last]
            if len(cont) > 1:
                rows.extend(self._decode_logits(cont[:-1], n, want_all=True))
            pairs = zip(rows, cont, strict=True)
            out.append(sum(_log_softmax_at(row, tok) for row, tok in pairs))
        return out

    def _context_row(self, context: list[int]) -> np.ndarray:
        self.clear()
        return self._decode_logits(context, 0, want_all=False)[-1]

    def one_batch_logliks(self, context: list[int], continuations: list[list[int]]) -> list[float]:
        """The textbook computation: context + continuation decoded in one batch per choice,
        all logits read back. Equal to choice_logliks up to batch-shape numerics."""
        out = []
        for cont in continuations:
            self.clear()
            rows = self._decode_logits((context + cont)[:-1], 0, want_all=True)
            out.append(
                sum(_log_softmax_at(rows[len(context) - 1 + i], tok) for i, tok in enumerate(cont))
            )
        return out

    # --- quant fidelity: logits of every scored position ---
    def logits_for(self, tokens: list[int], *, first: int = 0) -> np.ndarray:
        """Logits of positions first..len(tokens)-1 of `tokens`, decoded from an empty KV cache.

        Returns float32 of shape (len(tokens) - first, n_vocab): row i is what the model predicts
        for the token after position first + i. Only those rows are requested from llama.cpp,
        so scoring the second half of a 512-token chunk copies 256 rows, not 512.
        """
        if not 0 <= first < len(tokens) <= self.n_ctx:
            raise ValueError(
                f"need 0 <= first < len(tokens) <= n_ctx ({self.n_ctx}); got "
                f"first={first}, {len(tokens)} tokens"
            )
        self.clear()
        out = np.empty((len(tokens) - first, self.n_vocab), np.float32)
        done = 0
        for start in range(0, len(tokens), self.options.n_batch):
            chunk = tokens[start : start + self.options.n_batch]
            n_out = self._fill_batch(chunk, start, first)
            result = self._lib.llama_decode(self.ctx, self._batch)
            if result != 0:
                raise RuntimeError(f"llama_decode failed with code {result}")
            if n_out:
                pointer = self._lib.llama_get_logits(self.ctx)
                flat = np.ctypeslib.as_array(
                    ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                    shape=(n_out * self.n_vocab,),
                )
                out[done : done + n_out] = flat.reshape(n_out, self.n_vocab)
                done += n_out
        return out

    def _fill_batch(self, chunk: list[int], pos0: int, first: int) -> int:
        """Put `chunk` at positions pos0.. of sequence 0, asking logits from `first` on."""
        batch = self._batch
        batch.n_tokens = len(chunk)
        n_out = 0
        for i, token in enumerate(chunk):
            batch.token[i] = token
            batch.pos[i] = pos0 + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = pos0 + i >= first
            n_out += pos0 + i >= first
        return n_out

    # --- generation (greedy) and chat templates ---
    def prompt_tokens(self, text: str, *, special: bool) -> list[int]:
        """Tokens of a prompt, BOS first when the model wants one. With `special`, markers such
        as <|im_start|> in a rendered chat template become their control tokens, and a BOS
        that the template already wrote is not doubled."""
        tokens = self._tokenize(text, add_bos=False, special=special)
        if self.add_bos and (not tokens or tokens[0] != self.bos):
            tokens.insert(0, self.bos)
        return tokens

    def generate(
        self,
        prompt_tokens: list[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        force: ThinkForce | None = None,
    ) -> GenerationResult:
        """Greedy (argmax) continuation of `prompt_tokens`, decoded token by token.

        Stops at an end-of-generation token (llama_vocab_is_eog: EOS, EOT, <|im_end|>, ...),
        at the first stop string (cut off the text), after `max_tokens`, or when the context
        is full. The logits of the last prompt position pick the first token; each picked
        token is then decoded at the next position to give the logits for the one after.
        With `force` (engine.forcing), a sequence still thinking when its thinking budget is
        spent gets the end-of-thinking marker and the answer lead-in decoded after its last
        token, once (when the context has room for them and one more token); end-of-generation
        is then passed over while the answer is blank.
        """
        n_prompt = len(prompt_tokens)
        if not 0 < n_prompt < self.n_ctx:
            raise ValueError(f"a prompt of {n_prompt} tokens does not fit n_ctx={self.n_ctx}")
        vocab = self._vocab()
        budget = min(max_tokens, self.n_ctx - n_prompt)
        reason = "max_tokens" if budget == max_tokens else "n_ctx"
        self.clear()
        logits = self._decode_logits(prompt_tokens, 0, want_all=False)[-1]
        out, n_gen, checked, shift, forced, answer_at = bytearray(), 0, 0, 0, False, -1
        is_eog = partial(self._lib.llama_vocab_is_eog, vocab)
        while n_gen < budget:
            token = pick(logits, is_eog, not force or force.eog_allowed(out, answer_at))
            if is_eog(token):
                reason = "eog"
                break
            out += self._piece(vocab, token, special=False)
            n_gen += 1
            text = out.decode("utf-8", "ignore")  # a split multi-byte char waits a token
            cut = find_stop(text, stop, checked)
            if cut != -1:
                return GenerationResult(text[:cut], n_prompt, n_gen, "stop", forced)
            checked = len(text)
            feed = [token]
            if force and not forced and force.due(out, n_gen):
                room = self.n_ctx - n_prompt - len(force.tokens)  # n_gen's cap with the marker
                if n_gen < min(budget, room):
                    feed = [token, *force.tokens]
                    out += force.text.encode("utf-8")
                    checked, answer_at = len(out.decode("utf-8", "ignore")), len(out)
                    if room < budget:
                        budget, reason = room, "n_ctx"
            if n_gen < budget:
                pos = n_prompt + n_gen - 1 + shift
                logits = self._decode_logits(feed, pos, want_all=False)[-1]
                if len(feed) > 1:
                    forced, shift = True, len(feed) - 1
        return GenerationResult(out.decode("utf-8", "replace"), n_prompt, n_gen, reason, forced)

    def detokenize(self, tokens: list[int]) -> str:
        """Text of `tokens` (control tokens render as nothing)."""
        vocab = self._vocab()
        data = b"".join(self._piece(vocab, t, special=False) for t in tokens)
        return data.decode("utf-8", "replace")

    def chat_template(self) -> str | None:
        """The GGUF's default chat template (`tokenizer.chat_template`), or None (base models)."""
        raw = self._lib.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8", "replace") if raw else None

    def special_token_texts(self) -> dict[str, str]:
        """The texts a chat template prints as `bos_token` and `eos_token` ("" if none)."""
        vocab = self._vocab()
        eos = int(self._lib.llama_vocab_eos(vocab))

        def text(token: int) -> str:
            return (
                self._piece(vocab, token, special=True).decode("utf-8", "replace")
                if token >= 0
                else ""
            )

        return {"bos_token": text(self.bos), "eos_token": text(eos)}

    def _vocab(self) -> Any:
        return self._lib.llama_model_get_vocab(self.model)

    def _piece(self, vocab: Any, token: int, *, special: bool) -> bytes:
        """The bytes of one token (llama_token_to_piece; a negative size asks for more room)."""
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]


# --- quantization (llama_model_quantize) ---


def count_decodes() -> Callable[[], int]:
    """Count every llama_decode from now on in this process (LlamaBackend and the batch engine
    look the function up on the llama_cpp module at each call); returns a reader of the count.
    The bench worker's progress beat uses it (run/worker.DecodeBeat): a decode that finished
    is progress, one that never returns is a stall."""
    import llama_cpp

    real = llama_cpp.llama_decode
    count = [0]

    def counted(*args: Any) -> Any:
        result = real(*args)
        count[0] += 1
        return result

    llama_cpp.llama_decode = counted
    return lambda: count[0]


def kv_type_id(name: str) -> int:
    """The ggml type id of a KV cache type name as ggml_type_name spells it ("q8_0" -> 8), found
    by asking ggml for each id's name (llama_cpp's GGML_TYPE_* constants lack some, e.g. bf16);
    ValueError names the type when this llama.cpp has none of that name."""
    import llama_cpp

    for type_id in range(int(llama_cpp.GGML_TYPE_COUNT)):
        if ggml_type_name(type_id) == name:
            return type_id
    raise ValueError(f"this llama.cpp has no ggml type {name!r} for the KV cache")


def ggml_type_ids() -> dict[str, int]:
    """Tensor type names this llama.cpp knows, from its GGML_TYPE_* enum: {"Q8_0": 8, ...}."""
    import llama_cpp

    prefix = "GGML_TYPE_"
    return {
        name[len(prefix) :]: int(value)
        for name, value in vars(llama_cpp).items()
        if name.startswith(prefix) and name != "GGML_TYPE_COUNT" and isinstance(value, int)
    }


def llama_ftype_ids() -> dict[str, int]:
    """File types llama_model_quantize takes, from LLAMA_FTYPE_*: {"Q4_K_M": 15, "F32": 0, ...}."""
    import llama_cpp

    out = {}
    for name, value in vars(llama_cpp).items():
        if name.startswith("LLAMA_FTYPE_MOSTLY_") and isinstance(value, int):
            out[name[len("LLAMA_FTYPE_MOSTLY_") :]] = int(value)
    out["F32"] = int(llama_cpp.LLAMA_FTYPE_ALL_F32)
    return out


def quantize_model(
    src: str,
    dst: str,
    *,
    ftype: int,
    tensor_overrides: list[tuple[str, int]] | tuple[()] = (),
    output_tensor_type: int | None = None,
    token_embedding_type: int | None = None,
    pure: bool = False,
    nthread: int = 0,
) -> str:
    """Write `dst`, GGUF `src` re-typed by llama.cpp's llama_model_quantize; return its log.

    `ftype` is a LLAMA_FTYPE id; `tensor_overrides` are (regex, GGML_TYPE id) pairs that
    llama.cpp searches in each tensor name in order, first match wins. Already-quantized
    sources are allowed (requantizing). llama.cpp's log is captured instead of printed; on
    failure RuntimeError carries its error lines.
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = nthread
    params.ftype = ftype
    params.allow_requantize = True
    params.pure = pure
    if output_tensor_type is not None:
        params.output_tensor_type = output_tensor_type
    if token_embedding_type is not None:
        params.token_embedding_type = token_embedding_type
    keep = _tensor_override_array(list(tensor_overrides))
    if keep is not None:
        params.tt_overrides = ctypes.cast(
            keep[0], ctypes.POINTER(llama_cpp.llama_model_tensor_override)
        )
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        code = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    finally:
        from llama_cpp import _logger  # llama-cpp-python's own sink, restored as it was

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    log = "".join(lines)
    if code != 0:
        errors = [ln for ln in log.splitlines() if "error" in ln.lower() or "failed" in ln]
        raise RuntimeError("; ".join(errors[-3:]) or f"llama_model_quantize returned {code}")
    return log


def _tensor_override_array(pairs: list[tuple[str, int]]) -> tuple[Any, list[bytes]] | None:
    """A NULL-terminated llama_model_tensor_override array (and the bytes it points into)."""
    import llama_cpp

    if not pairs:
        return None
    patterns = [pattern.encode() for pattern, _ in pairs]
    array = (llama_cpp.llama_model_tensor_override * (len(pairs) + 1))()
    for i, (pattern, (_, type_id)) in enumerate(zip(patterns, pairs, strict=True)):
        array[i].pattern = pattern
        array[i].type = type_id
    array[len(pairs)].pattern = None
    return array, patterns


class FlashSupport(NamedTuple):
    """Whether one ggml device can run flash attention (GGML_OP_FLASH_ATTN_EXT) with one pair
    of KV cache types: `kind` as _DEVICE_TYPES names it ("CPU", "GPU", ...)."""

    device: str
    kind: str
    type_k: str
    type_v: str
    supported: bool


def flash_attn_support(
    pairs: Sequence[tuple[str, str]], *, head_dim: int = 128
) -> list[FlashSupport] | None:
    """Ask each ggml device of this build whether it supports a flash-attention op over K and
    V caches of each (type_k, type_v) in `pairs` (ggml_backend_dev_supports_op on an unallocated
    op of `head_dim`, 8 heads, 256 cells): what llama.cpp's scheduler asks before it places the
    op. A device that says no runs it elsewhere (llama.cpp moves forced flash attention to the
    CPU; `auto` turns it off). None when this build lacks the API; nothing is allocated or
    loaded."""
    ptr, size, f32 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_float

    class InitParams(ctypes.Structure):  # struct ggml_init_params, passed by value
        _fields_ = [("mem_size", size), ("mem_buffer", ptr), ("no_alloc", ctypes.c_bool)]

    try:
        init = _ggml_fn("ggml_init", ptr, InitParams)
        free = _ggml_fn("ggml_free", None, ptr)
        tensor = _ggml_fn("ggml_new_tensor_4d", ptr, ptr, ctypes.c_int, *(ctypes.c_int64,) * 4)
        attend = _ggml_fn("ggml_flash_attn_ext", ptr, ptr, ptr, ptr, ptr, ptr, f32, f32, f32)
        count = _ggml_fn("ggml_backend_dev_count", size)
        get = _ggml_fn("ggml_backend_dev_get", ptr, size)
        name = _ggml_fn("ggml_backend_dev_name", ctypes.c_char_p, ptr)
        kind = _ggml_fn("ggml_backend_dev_type", ctypes.c_int, ptr)
        supports = _ggml_fn("ggml_backend_dev_supports_op", ctypes.c_bool, ptr, ptr)
    except (AttributeError, OSError):
        return None
    ctx = init(InitParams(1 << 20, None, True))  # tensor metadata only (no_alloc)
    if not ctx:
        return None
    out = []
    try:
        for type_k, type_v in pairs:
            q = tensor(ctx, kv_type_id("f32"), head_dim, 1, 8, 1)
            k = tensor(ctx, kv_type_id(type_k), head_dim, 256, 8, 1)
            v = tensor(ctx, kv_type_id(type_v), head_dim, 256, 8, 1)
            op = attend(ctx, q, k, v, None, 1.0, 0.0, 0.0)
            for index in range(count()):
                dev = get(index)
                out.append(
                    FlashSupport(
                        device=(name(dev) or b"?").decode("utf-8", "replace"),
                        kind=_DEVICE_TYPES.get(kind(dev), "unknown"),
                        type_k=type_k,
                        type_v=type_v,
                        supported=bool(supports(dev, op)),
                    )
                )
    finally:
        free(ctx)
    return out
