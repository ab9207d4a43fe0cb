"""The KV cache of a GGUF model per context length, laid out as llama.cpp allocates it.

Read from the metadata alone (no model is loaded). The rules follow llama.cpp as vendored by
llama-cpp-python 0.3.36 (llama-model.cpp, llama-hparams.cpp, llama-kv-cache*.cpp):

- Head sizes are `<arch>.attention.key_length` / `value_length`, by default n_embd divided by
  layer 0's head count; sliding-window layers may have their own (`key_length_swa`,
  `value_length_swa`). `head_count` and `head_count_kv` may be per-layer arrays (GQA per
  layer); `head_count_kv` defaults to `head_count`.
- Each layer caches head_k * n_head_kv K values and head_v * n_head_kv V values per cell.
  Without flash attention the V cache is stored transposed, and when V widths differ between
  layers every layer's V is padded to the widest.
- MLA (DeepSeek-V2/V3 files with `key_length_mla` and `value_length_mla`): the cache holds one
  "head" of the compressed latent plus the RoPE part, K = key_length = kv_lora_rank +
  qk_rope_head_dim values per layer, and no V cache at all.
- Sliding-window layers (Gemma 2/3, Cohere2, gpt-oss, OLMo 2): with pattern N, layer il is a
  window layer when il % N < N - 1, so every N-th layer is global (Gemma 3: N = 6);
  `<arch>.attention.sliding_window_pattern` overrides N, or lists a flag per layer.
- Cell counts (context padding, the SWA cache's window + micro-batch) are metrics.kv_cells.

Architectures whose memory is not a plain KV cache (recurrent or hybrid layers, layers that
share another layer's cache) give None rather than a wrong figure.
"""

from __future__ import annotations

import dataclasses

from edgeeval.errors import PreflightError
from edgeeval.metrics import kv_cache_at, kv_contexts, kv_points
from edgeeval.records import KvCacheLayout, RunSettings

# arch -> (default pattern, default window or 0 = SWA only when the file names a window > 0)
_SWA_ARCHS = {
    "gemma2": (2, 4096),
    "gemma3": (6, 0),
    "cohere2": (4, 0),
    "gpt-oss": (2, 0),
    "olmo2": (4, 0),
}
# Shared or chunked caches this module does not model (a wrong figure is worse than none).
_UNMODELLED = {"gemma3n", "gemma4", "llama4"}
_RECURRENT_KEYS = (".ssm.", ".wkv.", ".shortconv.", ".rwkv")


def _positive(value: object) -> int | None:
    """`value` when it is a positive plain integer (not a bool or an array), else None."""
    return value if type(value) is int and value > 0 else None


def _per_layer(value: object, n_layer: int) -> list[int] | None:
    """A count per layer from a single integer or a per-layer array, else None."""
    if type(value) is int and value >= 0:
        return [value] * n_layer
    if isinstance(value, list) and len(value) == n_layer:
        if all(type(v) is int and v >= 0 for v in value):
            return list(value)
    return None


def swa_layers(meta: dict[str, object], arch: str, n_layer: int) -> tuple[list[bool], int]:
    """(per-layer sliding-window flags, window size) as llama.cpp decides them for `arch`."""
    if arch not in _SWA_ARCHS:
        return [False] * n_layer, 0
    pattern, default_window = _SWA_ARCHS[arch]
    window = _positive(meta.get(f"{arch}.attention.sliding_window")) or default_window
    if not window:
        return [False] * n_layer, 0
    raw = meta.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(raw, list) and len(raw) == n_layer:
        return [bool(v) for v in raw], window
    if type(raw) is int and raw >= 0:
        pattern = raw
    return [pattern == 0 or il % pattern < pattern - 1 for il in range(n_layer)], window


