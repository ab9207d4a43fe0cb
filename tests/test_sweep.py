import pytest

from edgeeval.catalog.profiles import load_profile
from edgeeval.cli.bench import run_settings_from_args
from edgeeval.cli.main import build_parser
from edgeeval.errors import ConfigError, UnknownNameError
from edgeeval.records import RunSettings
from edgeeval.run.speed import expand_sweep, load_options, speed_tests_for


def test_sweep_is_a_cartesian_product_grouped_by_model_load():
    settings = RunSettings(sweep_threads=(1, 2), sweep_n_gpu_layers=(0, 99), depths=(0, 256))
    points = expand_sweep(settings, cores_physical=8)
    assert len(points) == 8
    # all points of one load configuration are adjacent, so each configuration loads once
    keys = [load_options(settings, p).load_key for p in points]
    assert keys == sorted(keys, key=keys.index)
    assert len({k for k in keys}) == 2
    assert (points[0].n_threads, points[0].n_gpu_layers, points[0].n_depth) == (1, 0, 0)
    assert {(p.n_threads, p.n_depth) for p in points} == {(1, 0), (1, 256), (2, 0), (2, 256)}


def test_empty_sweep_is_the_single_configured_point_with_default_threads():
    points = expand_sweep(RunSettings(n_threads=0, n_batch=256), cores_physical=6)
    assert [(p.n_threads, p.n_batch, p.n_depth) for p in points] == [(6, 256, 0)]


def test_tests_for_names_like_llama_bench():
    names = [
        t.name
        for t in speed_tests_for(RunSettings(pp_tokens=512, tg_tokens=128, pp_tg=True), depth=1024)
    ]
    assert names == ["pp512 @ d1024", "tg128 @ d1024", "pp512+tg128 @ d1024"]


def _settings(*argv):
    return run_settings_from_args(build_parser().parse_args(["bench", *argv]))


def test_cli_lists_become_sweeps_and_the_first_value_is_primary():
    s = _settings(
        "--threads",
        "2,1",
        "--n-gpu-layers",
        "99",
        "--flash-attn",
        "0,1",
        "--depth",
        "0,512",
        "--reps",
        "3",
    )
    assert s.n_threads == 2 and s.sweep_threads == (2, 1)
    assert s.n_gpu_layers == 99 and s.sweep_n_gpu_layers == ()
    assert s.flash_attn is False and s.sweep_flash_attn == (False, True)
    assert s.depths == (0, 512) and s.repetitions == 3


def test_profile_values_are_overridden_by_explicit_options():
    s = _settings("--profile", "threads-sweep", "--reps", "7")
    assert s.sweep_threads == (1, 2, 4, 8) and s.pp_tg is True
    assert s.repetitions == 7


def test_the_settings_key_changes_with_any_measured_setting():
    base = RunSettings()
    # the key stored runs were saved under (--resume and the by-host view match on it), as
    # computed in another process and by older code: it must not change by accident
    assert base.key() == "eb3870389e6d58ce"
    assert base.key() != RunSettings(sweep_threads=(1, 2)).key()
    assert base.key() == RunSettings(timeout_s=5).key()  # the timeout changes no number


def test_profile_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "speed.yaml"
    path.write_text("p:\n  sweep_thread: [1, 2]\nq:\n  depths: 5\nr:\n  repetitions: many\n")
    with pytest.raises(
        ConfigError, match="key 'sweep_thread': unknown setting; did you mean 'sweep_threads'"
    ) as info:
        load_profile("p", path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="key 'depths': must be a non-empty list"):
        load_profile("q", path)
    with pytest.raises(ConfigError, match="key 'repetitions': must be of type int"):
        load_profile("r", path)
    with pytest.raises(UnknownNameError, match="did you mean 'p'"):
        load_profile("pp", path)
