"""FP8 E4M3, emulated (edgeeval.quant.fp8): the rounding against ml_dtypes and against the
format's own table, the three scalings, saturation, recipes and plans, and real builds of a
tiny F16 model that llama.cpp loads (its KLD against the 16-bit source)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgeeval import records as rec
from edgeeval.catalog.models import load_catalog
from edgeeval.errors import ConfigError, EdgeevalError
from edgeeval.quant import build as q
from edgeeval.quant import fp8
from edgeeval.quant.recipes import Tensor, parse_recipe, plan_build
from tests.test_quantize import tiny_catalog, write_tiny_llama

BLOCK = fp8.Scaling("block", (128, 128))
CHANNEL = fp8.Scaling("channel")
TENSOR = fp8.Scaling("tensor")


def _all_f16() -> np.ndarray:
    return np.arange(2**16, dtype=np.uint16).view(np.float16)


def _e4m3_table() -> np.ndarray:
    """The 254 finite E4M3fn values decoded from their bits (sign, 4 exponent bits with bias 7,
    3 mantissa bits; exponent 0 is subnormal; 0x7F and 0xFF are NaN), independent of fp8.py."""
    values = []
    for code in range(256):
        sign, exp, man = code >> 7, (code >> 3) & 0xF, code & 0x7
        if exp == 0xF and man == 0x7:
            continue  # NaN
        mag = man / 8 * 2.0**-6 if exp == 0 else (1 + man / 8) * 2.0 ** (exp - 7)
        values.append(-mag if sign else mag)
    return np.array(values, dtype=np.float64)


# --- rounding ---


def test_rounding_equals_ml_dtypes_on_every_float16_input():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = _all_f16()
    ours = fp8.round_e4m3(x)
    finite = np.isfinite(x)
    # ml_dtypes gives NaN beyond 464 (no infinities); edgeeval saturates, so clip first
    ref = np.clip(x[finite].astype(np.float32), -448, 448).astype(ml_dtypes.float8_e4m3fn)
    assert np.array_equal(  # bit for bit, signed zeros included
        ours[finite].view(np.uint32), ref.astype(np.float32).view(np.uint32)
    )
    assert np.isnan(ours[np.isnan(x)]).all()
    assert ours[np.isinf(x)].tolist() == [448.0, -448.0]
    # and the saturation is real: ml_dtypes' plain cast makes 500 NaN, edgeeval 448
    assert np.isnan(np.float32(500).astype(ml_dtypes.float8_e4m3fn).astype(np.float32))
    assert fp8.round_e4m3(np.array([500.0, -1e6], np.float32)).tolist() == [448.0, -448.0]


def test_rounding_keeps_every_e4m3_value_and_breaks_ties_to_even():
    table = np.unique(_e4m3_table())  # -0.0 and 0.0 collapse: 253 values
    assert len(table) == 253 and table.max() == 448 and table[table > 0].min() == 2.0**-9
    assert np.array_equal(fp8.round_e4m3(table), table.astype(np.float32))
    # every midpoint between neighbours goes to the one with an even mantissa (code)
    pos = np.sort(_e4m3_table()[_e4m3_table() >= 0])
    pos = np.unique(pos)
    codes = {v: i for i, v in enumerate(pos)}  # positive codes are consecutive integers
    mids = (pos[:-1] + pos[1:]) / 2
    got = fp8.round_e4m3(mids.astype(np.float32))
    want = [lo if codes[lo] % 2 == 0 else hi for lo, hi in zip(pos[:-1], pos[1:], strict=True)]
    assert got.tolist() == want
    nudged = fp8.round_e4m3(np.nextafter(mids.astype(np.float32), np.float32(np.inf)))
    assert nudged.tolist() == pos[1:].tolist()  # just above a midpoint: up
    # below half the smallest subnormal: zero; the subnormal steps are 2^-9
    assert fp8.round_e4m3(np.array([2.0**-10, 2.0**-10 * 1.01, 3 * 2.0**-9])).tolist() == [
        0.0,
        2.0**-9,
        3 * 2.0**-9,
    ]


def _reference(x: np.ndarray, scaling: fp8.Scaling) -> np.ndarray:
    """FP8 through ml_dtypes' cast, with scales computed group by group in plain loops."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    out = np.empty_like(x, dtype=np.float32)
    rows, cols = x.shape
    if scaling.kind == "tensor":
        groups = [(slice(None), slice(None))]
    elif scaling.kind == "channel":
        groups = [(slice(r, r + 1), slice(None)) for r in range(rows)]
    else:
        br, bc = scaling.block
        groups = [
            (slice(r, r + br), slice(c, c + bc))
            for r in range(0, rows, br)
            for c in range(0, cols, bc)
        ]
    for group in groups:
        part = x[group].astype(np.float32)
        amax = np.float32(np.abs(part).max())
        scale = amax / np.float32(448) if amax > 0 else np.float32(1)
        scaled = np.clip(part / scale, -448, 448)
        out[group] = scaled.astype(ml_dtypes.float8_e4m3fn).astype(np.float32) * scale
    return out


