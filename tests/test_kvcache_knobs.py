"""The context knobs as settings and sweep axes (KV cache types, flash attention, windowed
SWA cache, n_ctx): what each combination loads with, what the KV model says it costs, and the
one-line refusals for combinations llama.cpp would refuse or values it does not know."""

from __future__ import annotations

import pytest

from edgeeval import records as rec
from edgeeval.cli.bench import run_settings_from_args
from edgeeval.cli.main import build_parser
from edgeeval.errors import ConfigError, PreflightError
from edgeeval.gguf.kvcache import check_context, kv_bytes, kv_for_run, kv_layout
from edgeeval.metrics import kv_cache_at
from edgeeval.run.speed import expand_sweep, load_options


def llama(**extra: object) -> dict[str, object]:
    """8 layers, 4 KV heads of 64: K and V 256 values per layer and cell."""
    meta = {
        "general.architecture": "llama",
        "llama.block_count": 8,
        "llama.embedding_length": 512,
        "llama.attention.head_count": 8,
        "llama.attention.head_count_kv": 4,
        "llama.context_length": 8192,
    }
    meta.update({f"llama.{k}": v for k, v in extra.items()})
    return meta


@pytest.mark.parametrize(
    ("type_k", "type_v", "bytes_per_cell"),
    [
        ("f16", "f16", 8 * (256 * 2 + 256 * 2)),
        ("q8_0", "q8_0", 8 * (256 // 32 * 34) * 2),  # 34 bytes per block of 32
        ("q4_0", "q4_0", 8 * (256 // 32 * 18) * 2),  # 18 bytes per block of 32
        ("q8_0", "f16", 8 * (256 // 32 * 34 + 256 * 2)),
        ("f32", "q5_1", 8 * (256 * 4 + 256 // 32 * 24)),
    ],
)
def test_cache_types_size_the_cells_by_ggml_block_sizes(type_k, type_v, bytes_per_cell):
    layout = kv_layout(llama(), cache_type_k=type_k, cache_type_v=type_v, flash_attn=True)
    assert layout.full_bytes_per_cell == bytes_per_cell
    assert kv_cache_at(layout, 4096) == bytes_per_cell * 4096
    assert layout.cache_type == (type_k if type_k == type_v else f"{type_k}/{type_v}")


def gemma3() -> dict[str, object]:
    """Gemma 3 270M's attention shape: 18 layers, every 6th global, window 512."""
    return {
        "general.architecture": "gemma3",
        "gemma3.block_count": 18,
        "gemma3.embedding_length": 640,
        "gemma3.attention.head_count": 4,
        "gemma3.attention.head_count_kv": 1,
        "gemma3.attention.key_length": 256,
        "gemma3.attention.value_length": 256,
        "gemma3.attention.sliding_window": 512,
        "gemma3.context_length": 32768,
    }


def test_the_run_layout_follows_the_runs_types_and_windowing():
    full = kv_for_run(gemma3(), n_ctx=32768, n_ctx_train=32768)
    windowed = kv_for_run(
        gemma3(),
        n_ctx=32768,
        n_ctx_train=32768,
        swa_full=False,
        cache_type_k="q8_0",
        cache_type_v="q8_0",
        flash_attn=True,
    )
    assert full.swa_full and not windowed.swa_full and windowed.cache_type == "q8_0"
    at = {p.n_ctx: p for p in windowed.points}
    # 3 global layers at 32768 cells + 15 window layers at 1024 cells, 512 values K + V each
    per_layer_cell = 2 * 256 // 32 * 34
    assert at[32768].kv_bytes == per_layer_cell * (3 * 32768 + 15 * 1024)
    assert {p.n_ctx: p.kv_bytes for p in full.points}[32768] == 18 * 32768 * 2 * 256 * 2
    assert kv_bytes(gemma3(), 32768) == 18 * 32768 * 2 * 256 * 2  # as edgeeval ran it before


def _args(*argv: str) -> rec.RunSettings:
    return run_settings_from_args(
        build_parser().parse_args(["bench", "--n-gpu-layers", "0", *argv])
    )


def test_cache_types_sweep_as_llama_bench_and_reach_the_load_options():
    settings = _args("-ctk", "f16,q8_0", "-ctv", "f16,q4_0", "-fa", "on")
    assert settings.sweep_cache_type_k == ("f16", "q8_0")
    points = expand_sweep(settings, cores_physical=2)
    pairs = [(p.cache_type_k, p.cache_type_v) for p in points]
    assert pairs == [("f16", "f16"), ("f16", "q4_0"), ("q8_0", "f16"), ("q8_0", "q4_0")]
    options = [load_options(settings, p) for p in points]
    assert [(o.type_k, o.type_v) for o in options] == pairs
    assert len({o.load_key for o in options}) == 4  # each type pair is its own load
    assert all(o.flash_attn is True for o in options)


def test_each_knob_is_its_own_resume_key_and_the_defaults_keep_old_keys():
    plain = rec.RunSettings()
    keys = {
        plain.key(),
        rec.RunSettings(cache_type_k="q8_0").key(),
        rec.RunSettings(cache_type_v="q8_0", flash_attn=True).key(),
        rec.RunSettings(swa_full=False).key(),
        rec.RunSettings(flash_attn="auto").key(),
    }
    assert len(keys) == 5
    # a settings dict stored before these knobs existed has the same key
    assert rec.from_dict(rec.RunSettings, {"n_ctx": 2048}).key() == plain.key()
    assert "cache_type_k" not in plain.shown() and "swa_full" not in plain.shown()
    assert rec.RunSettings(cache_type_k="q8_0").shown()["cache_type_k"] == "q8_0"


def test_flash_attention_spellings():
    assert _args("--flash-attn", "auto").flash_attn == "auto"
    assert _args("-fa", "1").flash_attn is True
    assert _args("-fa", "off,on").sweep_flash_attn == (False, True)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-ctk", "q3_k"], ["--cache-type-k", "'q3_k'", "allowed: f32, f16, bf16, q8_0"]),
        (["-ctv", "int8"], ["--cache-type-v", "'int8'", "allowed:"]),
        (["--flash-attn", "maybe"], ["--flash-attn", "'maybe'", "on, off, auto"]),
    ],
)
def test_unknown_values_are_one_line_naming_the_option(capsys, argv, words):
    with pytest.raises(SystemExit):
        _args(*argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert all(w in err for w in words), err


@pytest.mark.parametrize(
    "fields",
    [
        {"cache_type_v": "q8_0"},  # flash attention off (the default)
        {"cache_type_v": "q4_0", "flash_attn": True, "sweep_flash_attn": (True, False)},
        {
            "flash_attn": True,
            "sweep_cache_type_v": ("f16", "q8_0"),
            "sweep_flash_attn": (False, True),
        },
    ],
)
def test_a_quantized_v_cache_without_flash_attention_is_refused_before_loading(fields):
    with pytest.raises(ConfigError) as caught:
        rec.RunSettings(**fields)
    message = str(caught.value)
    assert "--cache-type-v" in message and "--flash-attn on" in message and "\n" not in message


def test_quantized_v_with_flash_attention_on_or_auto_and_quantized_k_alone_are_fine():
    rec.RunSettings(cache_type_k="q4_0", cache_type_v="q4_0", flash_attn=True)
    rec.RunSettings(cache_type_v="q8_0", flash_attn="auto")
    rec.RunSettings(cache_type_k="q8_0")  # llama.cpp quantizes K without flash attention


def test_a_settings_value_llama_cpp_does_not_know_is_refused_too():
    with pytest.raises(ConfigError, match=r"--cache-type-k 'q3_k' .*allowed: f32, f16"):
        rec.RunSettings(cache_type_k="q3_k")
    with pytest.raises(ConfigError, match="--flash-attn 'yes': allowed: on, off, auto"):
        rec.RunSettings(flash_attn="yes")


def test_a_context_above_the_trained_length_is_refused_naming_both():
    check_context(llama(), 8192)
    with pytest.raises(PreflightError) as caught:
        check_context(llama(), 8193, name="m.gguf")
    message = str(caught.value)
    assert "--n-ctx 8193" in message and "m.gguf" in message and "allowed: 1 to 8192" in message
