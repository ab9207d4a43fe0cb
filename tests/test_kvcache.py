"""The KV cache formula against hand-computed tables: GQA per layer, sliding-window layers
(Gemma 2/3 patterns, window + micro-batch cache), MLA (DeepSeek latent cache), padding."""

from __future__ import annotations

import dataclasses

import pytest

from edgeeval import metrics
from edgeeval.gguf.kvcache import kv_bytes, kv_layout, swa_layers
from tests.builders import record


def llama(**extra: object) -> dict[str, object]:
    """2 layers, n_embd 64, 4 heads (head size 16), 2 KV heads."""
    meta: dict[str, object] = {
        "general.architecture": "llama",
        "llama.block_count": 2,
        "llama.embedding_length": 64,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
    }
    meta.update({f"llama.{k}": v for k, v in extra.items()})
    return meta


def gemma3(n_layer: int = 18, **extra: object) -> dict[str, object]:
    """Gemma 3 270M's attention: 4 heads, 1 KV head of 256, a 512-token window."""
    meta: dict[str, object] = {
        "general.architecture": "gemma3",
        "gemma3.block_count": n_layer,
        "gemma3.embedding_length": 640,
        "gemma3.attention.head_count": 4,
        "gemma3.attention.head_count_kv": 1,
        "gemma3.attention.key_length": 256,
        "gemma3.attention.value_length": 256,
        "gemma3.attention.sliding_window": 512,
    }
    meta.update({f"gemma3.{k}": v for k, v in extra.items()})
    return meta


def deepseek2(*, mla: bool) -> dict[str, object]:
    """DeepSeek-V2-Lite's attention on 2 layers: kv_lora_rank 512, RoPE part 64, 16 heads of
    nope 128 + rope 64 (K 192) and V 128. MLA files cache the latent: K = 576, one head."""
    meta: dict[str, object] = {
        "general.architecture": "deepseek2",
        "deepseek2.block_count": 2,
        "deepseek2.embedding_length": 2048,
        "deepseek2.attention.head_count": 16,
        "deepseek2.attention.kv_lora_rank": 512,
        "deepseek2.rope.dimension_count": 64,
    }
    if mla:
        meta.update(
            {
                "deepseek2.attention.head_count_kv": 1,
                "deepseek2.attention.key_length": 576,
                "deepseek2.attention.value_length": 512,
                "deepseek2.attention.key_length_mla": 192,
                "deepseek2.attention.value_length_mla": 128,
            }
        )
    else:
        meta.update(
            {
                "deepseek2.attention.head_count_kv": 16,
                "deepseek2.attention.key_length": 192,
                "deepseek2.attention.value_length": 128,
            }
        )
    return meta


# (case, metadata, options, full bytes per cell, SWA bytes per cell, window)
LAYOUTS = [
    # 2 layers * 2 KV heads * (16 K + 16 V) * 2 bytes
    ("gqa", llama(), {}, 2 * 2 * 32 * 2, 0, 0),
    # K 4*16, 2*16, 1*16 per layer; V padded to the widest (64) without flash attention
    (
        "gqa per layer",
        llama(block_count=3, **{"attention.head_count_kv": [4, 2, 1]}),
        {},
        ((64 + 64) + (32 + 64) + (16 + 64)) * 2,
        0,
        0,
    ),
    (
        "gqa per layer, flash attention",
        llama(block_count=3, **{"attention.head_count_kv": [4, 2, 1]}),
        {"flash_attn": True},
        ((64 + 64) + (32 + 32) + (16 + 16)) * 2,
        0,
        0,
    ),
    # explicit head sizes override n_embd / n_head
    (
        "key/value length",
        llama(**{"attention.key_length": 8, "attention.value_length": 24}),
        {},
        2 * 2 * (8 + 24) * 2,
        0,
        0,
    ),
    # 18 layers, every 6th global (il 5, 11, 17): 3 full + 15 SWA layers of (256 + 256) * 2
    ("gemma3", gemma3(), {}, 3 * 1024, 15 * 1024, 512),
    # pattern 2 from the file: even layers SWA, odd ones global
    (
        "gemma3 pattern 2",
        gemma3(**{"attention.sliding_window_pattern": 2}),
        {},
        9 * 1024,
        9 * 1024,
        512,
    ),
    (
        "gemma3 per-layer flags",
        gemma3(n_layer=4, **{"attention.sliding_window_pattern": [True, False, False, True]}),
        {},
        2 * 1024,
        2 * 1024,
        512,
    ),
    # no window in the file: llama.cpp runs every layer with full attention
    (
        "gemma3 without a window",
        {k: v for k, v in gemma3().items() if not k.endswith("sliding_window")},
        {},
        18 * 1024,
        0,
        0,
    ),
    # Gemma 2: pattern 2 and a 4096-token window unless the file says otherwise
    (
        "gemma2 default window",
        {
            "general.architecture": "gemma2",
            "gemma2.block_count": 4,
            "gemma2.embedding_length": 64,
            "gemma2.attention.head_count": 4,
            "gemma2.attention.head_count_kv": 2,
        },
        {},
        2 * (2 * 32 * 2),
        2 * (2 * 32 * 2),
        4096,
    ),
    # MLA: K = kv_lora_rank + rope = 576 values per layer, one head, no V cache
    ("deepseek2 mla", deepseek2(mla=True), {}, 2 * 576 * 2, 0, 0),
    # legacy DeepSeek-V2 files without MLA keys: 16 heads of K 192 and V 128
    ("deepseek2 without mla", deepseek2(mla=False), {}, 2 * 16 * (192 + 128) * 2, 0, 0),
    # q8_0 cache: 34 bytes per 32 values; 32 K + 32 V values per layer
    ("q8_0 cache", llama(), {"cache_type": "q8_0"}, 2 * 2 * 34, 0, 0),
]


