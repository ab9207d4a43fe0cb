"""The KV formula against llama.cpp's own allocation (its KV buffer sizes at context creation),
within 1 %: the three embedded models at each context length up to the trained one, as
llama-cpp-python loads them (full-size SWA cache) and with the windowed SWA cache; and a tiny
random-weight DeepSeek-V2 (MLA) model written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeeval.engine.backend import LoadOptions
from edgeeval.gguf.check import check_gguf
from edgeeval.gguf.kvcache import kv_layout
from edgeeval.metrics import kv_cache_at, kv_contexts
from tests.conftest import _fetch_real
from tests.kvprobe import kv_allocations

EMBEDDED = [
    "smollm2-135m-instruct-q4_1",
    "qwen2.5-coder-0.5b-instruct-q4_k_m",
    "gemma-3-270m-q4_k_m",
]


def _close(ours: int, theirs: int) -> bool:
    return abs(ours - theirs) <= 0.01 * theirs


@pytest.mark.real
@pytest.mark.parametrize("name", EMBEDDED)
@pytest.mark.parametrize("swa_full", [None, False], ids=["as-loaded", "windowed"])
def test_embedded_models_kv_equals_llama_cpp_allocation(name, swa_full):
    path = _fetch_real(name)
    meta = check_gguf(path).metadata
    arch = meta["general.architecture"]
    contexts = list(kv_contexts(meta[f"{arch}.context_length"], 1000))  # 1000: padded to 1024
    layout = kv_layout(meta)
    allocated = kv_allocations(path, contexts, swa_full=swa_full)
    for n_ctx in contexts:
        ours = kv_cache_at(layout, n_ctx, windowed=swa_full is False)
        theirs = allocated[n_ctx]["bytes"]
        assert theirs > 0 and _close(ours, theirs), (name, n_ctx, ours, theirs)
    if name.startswith("gemma") and swa_full is False:  # the window shows: 1024 SWA cells
        assert allocated[32768]["cells"] == [(32768, 3), (1024, 15)]


@pytest.mark.real
@pytest.mark.parametrize("name", EMBEDDED)
@pytest.mark.parametrize(
    ("type_k", "type_v", "flash_attn", "swa_full"),
    [
        ("q8_0", "q8_0", True, True),
        ("q8_0", "q8_0", True, False),
        ("q4_0", "q4_0", "auto", False),
        ("q8_0", "f16", False, True),  # a quantized K alone needs no flash attention
    ],
    ids=["q8_0-full", "q8_0-windowed", "q4_0-auto-windowed", "k-q8_0-v-f16"],
)
def test_quantized_kv_equals_llama_cpp_allocation(name, type_k, type_v, flash_attn, swa_full):
    """The cache types and windowing as a run passes them (LoadOptions -> context_params):
    llama.cpp's KV buffers within 1 % of the layout's bytes (q8_0: 34 bytes per 32 values,
    q4_0: 18 per 32), and the types really reach llama.cpp (f16 would be ~1.9x / 3.6x)."""
    path = _fetch_real(name)
    meta = check_gguf(path).metadata
    options = LoadOptions(
        n_ctx=512, flash_attn=flash_attn, type_k=type_k, type_v=type_v, swa_full=swa_full
    )
    layout = kv_layout(
        meta,
        flash_attn=flash_attn,
        swa_full=swa_full,
        cache_type_k=type_k,
        cache_type_v=type_v,
    )
    assert layout.cache_type == (type_k if type_k == type_v else f"{type_k}/{type_v}")
    f16 = kv_layout(meta, flash_attn=flash_attn, swa_full=swa_full)
    contexts = [1000, 8192]
    allocated = kv_allocations(path, contexts, options=options)
    for n_ctx in contexts:
        ours, theirs = kv_cache_at(layout, n_ctx), allocated[n_ctx]["bytes"]
        assert theirs > 0 and _close(ours, theirs), (name, n_ctx, ours, theirs)
        assert not _close(kv_cache_at(f16, n_ctx), theirs)  # the type made a difference


def write_tiny_deepseek2(
    path: Path,
    *,
    n_layer: int = 8,
    n_embd: int = 128,
    n_head: int = 4,
    kv_lora_rank: int = 64,
    rope: int = 16,
    nope: int = 32,
    v_head: int = 32,
    n_ctx_train: int = 4096,
) -> Path:
    """A DeepSeek-V2 (MLA) GGUF with random F32 weights and dense FFNs that llama.cpp loads:
    the latent KV path (attn_kv_a_mqa, attn_k_b, attn_v_b) and the MLA head-size keys, as
    convert_hf_to_gguf writes them for MLA files (head_count_kv 1, key_length = kv_lora_rank +
    rope, value_length = kv_lora_rank)."""
    import gguf

    rng = np.random.default_rng(0)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    w = gguf.GGUFWriter(str(path), "deepseek2")
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(256)
    w.add_head_count(n_head)
    w.add_head_count_kv(1)
    w.add_key_length(kv_lora_rank + rope)
    w.add_value_length(kv_lora_rank)
    w.add_key_length_mla(nope + rope)
    w.add_value_length_mla(v_head)
    w.add_rope_dimension_count(rope)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_q_lora_rank(0)
    w.add_kv_lora_rank(kv_lora_rank)
    w.add_leading_dense_block_count(n_layer)
    w.add_expert_feed_forward_length(64)
    w.add_expert_shared_count(1)
    w.add_file_type(0)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types([2, 3, 3] + [6] * 256)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def mat(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(len(tokens), n_embd))
    for i in range(n_layer):
        blk = f"blk.{i}"
        w.add_tensor(f"{blk}.attn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(f"{blk}.attn_kv_a_norm.weight", np.ones(kv_lora_rank, np.float32))
        w.add_tensor(f"{blk}.attn_q.weight", mat(n_head * (nope + rope), n_embd))
        w.add_tensor(f"{blk}.attn_kv_a_mqa.weight", mat(kv_lora_rank + rope, n_embd))
        w.add_tensor(f"{blk}.attn_k_b.weight", mat(n_head, kv_lora_rank, nope))
        w.add_tensor(f"{blk}.attn_v_b.weight", mat(n_head, v_head, kv_lora_rank))
        w.add_tensor(f"{blk}.attn_output.weight", mat(n_embd, n_head * v_head))
        w.add_tensor(f"{blk}.ffn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(f"{blk}.ffn_gate.weight", mat(256, n_embd))
        w.add_tensor(f"{blk}.ffn_up.weight", mat(256, n_embd))
        w.add_tensor(f"{blk}.ffn_down.weight", mat(n_embd, 256))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor("output.weight", mat(len(tokens), n_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.llama
def test_mla_latent_cache_equals_llama_cpp_allocation(tmp_path):
    path = write_tiny_deepseek2(tmp_path / "mla.gguf")
    layout = kv_layout(check_gguf(path).metadata)
    # 8 layers, per cell: kv_lora_rank 64 + rope 16 latent values, F16, no V cache
    assert layout.full_bytes_per_cell == 8 * (64 + 16) * 2
    contexts = [2048, 3000, 4096]  # large enough that llama.cpp's MiB with 2 decimals is exact
    allocated = kv_allocations(path, contexts)  # to better than 0.5 %
    for n_ctx in contexts:
        ours, theirs = kv_cache_at(layout, n_ctx), allocated[n_ctx]["bytes"]
        assert theirs > 0 and _close(ours, theirs), (n_ctx, ours, theirs)
        assert allocated[n_ctx]["cells"] == [(-(-n_ctx // 256) * 256, 8)]
    # a full-attention reading of the same heads (4 heads of K 48 + V 32) would be far off
    decompressed = 8 * 4 * (48 + 32) * 2 * 4096
    assert not _close(decompressed, allocated[4096]["bytes"])


@pytest.mark.real
def test_a_loaded_context_reports_the_configured_cache_types():
    """What the speed results and the llama-bench export write as type_k/type_v is the
    loaded context's (llama-bench's -ctk/-ctv), not a constant."""
    from edgeeval.engine.backend import LlamaBackend

    options = LoadOptions(n_ctx=512, type_k="q8_0", type_v="q4_0", flash_attn=True)
    backend = LlamaBackend(str(_fetch_real(EMBEDDED[0])), options)
    try:
        facts = backend.describe()
    finally:
        backend.close()
    assert (facts.type_k, facts.type_v) == ("q8_0", "q4_0")