@pytest.mark.parametrize("scaling", [BLOCK, CHANNEL, TENSOR], ids=lambda s: s.spec)
@pytest.mark.parametrize("seed", range(3))
def test_random_scaled_tensors_equal_the_reference(scaling, seed):
    rng = np.random.default_rng(seed)
    rows, cols = 300, 260  # partial 128x128 blocks at both edges
    gains = np.exp(rng.uniform(-12, 3, (rows, 1)))  # rows from ~1e-5 to ~20: subnormals too
    x = (rng.standard_normal((rows, cols)) * gains).astype(np.float16).astype(np.float32)
    x[5] = 0.0  # an all-zero row stays zero
    got = fp8.fake_quantize(x, scaling)
    assert np.array_equal(got, _reference(x, scaling))
    assert not np.array_equal(got, x)  # it really rounded
    assert (got[5] == 0).all()


def test_scalings_group_as_documented_and_saturate_at_the_group_max():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((256, 384)).astype(np.float32)
    x[:, :128] *= 1e-6  # the first column of blocks is tiny next to the rest
    for scaling in (BLOCK, CHANNEL, TENSOR):
        amax = fp8.group_amax(x, scaling)
        scale = fp8.scale_of(amax)
        got = fp8.fake_quantize(x, scaling)
        # each group's largest magnitude lands on 448 * scale (its amax, up to rounding)
        assert np.abs(got).max() <= 448 * scale.max() * (1 + 1e-6)
        assert np.allclose(fp8.group_amax(got, scaling), amax, rtol=2**-7)
    assert fp8.group_amax(x, BLOCK).shape == (2, 1, 3, 1)
    assert fp8.group_amax(x, CHANNEL).shape == (256, 1)
    assert fp8.group_amax(x, TENSOR).shape == ()
    # one scale for the whole tensor (or each row) puts the tiny block below E4M3's smallest
    # subnormal: it flushes to zero; a scale per 128x128 block keeps it at FP8's precision
    small = np.abs(x[:, :128]).mean()
    error = {
        s.kind: float(np.abs(fp8.fake_quantize(x, s) - x)[:, :128].mean() / small)
        for s in (BLOCK, CHANNEL, TENSOR)
    }
    assert error["block"] < 0.05 and error["tensor"] > 0.9 and error["channel"] > 0.9, error
    assert (fp8.fake_quantize(x, TENSOR)[:, :128] == 0).mean() > 0.9


def test_rounding_a_3d_tensor_scales_each_expert_apart():
    rng = np.random.default_rng(3)
    experts = rng.standard_normal((2, 130, 200)).astype(np.float32)
    experts[1] *= 1000
    out = fp8.fp8_tensor(experts, BLOCK, "blk.0.ffn_up_exps.weight")
    for e in range(2):
        assert np.array_equal(out[e], fp8.fake_quantize(experts[e], BLOCK).astype(np.float16))


def test_storage_is_a_byte_per_weight_plus_a_float32_per_scale():
    shape = (4864, 896)  # numpy order: 4864 output rows of 896
    assert fp8.n_scales(shape, BLOCK) == 38 * 7
    assert fp8.storage_bytes(shape, BLOCK) == 4864 * 896 + 4 * 38 * 7
    assert fp8.storage_bytes(shape, CHANNEL) == 4864 * 896 + 4 * 4864
    assert fp8.storage_bytes(shape, TENSOR) == 4864 * 896 + 4
    assert fp8.n_scales((8, 300, 260), BLOCK) == 8 * 3 * 3


def test_a_value_beyond_f16_range_is_an_error_naming_the_tensor():
    with pytest.raises(ValueError, match="blk.0.attn_q.weight.*65504"):
        fp8.fp8_tensor(np.full((2, 2), 1e6, np.float32), TENSOR, "blk.0.attn_q.weight")


# --- recipes and plans ---


def _parse(raw: object) -> object:
    return parse_recipe("r", raw, path="models.yaml")


