"""`edgeeval plan`: headers read without downloading, the calibration from earlier runs, what
fits a budget, bad input, and the report's predicted-vs-measured section."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from edgeeval import metrics
from edgeeval import plan as planmod
from edgeeval.catalog.models import Source, Variant
from edgeeval.fetch import header as hdr
from edgeeval.gguf.check import check_gguf
from edgeeval.report.planned import planned_markdown
from edgeeval.store import plans
from tests import builders
from tests.fakehub import fake_hub  # noqa: F401

MACHINE = ("box", "cpu")
BW = 10e9


def write_gguf(path, *, ctx: int = 4096, big_meta: int = 0, rows: int = 64):
    """A small llama GGUF: 2 layers, 4 heads (2 KV heads) of 16, trained context `ctx`; a
    metadata string of `big_meta` bytes makes the header that long."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_context_length(ctx)
    if big_meta:
        writer.add_string("test.padding", "x" * big_meta)
    writer.add_tensor("w1", np.ones((rows, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def variant(name: str, path=None, quant: str = "Q4_K_M") -> Variant:
    source = Source(kind="local", path=str(path)) if path else Source(kind="pypi")
    return Variant(name, "llama", name, quant, source, "mit", "instruct")


def measured(name: str, weights: int, tg: float, *, pp: float | None = None, n_params: int = 10**8):
    """A stored record of this machine: weights bytes read per token at `tg` t/s."""
    speeds = [builders.speed("tg32", [tg, tg])]
    if pp:
        speeds.insert(0, builders.speed("pp128", [pp, pp]))
    r = builders.record(
        name,
        peak_gb=(weights + 200_000_000) / 1e9,
        acc=0.5,
        speeds=speeds,
        host_info=builders.host(
            "h1", MACHINE[0], cpu_model=MACHINE[1], mem_bandwidth_bytes_per_s=BW
        ),
    )
    return dataclasses.replace(r, weights_bytes=weights, n_params=n_params, kv_cache_bytes=0)


# --- the maths ------------------------------------------------------------------------------


def test_a_power_law_fit_and_when_there_is_none():
    c, b = metrics.fit_power_law([(1e8, 0.5), (4e8, 1.0), (1.6e9, 2.0)])
    assert b == pytest.approx(0.5) and c * (1e8) ** 0.5 == pytest.approx(0.5)
    assert metrics.fit_power_law([(1e8, 1.0)]) is None
    assert metrics.fit_power_law([(1e8, 1.0), (1.1e8, 1.2)]) is None  # sizes too close
    assert metrics.fit_power_law([(1e8, 0.0), (5e8, 1.0)]) is None


def at_efficiency(name: str, weights: int, eff: float) -> object:
    """A stored record whose tg32 reaches `eff` of this machine's roofline."""
    ceiling = BW / (weights + 0)  # the tg32 roofline's KV is 0 here: kv_cache_bytes = 0
    return measured(name, weights, eff * ceiling)


def test_calibration_fits_efficiency_to_size_and_caps_it():
    # efficiency = 0.5 at 100 MB, 1.0 at 400 MB: exponent 0.5
    stored = [at_efficiency("a", 100_000_000, 0.5), at_efficiency("b", 400_000_000, 1.0)]
    cal = planmod.calibrate(stored, None)
    assert cal.bandwidth_bytes_per_s == BW
    assert cal.fit is not None and cal.fit[1] == pytest.approx(0.5)
    assert cal.efficiency_at(225_000_000) == pytest.approx(0.75)  # between the two
    assert cal.efficiency_at(25_000_000) == pytest.approx(0.25)  # a smaller model: less
    assert cal.efficiency_at(10**10) == pytest.approx(1.0)  # larger: the best seen, no more
    assert "fit over the fastest tg test of 2 variants" in cal.efficiency_source


def test_a_fit_that_makes_larger_models_faster_per_byte_is_not_used():
    stored = [at_efficiency("a", 100_000_000, 2.0), at_efficiency("b", 400_000_000, 0.1)]
    cal = planmod.calibrate(stored, None)
    assert cal.fit is None and cal.efficiency_at(10**9) == pytest.approx(1.05)  # the median


def test_calibration_keeps_each_variants_fastest_test():
    fast = measured("a", 100_000_000, 50.0)
    slow = dataclasses.replace(measured("a", 100_000_000, 5.0), run_id="r2")  # a busy machine
    cal = planmod.calibrate([slow, fast], None)
    assert cal.efficiency == pytest.approx(50.0 * 1e8 / BW)


def test_without_earlier_runs_the_default_is_stated():
    cal = planmod.calibrate([], 30e9)
    assert cal.efficiency == metrics.DEFAULT_TG_EFFICIENCY == 0.55
    assert "default 0.55" in cal.efficiency_source and cal.flops_per_s == {}
    assert cal.overhead_bytes == planmod.DEFAULT_OVERHEAD_BYTES
    with pytest.raises(planmod.PlanInputError, match="bandwidth is unknown"):
        planmod.calibrate([], None)


def test_prompt_speed_is_calibrated_per_quant_type():
    stored = [
        measured("a", 10**8, 50, pp=100, n_params=10**8),  # 20 GFLOP/s, Q4_K_M
        dataclasses.replace(
            measured("b", 2 * 10**8, 40, pp=50, n_params=10**8),
            variant=dataclasses.replace(
                builders.record("b", peak_gb=1, acc=0.5).variant, quant="Q8_0"
            ),
        ),
    ]
    cal = planmod.calibrate(stored, None)
    assert cal.flops_per_s["Q4_K_M"] == pytest.approx(2e10)
    assert cal.flops_per_s["Q8_0"] == pytest.approx(1e10)


# --- plan over real headers -----------------------------------------------------------------


def run_plan(variants, stored=(), **kw):
    kw.setdefault("budget_gb", 1.0)
    kw.setdefault("n_ctx", 1024)
    return planmod.plan(variants, stored=list(stored), bandwidth=BW, machine=MACHINE, **kw)


def test_plan_predicts_from_the_header_and_refuses_what_does_not_fit(tmp_path):
    small = write_gguf(tmp_path / "small.gguf")
    big = write_gguf(tmp_path / "big.gguf", rows=64 * 1024)  # 16 MiB of weights
    rows, cal = run_plan(
        [variant("big", big), variant("small", small)], budget_gb=0.316, n_ctx=1024
    )
    by = {r.variant.name: r for r in rows}
    weights = check_gguf(small).data_bytes
    p = by["small"].prediction
    assert p.weights_bytes == weights and by["small"].header_source == "local file"
    # KV: 2 layers * 1024 cells * 2 KV heads * (16 + 16) values * 2 bytes (F16)
    assert p.kv_bytes == 2 * 1024 * 2 * 32 * 2
    assert p.peak_bytes == weights + p.kv_bytes + planmod.DEFAULT_OVERHEAD_BYTES
    assert p.tg_ts == pytest.approx(0.55 * BW / weights)  # no earlier run: llmfit's default
    assert p.pp_ts is None  # nothing measured the prompt speed here
    assert p.fits
    q = by["big"].prediction
    assert q.peak_bytes > 0.316e9 and not q.fits  # refused: predicted peak over the budget
    assert [r.variant.name for r in rows] == ["small", "big"]  # fitting ones first


def test_a_context_above_the_trained_length_is_refused_naming_the_option(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", ctx=2048)
    (row,), _ = run_plan([variant("m", path)], n_ctx=4096)
    assert row.refused == "--ctx 4096 is above its trained context length 2048 (allowed: 1 to 2048)"
    assert not row.prediction.fits


@pytest.mark.parametrize(
    ("budget", "ctx", "message"),
    [
        (0, 2048, "--budget-gb 0: the budget must be more than 0 GB"),
        (-2, 2048, "--budget-gb -2: the budget must be more than 0 GB"),
        (4, 0, "--ctx 0: the context must be at least 1 token"),
    ],
)
def test_bad_budget_or_context_is_one_line(budget, ctx, message):
    with pytest.raises(planmod.PlanInputError) as err:
        run_plan([], budget_gb=budget, n_ctx=ctx)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert err.value.exit_code == 2


def test_a_variant_already_measured_is_predicted_from_the_others_only(tmp_path):
    path = write_gguf(tmp_path / "m.gguf")
    stored = [
        measured("m", 10**8, 1000.0),  # its own (absurd) measurement must not be used
        measured("o", 10**8, 40.0),
    ]
    (row,), cal = run_plan([variant("m", path)], stored)
    assert row.prediction.efficiency == pytest.approx(40.0 * 1e8 / BW)
    assert cal.efficiency != row.prediction.efficiency  # the whole-store figure used both


def test_an_unfetched_variant_says_why_there_is_no_figure():
    (row,), _ = run_plan([variant("nowhere")])
    assert row.prediction is None and "not fetched" in row.header_source


# --- the Hub header by byte ranges ----------------------------------------------------------


def test_remote_header_reads_only_the_header(fake_hub, tmp_path):  # noqa: F811
    path = write_gguf(tmp_path / "r.gguf", big_meta=1_500_000, rows=16 * 1024)  # 4 MiB tensor
    content = path.read_bytes()
    fake_hub.add_file("o/r", "r-Q4_K_M.gguf", content)
    got = hdr.remote_header("o/r", "r-Q4_K_M.gguf")
    local = check_gguf(path)
    assert got.summary.metadata == local.metadata
    assert got.summary.metadata["test.padding"] == "x" * 1_500_000
    assert got.summary.data_bytes == local.data_bytes and got.summary.n_params == local.n_params
    assert got.bytes_read == 2 * hdr.CHUNK_BYTES < len(content)  # two ranges, not the file
    assert got.source == "Hub header"


def test_a_hub_catalog_variant_is_planned_from_its_remote_header(fake_hub, tmp_path):  # noqa: F811
    path = write_gguf(tmp_path / "r.gguf")
    fake_hub.add_file("o/r", "r.gguf", path.read_bytes())
    v = Variant(
        "r", "llama", "r", "F32", Source(kind="hub", repo_id="o/r", filename="r.gguf"), "", "base"
    )
    (row,), _ = run_plan([v])
    size_kib = round(path.stat().st_size / 1024)  # a small file: all of it, in one range
    assert row.prediction is not None and row.header_source == f"Hub header ({size_kib} KiB read)"
    assert row.prediction.weights_bytes == check_gguf(path).data_bytes


def test_a_missing_hub_file_is_a_reason_not_a_crash(fake_hub):  # noqa: F811
    v = Variant(
        "r",
        "llama",
        "r",
        "F32",
        Source(kind="hub", repo_id="o/none", filename="x.gguf"),
        "",
        "base",
    )
    (row,), _ = run_plan([v])
    assert row.prediction is None and "HTTP 404" in row.header_source


def test_a_header_longer_than_the_limit_is_refused():
    stream = hdr.RangedFile(lambda a, b: (b"\0" * (b - a + 1), 10**9), limit=2 * hdr.CHUNK_BYTES)
    with pytest.raises(Exception, match="header is longer than 2 MiB"):
        stream.read(3 * hdr.CHUNK_BYTES)


# --- kept predictions and the report --------------------------------------------------------


def prediction(name: str, made_at: str, tg: float = 50.0) -> plans.Prediction:
    return plans.Prediction(
        made_at=made_at, hostname=MACHINE[0], cpu_model=MACHINE[1], variant=name, n_ctx=2048,
        weights_bytes=10**8, kv_bytes=10**7, peak_bytes=4 * 10**8, budget_bytes=10**9, fits=True,
        tg_ts=tg, tg_full_ctx_ts=tg - 5, pp_ts=200.0, efficiency=1.0,
        efficiency_source="x", bandwidth_bytes_per_s=BW,
    )  # fmt: skip


def test_predictions_round_trip_and_match_the_newest_before_the_measurement(tmp_path):
    plans.append_predictions(
        [
            prediction("m", "2025-12-31T00:00:00+0000", 30.0),
            prediction("m", "2026-01-01T00:00:00+0000", 44.0),
        ],
        tmp_path,
    )
    plans.append_predictions([prediction("m", "2026-02-01T00:00:00+0000", 99.0)], tmp_path)
    (tmp_path / plans.PLANS_FILE).open("a").write("not json\n")
    kept = plans.read_predictions(tmp_path)
    assert [p.tg_ts for p in kept] == [30.0, 44.0, 99.0]  # the bad line skipped
    record = measured("m", 10**8, 40.0)  # measured 2026-01-01T00:00:00, after the second plan
    assert plans.prediction_for(record, kept).tg_ts == 44.0
    other_machine = dataclasses.replace(record, host=builders.host("h2", "elsewhere"))
    assert plans.prediction_for(other_machine, kept) is None


def test_report_shows_how_far_the_prediction_was_off():
    record = measured("m", 10**8, 40.0, pp=250.0)
    text = "\n".join(planned_markdown([record], [prediction("m", "2025-12-31T00:00:00+0000")]))
    assert "## Predicted before download" in text
    assert "| 50.0 / 40.0 (+25%) | 200 / 250 (-20%) |" in text
    assert planned_markdown([record], []) == []


def test_the_cli_refuses_a_zero_budget_in_one_line(capsys):
    from edgeeval.cli.main import main

    assert main(["plan", "--budget-gb", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "edgeeval: error: --budget-gb 0: the budget must be more than 0 GB (e.g. 8)"


def test_the_cli_lists_a_local_model_and_keeps_the_prediction(tmp_path, capsys, monkeypatch):
    from edgeeval.cli.main import main

    monkeypatch.setattr("edgeeval.cli.plan._bandwidth", lambda stored: BW)
    path = write_gguf(tmp_path / "mine.gguf")
    out_dir = tmp_path / "reports"
    assert (
        main(
            [
                "plan",
                str(path),
                "--budget-gb",
                "1",
                "--ctx",
                "512",
                "--output",
                str(out_dir),
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    (entry,) = data["variants"]
    assert entry["prediction"]["fits"] and entry["header"] == "local file"
    assert [p.variant for p in plans.read_predictions(out_dir)] == [entry["variant"]]
    assert (
        main(["plan", str(path), "--budget-gb", "1", "--ctx", "8192", "--output", str(out_dir)])
        == 2
    )
    assert (
        "--ctx 8192 is above its trained context length 4096 (allowed: 1 to 4096)"
        in capsys.readouterr().err
    )


def test_an_hf_spec_is_planned_without_downloading_it(fake_hub, tmp_path):  # noqa: F811
    from edgeeval import settings

    path = write_gguf(tmp_path / "r.gguf", rows=16 * 1024)
    fake_hub.add_file("o/r", "m-Q4_K_M.gguf", path.read_bytes())
    fake_hub.add_file("o/r", "m-Q8_0.gguf", path.read_bytes())
    v = planmod.hub_spec_variant("hf:o/r:Q4_K_M")
    assert (v.source.repo_id, v.source.filename) == ("o/r", "m-Q4_K_M.gguf")
    (row,), _ = run_plan([v])
    assert row.prediction is not None and row.header_source.startswith("Hub header")
    assert not any(settings.hf_hub_cache().rglob("*.gguf"))  # nothing downloaded
