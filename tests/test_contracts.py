"""What crosses into child processes round-trips exactly and is read strictly; run settings are
checked once, where they are built; threads and micro-batches are resolved in one place."""

from __future__ import annotations

import json

import pytest

from edgeeval import contracts as ct
from edgeeval import records as rec
from edgeeval.engine.backend import LoadOptions
from edgeeval.errors import ConfigError
from edgeeval.run.speed import expand_sweep, load_options
from tests.builders import speed

SETTINGS = rec.RunSettings(sweep_threads=(1, 2), depths=(0, 64), task_limit=3, suite="mc")


def _worker_result() -> ct.WorkerResult:
    return ct.WorkerResult(
        load_s=0.5,
        speed=(speed("pp128", [100.0, 110.0], n_threads=2),),
        ttft=(rec.LatencyResult("ttft64", 64, (1000, 2000), 0.0015, 0.0005),),
        tasks=(rec.TaskScore("t", 1, "math", 0.25, 2, 0.5, 0.35, 0.5, 0.35, 1.0),),
        samples=(rec.SampleResult("t", "t-0", 1, (-1.5, -0.5), (3, 4)),),
        gen_samples=(rec.GenSampleResult("g", "g-0", "generate", "ok", "Q?\ud800", "42"),),
        n_ctx_train=512,
        n_params=1000,
        weights_bytes=4000,
        kv_cache_bytes=2048,
        error="tasks: ValueError: boom",
        failed_phase=ct.PHASE_TASKS,
    )


@pytest.mark.parametrize(
    "value",
    [
        ct.WorkerSpec("/m.gguf", "/root", SETTINGS, cores_physical=8, model_kind="instruct"),
        _worker_result(),
        ct.WorkerResult(),
        ct.FidelitySpec("variant", "/m.gguf", "/w", 512, 4, 2, 0, out="/w/s.npz"),
        ct.FidelityPassResult(n_vocab=300, n_chunks=2, n_corpus_tokens=1100),
        ct.QuantizeSpec(
            "/a.gguf", "/b.gguf", 15, (("ffn_down", 8), ("attn_v", 12)), None, 8, False, 2
        ),
        ct.QuantizeResult(log="done"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_every_contract_round_trips_through_a_file_exactly(tmp_path, value):
    path = tmp_path / "c.json"
    ct.write_contract(path, value)
    back = ct.read_contract(type(value), path)
    assert back == value
    assert not (tmp_path / "c.json.tmp").exists()


def test_nested_tuples_come_back_as_tuples_of_the_right_types(tmp_path):
    spec = ct.QuantizeSpec("a", "b", 1, (("x", 2),), 3, None, True, 0)
    ct.write_contract(tmp_path / "q.json", spec)
    back = ct.read_contract(ct.QuantizeSpec, tmp_path / "q.json")
    assert back.tensor_overrides == (("x", 2),) and type(back.tensor_overrides[0]) is tuple
    result = _worker_result()
    ct.write_contract(tmp_path / "r.json", result)
    again = ct.read_contract(ct.WorkerResult, tmp_path / "r.json")
    assert isinstance(again.speed[0], rec.SpeedResult) and again.speed[0].samples_ts == (
        100.0,
        110.0,
    )


def test_a_misspelled_or_missing_key_is_an_error_not_a_silent_default(tmp_path):
    path = tmp_path / "spec.json"
    data = json.loads(rec.to_json(ct.WorkerSpec("/m", "/r", SETTINGS, cores_physical=4)))
    data["model_kindd"] = data.pop("model_kind")
    path.write_text(json.dumps(data))
    with pytest.raises(
        ValueError, match=r"unknown keys \['model_kindd'\].*missing keys \['model_kind'\]"
    ):
        ct.read_contract(ct.WorkerSpec, path)
    nested = json.loads(rec.to_json(_worker_result()))
    nested["speed"][0]["avg_tss"] = nested["speed"][0].pop("avg_ts")
    path.write_text(json.dumps(nested))
    with pytest.raises(ValueError, match="SpeedResult: unknown keys"):
        ct.read_contract(ct.WorkerResult, path)
    # stored records stay lenient: older files with fewer fields still load
    assert rec.from_dict(rec.RunSettings, {"n_ctx": 256}).n_ctx == 256


def test_a_fidelity_spec_must_say_its_role_and_where_a_variant_writes():
    with pytest.raises(ValueError, match="role"):
        ct.FidelitySpec("refrence", "/m", "/w", 512, 4, 2, 0)
    with pytest.raises(ValueError, match="out"):
        ct.FidelitySpec("variant", "/m", "/w", 512, 4, 2, 0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"repetitions": 0}, "repetitions"),
        ({"task_limit": 0}, "task_limit"),
        ({"n_ctx": 0}, "n_ctx"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": -5.0}, "timeout_s"),
        ({"n_batch": 0}, "n_batch"),
        ({"n_ubatch": 0}, "n_ubatch"),
        ({"n_threads": -1}, "n_threads"),
        ({"pp_tokens": 0}, "pp_tokens"),
        ({"tg_tokens": 0}, "tg_tokens"),
        ({"sweep_threads": (2, -1)}, "sweep_threads"),
        ({"sweep_n_batch": (0,)}, "sweep_n_batch"),
        ({"depths": (-1,)}, "depths"),
        ({"n_gpu_layers": -2}, "n_gpu_layers"),
        ({"n_ctx": 256, "depths": (0, 200), "pp_tokens": 128}, "n_ctx"),
    ],
)
def test_nonsense_settings_are_refused_naming_the_field(changes, field):
    with pytest.raises(ConfigError, match=f"key '{field}'") as info:
        rec.RunSettings(**changes)
    assert info.value.key == field


def test_sensible_edge_settings_are_accepted():
    rec.RunSettings(repetitions=1, task_limit=1, n_threads=0, n_gpu_layers=-1, depths=())
    rec.RunSettings(n_ctx=160, pp_tokens=128, tg_tokens=32, pp_tg=True)  # exactly fits


def test_the_micro_batch_never_exceeds_the_batch_in_settings_and_load_options():
    assert rec.RunSettings(n_batch=256).n_ubatch == 256
    assert rec.RunSettings(n_batch=256).key() == rec.RunSettings(n_batch=256, n_ubatch=256).key()
    assert LoadOptions(n_batch=64, n_ubatch=512).n_ubatch == 64
    # a swept batch below the run's micro-batch lowers it for that point only
    settings = rec.RunSettings(sweep_n_batch=(512, 32))
    options = [load_options(settings, p) for p in expand_sweep(settings, cores_physical=2)]
    assert [(o.n_batch, o.n_ubatch) for o in options] == [(512, 512), (32, 32)]


def test_threads_zero_means_the_hosts_physical_cores_everywhere():
    assert rec.resolve_threads(0, 6) == 6 and rec.resolve_threads(3, 6) == 3
    settings = rec.RunSettings(sweep_threads=(0, 1))
    assert [p.n_threads for p in expand_sweep(settings, cores_physical=6)] == [6, 1]


def test_the_load_key_ignores_threads_and_nothing_else():
    base = LoadOptions(n_ctx=512, n_threads=1)
    assert base.load_key == LoadOptions(n_ctx=512, n_threads=8).load_key
    for change in ({"n_ctx": 256}, {"n_batch": 64}, {"flash_attn": True}, {"use_mmap": False}):
        assert LoadOptions(**{"n_ctx": 512, "n_threads": 1, **change}).load_key != base.load_key