def _row_bytes(n_values: int, cache_type: str) -> int | None:
    """Bytes of `n_values` cache values of ggml type `cache_type` (None if it does not fit)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[cache_type.upper()]]
    except KeyError:
        return None
    return n_values // block * size if n_values % block == 0 else None


def _layer_bytes(
    widths: list[tuple[int, int]], type_k: str, type_v: str
) -> list[tuple[int, int]] | None:
    """(K bytes, V bytes) per cell for each layer, or None when a row does not fit its type
    (ggml block sizes: q8_0 holds 32 values in 34 bytes, q4_0 in 18, f16 2 bytes a value)."""
    out = []
    for k, v in widths:
        k_bytes, v_bytes = _row_bytes(k, type_k), _row_bytes(v, type_v)
        if k_bytes is None or v_bytes is None:
            return None
        out.append((k_bytes, v_bytes))
    return out


def kv_widths(meta: dict[str, object], *, flash_attn: bool = False) -> list[tuple[int, int]] | None:
    """(K values, V values) cached per cell for each layer, or None when not modelled."""
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or arch in _UNMODELLED:
        return None
    if any(k.startswith(arch) and any(t in k for t in _RECURRENT_KEYS) for k in meta):
        return None
    n_layer = _positive(meta.get(f"{arch}.block_count"))
    n_embd = _positive(meta.get(f"{arch}.embedding_length"))
    if n_layer is None or n_embd is None:
        return None
    n_head = _per_layer(meta.get(f"{arch}.attention.head_count"), n_layer)
    if n_head is None or not n_head[0]:
        return None
    n_head_kv = _per_layer(meta.get(f"{arch}.attention.head_count_kv", n_head), n_layer)
    head: dict[str, int] = {}
    for part in ("key", "value"):
        raw = meta.get(f"{arch}.attention.{part}_length", n_embd // n_head[0])
        raw_swa = meta.get(f"{arch}.attention.{part}_length_swa", raw)
        for name, size in ((part, _positive(raw)), (part + "_swa", _positive(raw_swa))):
            if size is None:
                return None
            head[name] = size
    if n_head_kv is None:
        return None
    is_swa, _ = swa_layers(meta, arch, n_layer)
    mla = all(_positive(meta.get(f"{arch}.attention.{p}_length_mla")) for p in ("key", "value"))
    widths = []
    for il in range(n_layer):
        sfx = "_swa" if is_swa[il] else ""
        k, v = head["key" + sfx] * n_head_kv[il], head["value" + sfx] * n_head_kv[il]
        widths.append((k, 0 if mla else v))
    if not flash_attn and not mla and len({v for _, v in widths}) > 1:
        widest = max(v for _, v in widths)
        widths = [(k, widest) for k, _ in widths]
    return widths


def kv_layout(
    meta: dict[str, object],
    *,
    n_ubatch: int = 512,
    swa_full: bool = True,
    flash_attn: bool | str = False,
    cache_type: str = "f16",
    cache_type_k: str | None = None,
    cache_type_v: str | None = None,
) -> KvCacheLayout | None:
    """The KV layout of a model with GGUF metadata `meta` (bytes per cell of its full and its
    sliding-window layers, window, micro-batch), or None when it cannot be modelled.

    `swa_full` True is llama-cpp-python's default (llama_context_default_params): the window
    layers then get a full-size cache too; llama-server and llama-cli turn it off.
    `cache_type` is both K and V's type; `cache_type_k`/`cache_type_v` override one of them.
    `flash_attn` "auto" counts as on (llama.cpp turns it on where the device supports it; it
    only changes the V padding of models whose V widths differ between layers).
    """
    widths = kv_widths(meta, flash_attn=bool(flash_attn))
    if widths is None:
        return None
    arch = str(meta["general.architecture"])
    is_swa, window = swa_layers(meta, arch, len(widths))
    type_k, type_v = (cache_type_k or cache_type).lower(), (cache_type_v or cache_type).lower()
    per_layer = _layer_bytes(widths, type_k, type_v)
    if per_layer is None:
        return None
    full = sum(k + v for (k, v), swa in zip(per_layer, is_swa, strict=True) if not swa)
    swa = sum(k + v for (k, v), swa in zip(per_layer, is_swa, strict=True) if swa)
    return KvCacheLayout(
        full_bytes_per_cell=full,
        swa_bytes_per_cell=swa,
        n_swa=window if swa else 0,
        n_ubatch=n_ubatch,
        swa_full=swa_full,
        cache_type=type_k if type_k == type_v else f"{type_k}/{type_v}",
    )


def kv_bytes(meta: dict[str, object], n_ctx: int, **layout_options: object) -> int | None:
    """KV cache bytes llama.cpp allocates at `n_ctx` for a model with metadata `meta`."""
    layout = kv_layout(meta, **layout_options)  # type: ignore[arg-type]
    return None if layout is None else kv_cache_at(layout, n_ctx)


def kv_for_run(
    meta: dict[str, object],
    *,
    n_ctx: int,
    n_ctx_train: int | None,
    n_batch: int = 512,
    n_ubatch: int = 512,
    flash_attn: bool | str = False,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    swa_full: bool = True,
) -> KvCacheLayout | None:
    """The layout of a run's model (its KV cache types, a full-size SWA cache unless not
    `swa_full`; the micro-batch llama.cpp uses, min(n_batch, n_ubatch)) with its figures at the
    standard context lengths up to `n_ctx_train` and at the run's `n_ctx` (0 = the trained
    context); None if not modelled."""
    layout = kv_layout(
        meta,
        n_ubatch=min(n_batch, n_ubatch),
        flash_attn=flash_attn,
        swa_full=swa_full,
        cache_type_k=cache_type_k,
        cache_type_v=cache_type_v,
    )
    run_ctx = n_ctx or n_ctx_train
    if layout is None or not run_ctx:
        return None
    points = kv_points(layout, kv_contexts(n_ctx_train, run_ctx))
    return dataclasses.replace(layout, points=points)


def kv_options(settings: RunSettings) -> dict[str, object]:
    """The run's context knobs that size its KV cache, as kv_layout/kv_bytes take them."""
    return {
        "flash_attn": settings.flash_attn,
        "cache_type_k": settings.cache_type_k,
        "cache_type_v": settings.cache_type_v,
        "swa_full": settings.swa_full,
    }


def check_context(meta: dict[str, object], n_ctx: int, *, name: str = "the model") -> None:
    """Refuse an `n_ctx` above the trained context length the GGUF header states (llama.cpp
    would load it and warn; the positions past it were never trained), before any load."""
    arch = meta.get("general.architecture")
    trained = _positive(meta.get(f"{arch}.context_length")) if isinstance(arch, str) else None
    if trained is not None and n_ctx > trained:
        raise PreflightError(
            f"--n-ctx {n_ctx} is above {name}'s trained context length {trained} "
            f"({arch}.context_length in its GGUF header); allowed: 1 to {trained}"
        )
