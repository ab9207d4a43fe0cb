"""What llama.cpp itself allocates for the KV cache: a context is created for each length and
the sizes llama.cpp logs at creation ("llama_kv_cache: CPU KV buffer size = N MiB", one line per
cache: two for sliding-window models) are read back. Test support; loads llama_cpp directly."""

from __future__ import annotations

import ctypes
import dataclasses
import re
from pathlib import Path

from edgeeval.engine.backend import LoadOptions, context_params

_BUFFER = re.compile(r"KV buffer size\s*=\s*([0-9.]+) MiB")
_CELLS = re.compile(r"\(\s*(\d+) cells,\s*(\d+) layers")


def kv_allocations(
    path: Path,
    contexts: list[int],
    *,
    swa_full: bool | None = None,
    n_ubatch: int = 512,
    options: LoadOptions | None = None,
) -> dict[int, dict[str, object]]:
    """n_ctx -> {"bytes": KV buffer bytes (from MiB with 2 decimals), "cells": [(cells,
    layers) per cache]}, loading the model once and creating one context per length with
    edgeeval's load settings (n_batch 512, no flash attention, CPU). `swa_full` None keeps
    llama.cpp's default for the Python binding. With `options`, each context is made from
    edgeeval's own engine.backend.context_params for those options at that n_ctx (so their
    KV types, flash attention and windowing reach llama.cpp as a run passes them)."""
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    out: dict[int, dict[str, object]] = {}
    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        assert model, "".join(lines)[-2000:]
        try:
            for n_ctx in contexts:
                lines.clear()
                if options is not None:
                    ctx_options = dataclasses.replace(options, n_ctx=n_ctx, n_threads=1)
                    ctx = llama_cpp.llama_init_from_model(
                        model, context_params(llama_cpp, ctx_options)
                    )
                    assert ctx, "".join(lines)[-2000:]
                    llama_cpp.llama_free(ctx)
                    out[n_ctx] = _read_log("".join(lines))
                    continue
                cparams = llama_cpp.llama_context_default_params()
                cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, 512, n_ubatch
                cparams.n_threads = cparams.n_threads_batch = 1
                cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
                if swa_full is not None:
                    cparams.swa_full = swa_full
                ctx = llama_cpp.llama_init_from_model(model, cparams)
                assert ctx, "".join(lines)[-2000:]
                llama_cpp.llama_free(ctx)
                out[n_ctx] = _read_log("".join(lines))
        finally:
            llama_cpp.llama_model_free(model)
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    return out


def _read_log(log: str) -> dict[str, object]:
    mib = [float(m) for m in _BUFFER.findall(log)]
    cells = [(int(c), int(n)) for c, n in _CELLS.findall(log)]
    return {"bytes": round(sum(mib) * 2**20), "cells": cells}