@pytest.mark.parametrize(
    "meta, options, full, swa, window",
    [case[1:] for case in LAYOUTS],
    ids=[case[0] for case in LAYOUTS],
)
def test_layout_matches_the_hand_computed_bytes_per_cell(meta, options, full, swa, window):
    layout = kv_layout(meta, **options)
    assert layout is not None
    assert (layout.full_bytes_per_cell, layout.swa_bytes_per_cell, layout.n_swa) == (
        full,
        swa,
        window,
    )


def test_gemma3_global_layers_are_every_sixth():
    flags, window = swa_layers(gemma3(), "gemma3", 18)
    assert [il for il, swa in enumerate(flags) if not swa] == [5, 11, 17]
    assert window == 512


# (n_ctx, full cells, SWA cells with swa_full off) for a 512 window and 512-token micro-batch
CELLS = [
    (100, 256, 256),
    (512, 512, 512),
    (1000, 1024, 1024),
    (2048, 2048, 1024),
    (8192, 8192, 1024),
    (32768, 32768, 1024),
]


@pytest.mark.parametrize("n_ctx, full, swa", CELLS)
def test_cells_follow_llama_cpp_padding_and_window(n_ctx, full, swa):
    assert metrics.kv_cells(n_ctx, n_swa=512, n_ubatch=512, swa_full=False) == (full, swa)
    assert metrics.kv_cells(n_ctx, n_swa=512, n_ubatch=512, swa_full=True) == (full, full)


# Gemma 3 270M: (n_ctx, bytes as llama-cpp-python allocates, bytes with a windowed SWA cache)
GEMMA_TABLE = [
    (512, 18 * 1024 * 512, 18 * 1024 * 512),
    (2048, 18 * 1024 * 2048, 3 * 1024 * 2048 + 15 * 1024 * 1024),
    (8192, 18 * 1024 * 8192, 3 * 1024 * 8192 + 15 * 1024 * 1024),
    (32768, 18 * 1024 * 32768, 3 * 1024 * 32768 + 15 * 1024 * 1024),
]


@pytest.mark.parametrize("n_ctx, as_run, windowed", GEMMA_TABLE)
def test_gemma3_table(n_ctx, as_run, windowed):
    layout = kv_layout(gemma3())
    assert metrics.kv_cache_at(layout, n_ctx) == as_run
    assert metrics.kv_cache_at(layout, n_ctx, windowed=True) == windowed
    assert kv_bytes(gemma3(), n_ctx, swa_full=False) == windowed


def test_the_window_cache_grows_with_the_micro_batch():
    layout = dataclasses.replace(kv_layout(gemma3()), n_ubatch=1024)
    # SWA cache: 512 + 1024 = 1536 cells (already a multiple of 256)
    assert metrics.kv_cache_at(layout, 8192, windowed=True) == 3 * 1024 * 8192 + 15 * 1024 * 1536


@pytest.mark.parametrize(
    "meta",
    [
        {**llama(), "llama.ssm.conv_kernel": 4},  # recurrent state, not a KV cache
        {**gemma3(), "general.architecture": "gemma3n"},  # layers share caches
        llama(**{"attention.head_count_kv": [2, 2, 2]}),  # array length != block_count
        llama(**{"attention.head_count": 0}),
        {"general.architecture": "llama", "llama.block_count": 2},
    ],
)
def test_unmodelled_or_incomplete_metadata_gives_none(meta):
    assert kv_layout(meta) is None


def test_a_cache_type_that_does_not_fit_the_rows_gives_none():
    assert kv_layout(llama(**{"attention.key_length": 10}), cache_type="q8_0") is None


def test_contexts_are_capped_by_the_trained_context_and_include_the_run():
    assert metrics.kv_contexts(32768, 2048) == (512, 2048, 8192, 32768)
    assert metrics.kv_contexts(8192, 1000) == (512, 1000, 2048, 8192)
    assert metrics.kv_contexts(None, 512) == (512, 2048, 8192, 32768)


def test_peak_at_another_context_swaps_the_kv_cache():
    layout = kv_layout(llama())  # 256 bytes per cell
    rec = dataclasses.replace(record("a", peak_gb=1.0, acc=0.5), kv_cache=layout)
    assert rec.settings.n_ctx == 2048
    assert metrics.peak_at_ctx(rec, 8192) == 1_000_000_000 - 256 * 2048 + 256 * 8192
    assert metrics.peak_at_ctx(rec, 2048) == 1_000_000_000
    assert metrics.peak_at_ctx(record("b", peak_gb=1.0, acc=0.5), 8192) is None