def test_fp8_types_are_normalised_and_bad_scalings_named():
    recipe = _parse({"ftype": "FP8-E4M3", "overrides": [{"ffn_down": "fp8-e4m3:Channel"}]})
    assert recipe.ftype == "fp8-e4m3:block=128x128" and recipe.fp8_only
    assert recipe.overrides == (("ffn_down", "fp8-e4m3:channel"),)
    assert _parse({"ftype": "fp8-e4m3:tensor"}).digest() != recipe.digest()
    with pytest.raises(
        ConfigError,
        match=r"models.yaml: entry 'recipes.r': key 'ftype'.*"
        r"unknown FP8 scaling 'rows'.*fp8-e4m3:channel",
    ):
        _parse({"ftype": "fp8-e4m3:rows"})
    with pytest.raises(
        ConfigError,
        match=r"key 'overrides\[0\]'.*Q4_0 with ftype fp8-e4m3.*"
        r"ftype: Q8_0, pure: true",
    ):
        _parse({"ftype": "fp8-e4m3", "overrides": [{"ffn_": "Q4_0"}]})
    with pytest.raises(ConfigError, match="key 'output_type'"):
        _parse({"ftype": "fp8-e4m3", "output_type": "Q8_0"})


def _tensors() -> list[Tensor]:
    names = ["token_embd.weight", "output.weight", "output_norm.weight"]
    names += [f"blk.0.{n}.weight" for n in ("attn_q", "attn_norm", "ffn_up", "ffn_down")]
    return [
        Tensor(n, (96,) if "norm" in n else (96, 200), "F16", 96 if "norm" in n else 19200)
        for n in names
    ]


def test_an_fp8_recipe_rounds_the_linear_weights_and_keeps_embeddings():
    plan = plan_build(_parse({"ftype": "fp8-e4m3:channel"}), _tensors())
    linear = ["blk.0.attn_q.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight"]
    assert plan.fp8 == dict.fromkeys(linear, "fp8-e4m3:channel")
    assert plan.fixed == dict.fromkeys(linear, "F16") and plan.fallbacks == ()
    with_out = plan_build(
        _parse({"ftype": "fp8-e4m3", "output_type": "fp8-e4m3:tensor"}), _tensors()
    )
    assert with_out.fp8["output.weight"] == "fp8-e4m3:tensor"


def test_a_mixed_plan_pins_fp8_tensors_to_f16_for_llama_cpp():
    recipe = _parse(
        {
            "ftype": "Q8_0",
            "pure": True,
            "output_type": "fp8-e4m3",
            "overrides": [{"ffn_down": "MXFP4"}, {"ffn_|attn_": "fp8-e4m3"}],
        }
    )
    assert not recipe.fp8_only
    plan = plan_build(recipe, _tensors())
    # rows of 96 fit MXFP4's 32; first match wins, so ffn_down is MXFP4, not FP8
    assert plan.fixed["blk.0.ffn_down.weight"] == "MXFP4"
    assert set(plan.fp8) == {"blk.0.attn_q.weight", "blk.0.ffn_up.weight", "output.weight"}
    # llama.cpp gets F16 pins first and no FP8 type at all
    assert plan.overrides[:3] == tuple(
        (f"^{n.replace('.', chr(92) + '.')}$", "F16")
        for n in ("output.weight", "blk.0.attn_q.weight", "blk.0.ffn_up.weight")
    )
    assert all(not fp8.is_fp8(t) for _, t in plan.overrides) and plan.output_type is None


# --- real builds and fidelity on a tiny model ---

