"""A variant x context-knob point is its own ranking row (issue 23): a sweep of the KV cache
types, flash attention or n_ctx measures each point as its own record (run.speed.knob_points),
the store keeps them all, and the report names each row "<variant> + KV q8_0" with its own peak
memory and accuracy, compared with the others on the items both answered. A run without a knob
sweep keeps its names (tests/test_golden.py holds it byte for byte)."""

from __future__ import annotations

import dataclasses
import json
from collections import namedtuple

import pytest

from edgeeval import pipeline
from edgeeval import records as rec
from edgeeval.catalog.models import load_catalog
from edgeeval.cli.bench import run_settings_from_args
from edgeeval.cli.main import build_parser
from edgeeval.errors import ConfigError
from edgeeval.metrics import binomial_se
from edgeeval.report.paired import PAIRED
from edgeeval.report.render import render_run
from edgeeval.report.summarize import label_knob_points
from edgeeval.run import runner
from edgeeval.run.speed import expand_sweep, knob_points, knob_words
from edgeeval.store import runs as store
from tests.builders import record

N = 200
RIGHT = (-1.0, -2.0, -3.0, -4.0)  # gold 0 has the highest log-likelihood
WRONG = (-4.0, -1.0, -2.0, -3.0)
SWEPT = rec.RunSettings(n_ctx=8192, flash_attn=True, sweep_cache_type_kv=("f16", "q8_0", "q4_0"))


def _args(*argv: str) -> rec.RunSettings:
    return run_settings_from_args(
        build_parser().parse_args(["bench", "--n-gpu-layers", "0", *argv])
    )


def mc_items(right: set[int]) -> list[rec.SampleResult]:
    return [
        rec.SampleResult("t", f"t-{i:04d}", 0, RIGHT if i in right else WRONG, (1,) * 4)
        for i in range(N)
    ]


def point(settings: rec.RunSettings, right: set[int], peak_gb: float) -> rec.ModelRecord:
    acc = len(right) / N
    r = record("q4", peak_gb=peak_gb, acc=acc, n=N, acc_se=binomial_se(acc, N))
    return dataclasses.replace(r, settings=settings)


def test_the_cli_sweeps_k_and_v_together_and_each_point_is_its_own_settings():
    settings = _args("--cache-type", "f16,q8_0,q4_0", "-fa", "on", "--n-ctx", "8192")
    assert settings.sweep_cache_type_kv == ("f16", "q8_0", "q4_0")
    points = knob_points(settings)
    assert [(p.cache_type_k, p.cache_type_v, p.n_ctx) for p in points] == [
        ("f16", "f16", 8192),
        ("q8_0", "q8_0", 8192),
        ("q4_0", "q4_0", 8192),
    ]
    assert all(p.flash_attn is True and not p.sweep_cache_type_kv for p in points)
    assert len({p.key() for p in points}) == 3  # each point is its own record (and resume key)
    # inside one point the worker loads that point's types only
    assert [
        (s.cache_type_k, s.cache_type_v) for s in expand_sweep(points[1], cores_physical=2)
    ] == [("q8_0", "q8_0")]
    assert [knob_words(p, points) for p in points] == ["", " + KV q8_0", " + KV q4_0"]


def test_a_run_without_a_knob_sweep_is_one_point_with_its_own_key():
    plain = _args("--threads", "1,2", "-ctk", "q8_0")  # a speed-only sweep, one knob point
    assert knob_points(plain) == [plain]
    assert knob_words(plain, [plain]) == ""


def test_n_ctx_is_a_sweep_axis():
    settings = _args("--n-ctx", "2048,4096")
    assert (settings.n_ctx, settings.sweep_n_ctx) == (2048, (2048, 4096))
    points = knob_points(settings)
    assert [p.n_ctx for p in points] == [2048, 4096]
    assert [knob_words(p, points) for p in points] == ["", " + n_ctx 4096"]
    with pytest.raises(ConfigError, match="n_ctx.*cannot hold the longest speed test"):
        _args("--n-ctx", "4096,64", "--pp", "128")


def test_k_and_v_together_exclude_the_product_and_need_flash_attention():
    with pytest.raises(ConfigError, match="--cache-type sweeps K and V together"):
        _args("--cache-type", "f16,q8_0", "-ctk", "f16,q4_0", "-fa", "on")
    with pytest.raises(ConfigError, match="needs flash attention"):
        _args("--cache-type", "f16,q8_0")


