"""Runtime profiles (`--as`): each profile's values reach the worker's LoadOptions and, from
there, the llama_context_params llama.cpp is given; options on the command line override them;
the run's settings (and so the report) name the profile."""

from __future__ import annotations

import dataclasses

import pytest

from edgeeval import contracts as ct
from edgeeval import records as rec
from edgeeval.catalog.runtimes import PROFILES, runtime_profile
from edgeeval.cli.bench import run_settings_from_args
from edgeeval.cli.main import build_parser
from edgeeval.engine.backend import context_params, kv_type_id
from edgeeval.errors import ConfigError
from edgeeval.run import worker
from tests.test_worker import _root, fake_loads, tiny_gguf  # noqa: F401 (fixtures)


def _settings(*argv: str) -> rec.RunSettings:
    return run_settings_from_args(build_parser().parse_args(["bench", *argv]))


def test_every_profile_names_its_version_and_source():
    assert set(PROFILES) == {"ollama", "llama-server", "lmstudio", "llama-cpp-python"}
    for profile in PROFILES.values():
        assert profile.version and profile.source
        rec.RunSettings(**{**profile.settings(), "n_gpu_layers": 0})  # settings that validate


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_profile_reaches_the_workers_load_options_and_llama_cpp(
    name,
    tmp_path,
    tiny_gguf,  # noqa: F811
    fake_loads,  # noqa: F811 (the imported fixtures)
):
    profile = PROFILES[name]
    settings = _settings("--as", name, "--n-gpu-layers", "0")
    assert settings.runtime == name
    assert "runtime" in settings.shown()  # the report's settings name the profile
    fast = {"repetitions": 1, "pp_tokens": 8, "tg_tokens": 2, "task_limit": 1, "eval_batch": 1}
    run = dataclasses.replace(settings, suite="t", **fast)
    spec = ct.WorkerSpec(str(tiny_gguf), str(_root(tmp_path, "arith")), run, cores_physical=2)
    result = worker.measure(spec)
    assert result.error == ""
    options = fake_loads[0]  # what the worker loaded the model with
    want_ctx = profile.n_ctx or 2048  # llama-server: the trained length, left to --n-ctx
    assert options.n_ctx == want_ctx
    assert (options.flash_attn, options.type_k, options.type_v, options.swa_full) == (
        profile.flash_attn,
        profile.cache_type_k,
        profile.cache_type_v,
        profile.swa_full,
    )
    assert (options.n_batch, options.n_ubatch) == (profile.n_batch, profile.n_ubatch)
    import llama_cpp

    params = context_params(llama_cpp, options)
    flash = {True: 1, False: 0, "auto": -1}[profile.flash_attn]
    assert (params.n_ctx, params.flash_attn_type, params.swa_full) == (
        want_ctx,
        flash,
        profile.swa_full,
    )
    assert (params.type_k, params.type_v) == (kv_type_id("f16"), kv_type_id("f16"))
    assert params.n_batch == min(want_ctx, profile.n_batch) and params.n_ubatch == 512
    # the accuracy phase scores with a full-size SWA cache (a windowed one loses reused
    # prefixes): reloaded only where the profile windows it, with the profile's other values
    scored = fake_loads[-1]
    assert scored.swa_full is True and len(fake_loads) == (1 if profile.swa_full else 2)
    assert scored == dataclasses.replace(options, swa_full=True)
    # the KV layout the worker recorded is the profile's (windowed or full-size)
    assert result.kv_cache is not None and result.kv_cache.swa_full is profile.swa_full


def test_options_given_override_the_profile():
    settings = _settings("--as", "ollama", "-ctk", "q8_0", "-ctv", "q8_0", "--n-ctx", "8192")
    assert (settings.cache_type_k, settings.cache_type_v, settings.n_ctx) == ("q8_0",) * 2 + (8192,)
    assert settings.flash_attn == "auto" and settings.swa_full is False  # still ollama's
    assert _settings("--as", "llama-server", "--swa-full").swa_full is True


def test_an_unknown_profile_is_one_line_naming_the_allowed_ones(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--as", "vllm"])
    err = capsys.readouterr().err
    assert "--as" in err and "llama-server" in err and "ollama" in err
    with pytest.raises(ConfigError, match="allowed: ollama|allowed: llama-server"):
        runtime_profile("vllm")


def test_the_profile_is_part_of_the_resume_key_and_the_default_key_is_unchanged():
    plain = rec.RunSettings()
    assert plain.key() == rec.RunSettings(runtime="", cache_type_k="f16").key()
    ollama = rec.RunSettings(**PROFILES["ollama"].settings())
    assert ollama.key() != plain.key()
