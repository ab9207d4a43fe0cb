"""Flash attention forced on (`-fa on`) where this llama.cpp build's devices cannot run it is
refused in one line before anything loads (engine.doctor.check_flash_attn, over ggml's own
answer per device: engine.backend.flash_attn_support)."""

from __future__ import annotations

import pytest

from edgeeval import pipeline
from edgeeval import records as rec
from edgeeval.catalog.models import load_catalog
from edgeeval.engine.backend import FlashSupport
from edgeeval.engine.doctor import check_flash_attn
from edgeeval.errors import ConfigError


def probe_of(unsupported: set[tuple[str, str, str]], devices=(("CPU", "CPU"), ("CUDA0", "GPU"))):
    """A fake build: every device supports every pair but the (device, K, V) in `unsupported`;
    records the pairs it was asked about."""
    asked: list[tuple[str, str]] = []

    def probe(pairs):
        asked.extend(pairs)
        return [
            FlashSupport(name, kind, k, v, (name, k, v) not in unsupported)
            for k, v in pairs
            for name, kind in devices
        ]

    probe.asked = asked  # type: ignore[attr-defined]
    return probe


def test_forced_on_without_the_op_on_the_gpu_is_one_line_naming_the_option():
    probe = probe_of({("CUDA0", "q4_0", "q4_0")})
    settings = rec.RunSettings(
        flash_attn=True, n_gpu_layers=99, sweep_cache_type_kv=("f16", "q4_0")
    )
    with pytest.raises(ConfigError) as info:
        check_flash_attn(settings, probe)
    text = str(info.value)
    assert "\n" not in text
    assert "-fa on" in text and "CUDA0" in text and "K q4_0 / V q4_0" in text
    assert "allowed here: -fa off, or -fa auto" in text and "--flash-attn" in text
    assert probe.asked == [("f16", "f16"), ("q4_0", "q4_0")]


def test_only_the_devices_that_run_the_layers_count():
    probe = probe_of({("CUDA0", "f16", "f16")})
    check_flash_attn(rec.RunSettings(flash_attn=True, n_gpu_layers=0), probe)  # all on the CPU
    with pytest.raises(ConfigError, match="on CUDA0"):
        check_flash_attn(rec.RunSettings(flash_attn=True, n_gpu_layers=99), probe)
    cpu_only = probe_of({("CPU", "f16", "f16")}, devices=(("CPU", "CPU"),))
    with pytest.raises(ConfigError, match="on CPU"):  # a CPU build: -ngl 99 still runs there
        check_flash_attn(rec.RunSettings(flash_attn=True, n_gpu_layers=99), cpu_only)


def test_auto_off_and_a_build_that_cannot_say_are_not_refused():
    probe = probe_of({("CPU", "f16", "f16"), ("CUDA0", "f16", "f16")})
    check_flash_attn(rec.RunSettings(flash_attn="auto"), probe)
    check_flash_attn(rec.RunSettings(flash_attn=False), probe)
    assert probe.asked == []  # not even asked unless forced on
    check_flash_attn(rec.RunSettings(flash_attn=True), lambda pairs: None)


def test_bench_refuses_before_anything_is_written(monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "flash_attn_support", probe_of({("CPU", "f16", "f16")}))
    variant = load_catalog().get("smollm2-135m-instruct-q4_1")
    with pytest.raises(ConfigError, match="-fa on"):
        pipeline.bench([variant], rec.RunSettings(flash_attn=True, n_gpu_layers=0, suite=""))
    assert not (tmp_path / "reports").exists()


@pytest.mark.llama
def test_the_bundled_cpu_build_answers_for_each_device_and_pair():
    from edgeeval.engine.backend import device_info, flash_attn_support

    answers = flash_attn_support([("f16", "f16"), ("q8_0", "q4_0")])
    assert answers is not None
    names = [d["name"] for d in device_info()]
    assert [(a.device, a.type_k, a.type_v) for a in answers] == [
        (n, k, v) for k, v in (("f16", "f16"), ("q8_0", "q4_0")) for n in names
    ]
    cpu = [a for a in answers if a.kind == "CPU"]
    assert cpu and all(a.supported for a in cpu)  # ggml's CPU backend runs flash attention