def test_a_race_refuses_a_knob_sweep_before_anything_runs():
    variants = [load_catalog().get("smollm2-135m-instruct-q4_1")]
    swept = dataclasses.replace(SWEPT, race_confidence=0.95)
    with pytest.raises(ConfigError, match="--race measures each variant at one context"):
        pipeline.bench(variants, swept, progress=lambda _: None)


def test_labels_name_only_the_knobs_that_vary_and_differ_from_the_default():
    points = knob_points(SWEPT)
    labelled = label_knob_points([point(p, set(), 0.5) for p in points])
    # n_ctx 8192 and flash attention are the same for every point: not in the names
    assert [r.variant.name for r in labelled] == ["q4", "q4 + KV q8_0", "q4 + KV q4_0"]
    assert label_knob_points(labelled) == labelled  # labelling twice changes nothing
    plain = [point(rec.RunSettings(n_ctx=8192), set(), 0.5)]
    assert label_knob_points(plain) == plain  # no sweep: the name stays
    mixed = [
        point(rec.RunSettings(cache_type_k="q8_0", flash_attn=fa), set(), 0.5)
        for fa in (False, "auto")
    ]
    assert [r.variant.name for r in label_knob_points(mixed)] == ["q4", "q4 + FA auto"]


# f16 right on items 0..119 (acc .60), q8_0 on 0..107 (.54), q4_0 on 0..99 (.50)
RIGHTS = (set(range(120)), set(range(108)), set(range(100)))
PEAKS = (0.60, 0.55, 0.52)


def save_sweep(root) -> list[rec.ModelRecord]:
    store.write_manifest("r1", {"run_id": "r1"}, root)
    records = [point(p, r, gb) for p, r, gb in zip(knob_points(SWEPT), RIGHTS, PEAKS, strict=True)]
    for r, right in zip(records, RIGHTS, strict=True):
        store.save_record(r, mc_items(right), root)
    return records


def test_the_store_keeps_every_knob_point_of_a_variant(tmp_path):
    save_sweep(tmp_path)
    loaded = store.load_records("r1", tmp_path)
    assert sorted(r.settings.cache_type_k for r in loaded) == ["f16", "q4_0", "q8_0"]


def test_each_knob_point_ranks_as_its_own_row_with_its_memory_and_paired_ses(tmp_path):
    save_sweep(tmp_path)
    _, rows, paths = render_run("r1", root=tmp_path)
    by_name = {r.name: r for r in rows}
    assert set(by_name) == {"q4", "q4 + KV q8_0", "q4 + KV q4_0"}
    assert [by_name[n].peak_rss_gb for n in ("q4", "q4 + KV q8_0", "q4 + KV q4_0")] == [
        pytest.approx(gb) for gb in PEAKS
    ]
    assert by_name["q4 + KV q8_0"].capability == pytest.approx(100 * (0.54 - 0.25) / 0.75)
    row = by_name["q4 + KV q4_0"]
    assert (row.n_ctx, row.type_k, row.type_v, row.flash_attn, row.swa_full) == (
        8192,
        "q4_0",
        "q4_0",
        True,
        True,
    )
    # f16 vs q8_0: 12 discordant items, all f16's, of 200: a paired difference of 6 points of
    # accuracy, 8.00 points of capability (/ 0.75), SE 8/0.75 * sqrt(.06 * .94 / 199)... as
    # stats.paired_difference gives it; the ranking uses it in place of the unpaired SE
    data = json.loads(paths["json"].read_text())
    pairs = {(p["a"], p["b"]): p for p in data["comparisons"]["pairs"]}
    pair = pairs.get(("q4", "q4 + KV q8_0")) or pairs[("q4 + KV q8_0", "q4")]
    assert pair["method"] == PAIRED
    assert abs(pair["diff"]) == pytest.approx(8.0)
    assert pair["se"] == pytest.approx(2.24, abs=0.005)  # as test_paired's a/b pair
    assert pair["se"] < pair["se_unpaired"]
    assert by_name["q4"].paired_se["q4 + KV q8_0"][0] == pytest.approx(pair["se"])
    text = paths["md"].read_text()
    assert "q4 + KV q8_0" in text
    assert "- context: n_ctx 8192, KV cache K f16,q8_0,q4_0 / V f16,q8_0,q4_0" in text