RECIPES = {
    "f16": {"ftype": "F16"},
    "bf16": {"ftype": "BF16"},
    "q8": {"ftype": "Q8_0"},
    "nvfp4": {
        "ftype": "Q8_0",
        "pure": True,
        "overrides": [{"attn_|ffn_": "NVFP4"}],
    },
    "fp8": {"ftype": "fp8-e4m3"},
    "fp8-ch": {"ftype": "fp8-e4m3:channel"},
    "fp8-t": {"ftype": "fp8-e4m3:tensor"},
    "mix": {
        "ftype": "Q8_0",
        "pure": True,
        "overrides": [{"ffn_": "MXFP4"}, {"attn_": "fp8-e4m3"}],
    },
}
VARIANTS = {
    "t-f16": "f16",
    "t-bf16": "bf16",
    "t-fp8-of-bf16": "t-bf16:fp8",
    "t-q8": "t-f16:q8",
    "t-nvfp4": "t-f16:nvfp4",
    "t-fp8": "t-f16:fp8",
    "t-fp8-ch": "t-f16:fp8-ch",
    "t-fp8-t": "t-f16:fp8-t",
    "t-mix": "t-f16:mix",
    "t-fp8-of-q8": "t-q8:fp8",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fp8")
    model = write_tiny_llama(root / "tiny.gguf")
    return tiny_catalog(root, model, RECIPES, VARIANTS)


def _values(path: str) -> dict[str, np.ndarray]:
    import gguf

    return {
        t.name: np.asarray(t.data, dtype=np.float32).copy()
        for t in gguf.GGUFReader(path).tensors
        if t.tensor_type.name in ("F16", "F32")
    }


@pytest.mark.llama
def test_fp8_builds_round_exactly_and_record_the_storage_fp8_would_take(tiny):
    catalog = load_catalog(tiny)
    source = _values(q.build_variant(catalog.get("t-f16"), catalog).path)
    for name, scaling in (("t-fp8", BLOCK), ("t-fp8-ch", CHANNEL), ("t-fp8-t", TENSOR)):
        info = q.build_variant(catalog.get(name), catalog)
        # 2 layers x 7 linear weights rounded; embeddings, output and norms as in the source
        assert info.type_counts == {"F16": 16, "F32": 5}, info.type_counts
        assert info.emulated == f"FP8 E4M3 ({scaling.spec}) in 14 tensors, stored as F16"
        built = _values(info.path)
        linear = [n for n in built if n.startswith("blk.") and "norm" not in n]
        assert len(linear) == 14
        for n in linear:
            want = fp8.fake_quantize(source[n], scaling).astype(np.float16).astype(np.float32)
            assert np.array_equal(built[n], want), n
            assert not np.array_equal(built[n], source[n])
        for n in ("token_embd.weight", "output.weight", "blk.0.attn_norm.weight"):
            assert np.array_equal(built[n], source[n])
        n_linear = sum(built[n].size for n in linear)
        scales = sum(fp8.n_scales(built[n].shape, scaling) for n in linear)
        assert info.storage_bytes == info.size_bytes - 2 * n_linear + n_linear + 4 * scales
        sidecar = q.read_build_info(info.path)
        assert sidecar is not None and sidecar.storage_bytes == info.storage_bytes
    # what a bench records: the emulation reaches the record through the local file
    from edgeeval.run.runner import variant_info

    file = q.ensure_file(catalog.get("t-fp8"), catalog)
    record_info = variant_info(catalog.get("t-fp8"), file)
    assert record_info.emulated.startswith("FP8 E4M3 (block=128x128)")
    assert record_info.storage_bytes == q.read_build_info(file.path).storage_bytes
    plain = variant_info(catalog.get("t-q8"), q.ensure_file(catalog.get("t-q8"), catalog))
    assert plain.emulated == "" and plain.storage_bytes is None


@pytest.mark.llama
def test_a_mixed_fp8_and_fp4_recipe_runs_fp8_first_then_llama_cpp(tiny):
    catalog = load_catalog(tiny)
    source = _values(q.build_variant(catalog.get("t-f16"), catalog).path)
    info = q.build_variant(catalog.get("t-mix"), catalog)
    # attention FP8 (F16 in the file), FFN MXFP4, embedding and output Q8_0 (pure), norms F32
    assert info.type_counts == {"F16": 8, "MXFP4": 6, "Q8_0": 2, "F32": 5}, info.type_counts
    built = _values(info.path)
    for n in (n for n in built if "attn_" in n and "norm" not in n):
        want = fp8.fake_quantize(source[n], BLOCK).astype(np.float16).astype(np.float32)
        assert np.array_equal(built[n], want), n  # llama.cpp copied them, untouched
    assert info.storage_bytes is not None and info.storage_bytes < info.size_bytes
    assert not Path(info.path + ".fp8.part").exists()


@pytest.mark.llama
def test_a_bf16_source_is_rounded_from_its_bf16_values(tiny):
    import gguf

    catalog = load_catalog(tiny)
    info = q.build_variant(catalog.get("t-fp8-of-bf16"), catalog)
    source = {
        t.name: fp8.dequantized(t.data, t.tensor_type.name).reshape(
            tuple(int(d) for d in reversed(t.shape))
        )
        for t in gguf.GGUFReader(q.build_variant(catalog.get("t-bf16"), catalog).path).tensors
    }
    built = {t.name: t for t in gguf.GGUFReader(info.path).tensors}
    assert source["blk.0.ffn_up.weight"].dtype == np.float32
    for name in ("blk.0.ffn_up.weight", "blk.1.attn_v.weight"):
        assert built[name].tensor_type.name == "F16"
        want = fp8.fake_quantize(source[name], BLOCK).astype(np.float16)
        assert np.array_equal(np.asarray(built[name].data), want), name
    # the tensors FP8 leaves alone keep the source's type and bits
    assert built["token_embd.weight"].tensor_type.name == "BF16"
    assert info.storage_bytes is not None and info.storage_bytes < info.size_bytes


@pytest.mark.llama
def test_fp8_on_a_quantized_source_names_its_type(tiny):
    catalog = load_catalog(tiny)
    with pytest.raises(EdgeevalError, match=r"needs a 16-bit source.*'t-q8' stores .* as Q8_0"):
        q.build_variant(catalog.get("t-fp8-of-q8"), catalog)


@pytest.mark.llama
def test_fp8_kld_against_the_16_bit_source_is_small_but_real(tiny):
    from edgeeval.fidelity import orchestrate as f

    catalog = load_catalog(tiny)
    names = ["t-fp8", "t-fp8-ch", "t-fp8-t", "t-q8", "t-nvfp4"]
    results = f.run_fidelity(
        catalog.get("t-f16"),
        [catalog.get(n) for n in names],
        catalog,
        corpus=f.Corpus("test", "the cat is in the hat and the dog is on a log; " * 30, "0" * 64),
        run_id="r1",
        n_ctx=64,
        max_chunks=4,
        n_threads=1,
    )
    kld = {r.variant: r.kld_mean for r in results}
    assert all(r.status == rec.STATUS_OK for r in results), [r.error for r in results]
    # loaded by llama.cpp and measured: FP8's rounding is visible above the 16-bit grid's
    # floor (a copy measures < 1e-5, see test_fidelity), and far below FP4's
    for name in ("t-fp8", "t-fp8-ch", "t-fp8-t"):
        assert 1e-5 < kld[name] < kld["t-nvfp4"] / 4, kld
        assert not math.isnan(kld[name])
    # and above Q8_0's: E4M3 keeps 3 mantissa bits (a step of 1/8 to 1/16 of each value),
    # Q8_0 an 8-bit integer per 32 weights (a step of amax/127); on these Gaussian weights
    # that is finer, whatever FP8's scaling (README: the tiny model's figures)
    assert max(kld["t-fp8"], kld["t-fp8-ch"], kld["t-fp8-t"]) > kld["t-q8"], kld


# --- the report: emulated, ranked by FP8's storage, no speed ---


def test_the_report_marks_an_emulated_row_and_ranks_it_by_fp8_storage():
    import dataclasses

    from edgeeval.report.render import ranking_table
    from edgeeval.report.summarize import rank_rows
    from tests.builders import record

    real = record("q8", peak_gb=0.9, acc=0.70, size_gb=0.6, pp_samples=(100.0, 110.0))
    f16 = record("fp8", peak_gb=1.3, acc=0.71, size_gb=1.2, pp_samples=(90.0, 95.0))
    what = "FP8 E4M3 (block=128x128) in 14 tensors, stored as F16"
    fp8_rec = dataclasses.replace(
        f16, variant=dataclasses.replace(f16.variant, emulated=what, storage_bytes=int(0.62e9))
    )
    rows = {r.name: r for r in rank_rows([real, fp8_rec])}
    row = rows["fp8"]
    # ranked by the 0.62 GB FP8 would take, not the 1.3 GB the F16 file peaked at
    assert row.peak_rss_gb == row.file_gb == pytest.approx(0.62)
    assert row.capability_per_gb == pytest.approx(row.capability / 0.62)
    assert row.tg_ts is row.pp_ts is row.load_s is row.peak_uss_gb is None
    assert rows["q8"].tg_ts is not None and rows["q8"].emulated == ""
    table = ranking_table(list(rows.values()))
    line = next(x for x in table.splitlines() if "| fp8 |" in x)
    assert f"emulated ({what}; GB = its storage, no speed)" in line
    assert "| 0.620 |" in line and "t/s" not in line
    from edgeeval.report.exports import row_dict

    assert row_dict(row)["emulated"] == what and "emulated" not in row_dict(rows["q8"])
    # the fidelity report's variants table: FP8's storage and bits, marked, no speed
    from edgeeval.report.fidelity import variant_rows

    params = dataclasses.replace(fp8_rec, n_params=10**9)
    side = {v["variant"]: v for v in variant_rows(list(rows.values()), [real, params], [])}
    assert side["fp8"]["quant"] == "Q4_K_M (emulated)" and side["fp8"]["tg_ts"] is None
    assert side["fp8"]["bits_per_weight"] == pytest.approx(0.62e9 * 8 / 10**9)
    # without the storage size (an older record) the row is what was measured
    plain = rank_rows([f16])[0]
    assert plain.peak_rss_gb == pytest.approx(1.3) and plain.emulated == ""