def test_a_knob_sweep_measures_each_point_as_its_own_record(monkeypatch, smollm_path):
    """Through pipeline.bench, without loading a model: the pre-flight refuses every point
    (memory mocked), so each point leaves its own skipped record with its own settings."""
    Memory = namedtuple("Memory", "total available")
    monkeypatch.setattr(runner.psutil, "virtual_memory", lambda: Memory(8 * 10**9, 10**6))
    variant = load_catalog().get("smollm2-135m-instruct-q4_1")
    settings = rec.RunSettings(
        n_ctx=1024, flash_attn=True, sweep_cache_type_kv=("f16", "q8_0"), suite=""
    )
    said: list[str] = []
    outcome = pipeline.bench([variant], settings, progress=said.append, allow_concurrent=True)
    assert sorted(r.settings.cache_type_v for r in outcome.records) == ["f16", "q8_0"]
    assert all(r.status == rec.STATUS_SKIPPED for r in outcome.records)
    assert f"[2/2] {variant.name} + KV q8_0" in said
    assert {r.name for r in outcome.rows} == {variant.name, f"{variant.name} + KV q8_0"}


def test_an_n_ctx_point_above_the_trained_length_is_refused_alone(monkeypatch, smollm_path):
    """SmolLM2-135M was trained at 8192: of --n-ctx 1024,16384 the second point is refused
    before loading, naming --n-ctx and the allowed range; the first is measured as usual (here
    refused by the mocked memory, so nothing loads)."""
    Memory = namedtuple("Memory", "total available")
    monkeypatch.setattr(runner.psutil, "virtual_memory", lambda: Memory(8 * 10**9, 10**6))
    variant = load_catalog().get("smollm2-135m-instruct-q4_1")
    settings = _args("--n-ctx", "1024,16384", "--suite", "")
    outcome = pipeline.bench([variant], settings, progress=lambda _: None, allow_concurrent=True)
    errors = {r.settings.n_ctx: r.error for r in outcome.records}
    assert "--n-ctx 16384 is above" in errors[16384] and "allowed: 1 to 8192" in errors[16384]
    assert "only 0.00 GB is available" in errors[1024]
    assert {r.name for r in outcome.rows} == {f"{variant.name} + n_ctx {n}" for n in (1024, 16384)}


def test_compare_matches_two_runs_point_by_point(tmp_path):
    from edgeeval.report.compare import compare_runs

    for run_id in ("r1", "r2"):
        store.write_manifest(run_id, {"run_id": run_id}, tmp_path)
        for p, right, gb in zip(knob_points(SWEPT), RIGHTS, PEAKS, strict=True):
            store.save_record(
                dataclasses.replace(point(p, right, gb), run_id=run_id), root=tmp_path
            )
    compared = compare_runs("r1", "r2", root=tmp_path)
    assert sorted(v.name for v in compared.variants) == ["q4", "q4 + KV q4_0", "q4 + KV q8_0"]
    peaks = {v.name: next(m for m in v.metrics if m.metric == "peak GB") for v in compared.variants}
    assert peaks["q4 + KV q8_0"].a == pytest.approx(0.55)  # each point against its own point


def test_windowing_is_a_sweep_axis_and_reaches_the_load_options():
    from edgeeval.run.speed import load_options

    settings = _args("--swa-cache", "full,windowed")
    assert (settings.swa_full, settings.sweep_swa_full) == (True, (True, False))
    points = knob_points(settings)
    assert [p.swa_full for p in points] == [True, False]
    assert [knob_words(p, points) for p in points] == ["", " + SWA windowed"]
    windowed = points[1]
    first = expand_sweep(windowed, cores_physical=2)[0]
    assert load_options(windowed, first).swa_full is False
    assert load_options(windowed, first, scoring=True).swa_full is True  # scoring: full-size
    with pytest.raises(SystemExit):
        _args("--swa-cache", "half")


def test_a_profile_may_sweep_the_context_knobs(tmp_path):
    from edgeeval.catalog.profiles import load_profile

    path = tmp_path / "speed.yaml"
    path.write_text(
        "kv: {sweep_cache_type_kv: [f16, q8_0], flash_attn: true, sweep_n_ctx: [2048, 4096],"
        " sweep_swa_full: [true, false]}\n"
    )
    settings = rec.RunSettings(**load_profile("kv", path))
    assert len(knob_points(settings)) == 2 * 2 * 2
