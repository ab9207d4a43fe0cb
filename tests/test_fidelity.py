"""Fidelity: the KLD / PPL math on hand-made arrays, corpora, storage, and real runs of the
llama-perplexity method on tiny models the tests write themselves."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeeval import records as rec
from edgeeval.catalog.models import load_catalog
from edgeeval.errors import EdgeevalError
from edgeeval.fidelity import kld
from edgeeval.fidelity import orchestrate as f
from edgeeval.report.fidelity import fidelity_markdown
from edgeeval.store import runs as store
from edgeeval.store.fidelity import load_fidelity
from tests.test_quantize import tiny_catalog, write_tiny_llama

TEXT = "the cat is in the hat and the dog is on a log; " * 30  # ~1400 byte-level tokens


def _logits(*rows: tuple[float, ...]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def _stats(ref_logits: np.ndarray, logits: np.ndarray, targets) -> kld.TokenStats:
    return kld.token_stats(kld.reference_rows(ref_logits), logits, np.asarray(targets))


# --- the math on hand-made arrays ---


def test_reference_rows_of_the_docstring_example():
    ref = kld.reference_rows(_logits((0.0, -1.0, -20.0)))
    assert ref.dtype == kld.ref_dtype(3) and ref.dtype.itemsize == 8 + 2 * 4  # padded to even
    assert ref["scale"][0] == np.float32(16.0) / np.float32(65535.0)
    assert ref["level"][0].tolist() == [65535, 61439, 0, 0]
    lse = math.log(1 + math.exp(-1) + math.exp(-20))
    assert ref["min_logp"][0] == pytest.approx(-16 - lse, abs=1e-6)
    decoded = kld.decode(ref)[0, :3]
    assert decoded == pytest.approx([-lse, -1 - lse, -16 - lse], abs=2e-4)  # a level: 2.4e-4


def test_kld_of_the_docstring_example_and_of_identical_rows():
    ref = _logits((0.0, 0.0), (0.0, 0.0))  # equal logits: scale 0, every level 0
    q = np.log(np.array([[0.25, 0.75], [0.5, 0.5]])).astype(np.float32)
    stats = _stats(ref, q, [0, 1])
    assert stats.kld == pytest.approx([0.5 * math.log(2) + 0.5 * math.log(2 / 3), 0.0], abs=1e-6)
    assert stats.kld[0] == pytest.approx(0.1438, abs=1e-4)
    assert stats.kld[1] == 0.0
    assert stats.nll == pytest.approx([-math.log(0.25), -math.log(0.5)], abs=1e-6)
    assert stats.nll_ref == pytest.approx([math.log(2), math.log(2)], abs=1e-6)
    assert stats.p_diff == pytest.approx([-0.25, 0.0], abs=1e-6)
    assert stats.same_top.tolist() == [False, True]  # row 0: first of a tie against token 1


def _by_definition(ref_row: np.ndarray, q_row: np.ndarray, target: int) -> dict:
    """llama-perplexity's statistics of one row, element by element in float32 (the
    definition as tools/perplexity/perplexity.cpp states it, written without numpy's
    vector tricks): the stored levels, then the comparison with the variant's logits."""
    f32 = np.float32
    top, low_logit = f32(max(ref_row)), f32(max(min(ref_row), f32(max(ref_row)) - f32(16)))
    lse = f32(math.log(sum(float(np.exp(f32(x - top))) for x in ref_row)))
    scale = f32((top - low_logit) / f32(65535))
    min_logp = f32(f32(low_logit - top) - lse)
    levels = [
        round(float(f32(f32(1) / scale) * f32(x - low_logit))) if x > low_logit else 0
        for x in ref_row
    ]  # round() goes half to even, as llama-perplexity's nearest_int
    decoded = [f32(f32(scale * f32(level)) + min_logp) for level in levels]
    q_top = int(np.argmax(q_row))  # the first largest logit
    q_lse = f32(math.log(sum(float(np.exp(f32(x - q_row[q_top]))) for x in q_row)))
    norm = f32(q_row[q_top] + q_lse)
    terms = [
        float(f32(np.exp(lp) * f32(f32(lp - y) + norm)))
        for lp, y in zip(decoded, q_row, strict=True)
        if lp > f32(-16)
    ]
    ref_top = next(i for i, lp in enumerate(decoded) if lp == max(decoded))
    return {
        "levels": levels,
        "kld": math.fsum(terms),
        "nll": float(f32(norm - q_row[target])),
        "nll_ref": float(-decoded[target]),
        "same_top": ref_top == q_top,
    }


def test_token_stats_follow_llama_perplexity_row_by_row():
    rng = np.random.default_rng(7)
    ref = rng.standard_normal((12, 60)).astype(np.float32) * 6
    q = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.7
    ref[3, 10], ref[3, 20] = 30.0, 30.0 + 5e-5  # a tie on the 16-bit levels: token 10 wins
    q[3, 10], q[3, 20] = 31.0, 31.0 + 1e-6  # the variant's larger logit wins: token 20
    ref[4] = ref[4] * 0.1  # a span under 16 nats: scale (max - min) / 65535
    targets = rng.integers(0, 60, size=12)
    rows, got = kld.reference_rows(ref), _stats(ref, q, targets)
    for i in range(12):
        want = _by_definition(ref[i], q[i], int(targets[i]))
        assert rows["level"][i].tolist() == want["levels"], i
        assert got.kld[i] == pytest.approx(want["kld"], rel=1e-12, abs=1e-15), i
        assert (got.nll[i], got.nll_ref[i]) == (want["nll"], want["nll_ref"]), i
        assert got.same_top[i] == want["same_top"], i
    assert not got.same_top[3] and got.same_top.sum() >= 6


def test_same_top_p_on_near_ties_is_llama_perplexitys():
    """The top tokens are decided where llama-perplexity decides them: the variant's on its
    own float32 logits, the reference's on its stored 16-bit levels (first of a tie)."""
    ref = _logits(
        (-1, -1, -1, 4.0, -1, -1, 6.0, -30),  # the reference's top is token 6
        (1.98, 1.98, -1, -1, 2.0, -1, 2.0003, -30),  # 6 is one level above 4
        (-1, -1, 3.0, -1, -1, 3.00005, -1, -30),  # 2 and 5 share the top level: 2
    )
    q = _logits(
        (-1, -1, -1, 5.0, -1, -1, 5.0001, -30),  # 6 by 1e-4 (one float16 step is 5e-4)
        (-1, -1, -1, -1, 1.0, -1, 3.0, -30),  # 6
        tuple(ref[2]),  # the reference's own logits: 5, the larger one
    )
    levels = kld.reference_rows(ref)["level"]
    assert levels[1, 6] == levels[1, 4] + 1 and levels[2, 2] == levels[2, 5] == 65535
    stats = _stats(ref, q, [0, 0, 0])
    assert stats.same_top.tolist() == [True, True, False]
    assert 0 < stats.kld[2] < 1e-4  # the model against itself: the levels' rounding only


def test_kld_counts_the_decoded_reference_above_the_floor_only():
    """Entries count when their decoded log-probability is above -16 (float32), whatever a
    float16 would make of them: -15.998 counts, -16.004 does not, level 0 never does."""
    ln2 = math.log(2.0)
    ref = _logits((0, 0, -15.998 + ln2, -16.004 + ln2, -30, -30))
    q = _logits((0, 0, -40, -40, -30, -30))
    decoded = kld.decode(kld.reference_rows(ref))[0].astype(np.float64)
    assert decoded[2] > -16 >= decoded[3] and np.float16(decoded[2]) == -16
    lq = q[0].astype(np.float64) - math.log(np.exp(q[0].astype(np.float64)).sum())
    terms = np.exp(decoded[:6]) * (decoded[:6] - lq)
    stats = _stats(ref, q, [0])
    assert stats.kld[0] == pytest.approx(terms[:3].sum(), abs=1e-8)  # float32 terms
    assert terms[2] > 0.5 * terms[:3].sum()  # the -15.998 entry is most of this KLD


def test_first_level_above_the_floor_equals_a_search_of_every_level():
    rng = np.random.default_rng(3)
    scale = (rng.uniform(0.5, 16.0, 40) / 65535).astype(np.float32)
    low = rng.uniform(-40.0, -15.0, 40).astype(np.float32)
    scale[0], low[0] = 0.0, -3.0  # scale 0 above the floor: every level counts
    scale[1], low[1] = 0.0, -17.0  # scale 0 below it: none does
    every = np.arange(65536, dtype=np.float32)
    got = kld._first_level_above(scale, low, -16.0)
    for row in range(40):
        above = np.flatnonzero(scale[row] * every + low[row] > np.float32(-16))
        assert got[row] == (above[0] if len(above) else 65536), row
    assert got[0] == 0 and got[1] == 65536


def test_sparse_token_stats_equal_the_dense_formula_on_a_large_vocabulary():
    rng = np.random.default_rng(11)
    ref = rng.standard_normal((40, 3000)).astype(np.float32) * 6
    q = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.5
    targets = rng.integers(0, 3000, size=40)
    rows = kld.reference_rows(ref)
    decoded = kld.decode(rows)[:, :3000]
    norm = q.max(axis=1) + kld._log_sum_exp(q, q.max(axis=1))  # float32, as the sparse sum
    terms = np.where(decoded > np.float32(-16), np.exp(decoded) * (decoded - q + norm[:, None]), 0)
    got = kld.token_stats(rows, q, targets)
    assert (decoded > -16).mean() < 0.9  # the floor leaves entries out
    assert got.kld == pytest.approx(terms.sum(axis=1, dtype=np.float64), rel=1e-12)
    assert (got.same_top == (decoded.argmax(axis=1) == q.argmax(axis=1))).all()
    assert not got.same_top.all() and got.same_top.any()
    # A floor no entry passes: the reference's top comes from its whole decoded rows.
    none = kld.token_stats(rows, q, targets, floor=1.0)
    assert (none.kld == 0).all() and (none.same_top == got.same_top).all()


def test_mean_se_and_percentiles_follow_llama_perplexity():
    assert kld.mean_se(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx((2.5, 1.2910 / 2), abs=1e-4)
    assert kld.mean_se(np.array([3.0])) == (3.0, 0.0)
    # llama-perplexity: p = fraction * (n - 1), linear between neighbours.
    values = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    assert kld._pct(values, 90.0) == pytest.approx(0.4 * 3.0 + 0.6 * 10.0)  # p = 3.6


def test_summary_of_hand_made_token_stats():
    stats = kld.TokenStats(
        nll=np.array([1.5, 2.5]),
        nll_ref=np.array([1.0, 2.0]),
        kld=np.array([0.1, 0.3]),
        p_diff=np.array([0.03, -0.04]),
        same_top=np.array([True, False]),
    )
    s = kld.summarize(stats)
    assert s["n_tokens"] == 2
    assert s["ln_ppl_ratio"] == pytest.approx(0.5) and s["ln_ppl_ratio_se"] == 0.0
    assert s["ppl"] == pytest.approx(math.exp(2.0)) and s["ppl_ref"] == pytest.approx(math.exp(1.5))
    assert s["ppl_se"] == pytest.approx(math.exp(2.0) * 0.5)  # SE of (1.5, 2.5) is 0.5
    assert s["kld_mean"] == pytest.approx(0.2) and s["kld_se"] == pytest.approx(0.1)
    assert s["kld_median"] == pytest.approx(0.2) and s["kld_max"] == pytest.approx(0.3)
    assert s["kld_p90"] == pytest.approx(0.28) and s["kld_p999"] == pytest.approx(0.2998)
    assert s["same_top_pct"] == 50.0 and s["same_top_se_pct"] == pytest.approx(50.0)
    assert s["rms_dp_pct"] == pytest.approx(100 * math.sqrt((0.03**2 + 0.04**2) / 2))


def test_chunks_and_the_scored_half():
    chunks = kld.make_chunks(list(range(1100)), 512, 0)
    assert chunks.shape == (2, 512) and chunks[1, 0] == 512
    assert kld.make_chunks(list(range(1100)), 512, 1).shape == (1, 512)
    assert kld.scored(512) == (256, 255) and kld.scored(64) == (32, 31)


# --- corpora ---


def test_pydoc_corpus_is_offline_and_deterministic(monkeypatch):
    monkeypatch.setenv("EDGEEVAL_OFFLINE", "1")
    one, two = f.load_corpus("pydoc"), f.load_corpus("pydoc")
    assert len(one.text) > 100_000 and one.sha256 == two.sha256 and one.name == "pydoc"


def test_missing_corpus_file_says_what_to_pass(tmp_path):
    with pytest.raises(EdgeevalError, match="--corpus pydoc"):
        f.load_corpus(str(tmp_path / "nope.txt"))


def test_wikitext2_comes_from_the_hub_once_then_from_the_cache(fake_hub, monkeypatch):
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as zf:
        zf.writestr("wikitext-2-raw/wiki.test.raw", " = Valkyria = \n text \n")
    repo_id, zip_name, _ = f.WIKITEXT
    fake_hub.add_file(f"datasets/{repo_id}", zip_name, blob.getvalue())
    assert f.load_corpus("wikitext-2").text == " = Valkyria = \n text \n"
    monkeypatch.setenv("EDGEEVAL_OFFLINE", "1")
    assert f.load_corpus("wikitext-2").name == "wikitext-2"


def test_wikitext2_offline_without_cache_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("EDGEEVAL_OFFLINE", "1")
    with pytest.raises(EdgeevalError, match="--corpus pydoc"):
        f.load_corpus("wikitext-2")


# --- real runs on tiny models ---


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=1)


def _run(
    catalog_path: Path, names: list[str], reference: str = "tiny-f32", text: str = TEXT
) -> list[rec.FidelityResult]:
    catalog = load_catalog(catalog_path)
    corpus = f.Corpus("test", text, "0" * 64)
    return f.run_fidelity(
        catalog.get(reference),
        [catalog.get(n) for n in names],
        catalog,
        corpus=corpus,
        run_id="r1",
        n_ctx=64,
        max_chunks=4,
        n_threads=1,
    )


@pytest.mark.llama
def test_a_variant_against_itself_differs_only_by_the_stored_grid(tmp_path, tiny_model):
    """As in llama-perplexity, the reference is stored on a 16-bit grid (2.4e-4 nats a level)
    and the variant is not rounded to it: a copy's KLD and delta-p are that rounding only."""
    path = tiny_catalog(tmp_path, tiny_model, {"f32": {"ftype": "F32"}}, {"t-copy": "f32"})
    same, copy = _run(path, ["tiny-f32", "t-copy"])
    for result in (same, copy):
        assert result.status == rec.STATUS_OK, result.error
        assert result.n_tokens == 4 * 31 and result.n_chunks == 4
        assert abs(result.kld_mean) < 1e-5 and result.kld_max < 1e-4
        assert result.same_top_pct == 100.0 and result.rms_dp_pct < 0.01
        assert abs(result.ln_ppl_ratio) < 1e-4
        assert result.ppl == pytest.approx(result.ppl_ref, rel=1e-4)
    assert (same.kld_mean, same.same_top_pct) == (copy.kld_mean, copy.same_top_pct)


@pytest.mark.llama
def test_kld_rises_as_bits_fall(tmp_path, tiny_model):
    ftypes = {"q8": "Q8_0", "q6": "Q6_K", "q4": "Q4_K_M", "q3": "Q3_K_M", "q2": "Q2_K"}
    recipes = {name: {"ftype": ftype, "pure": True} for name, ftype in ftypes.items()}
    path = tiny_catalog(tmp_path, tiny_model, recipes, {f"t-{n}": n for n in ftypes})
    results = _run(path, [f"t-{n}" for n in ftypes])
    klds = [r.kld_mean for r in results]
    assert all(r.status == rec.STATUS_OK for r in results)
    assert klds == sorted(klds) and klds[0] > 0, klds
    assert results[-1].same_top_pct < results[0].same_top_pct
    # Every result was stored as it finished: JSONL in the run directory and SQLite.
    assert [r.variant for r in load_fidelity("r1")] == [f"t-{n}" for n in ftypes]
    with store.connect() as db:
        rows = db.execute("SELECT variant, json FROM fidelity WHERE run_id = 'r1'").fetchall()
    assert len(rows) == 5 and json.loads(rows[0][1])["reference"] == "tiny-f32"
    table = fidelity_markdown(results)
    assert "| t-q2 | tiny-f32 |" in table and "Corpus `test`" in table


@pytest.mark.llama
def test_a_failing_variant_is_recorded_and_the_others_go_on(tmp_path, tiny_model):
    other = write_tiny_llama(tmp_path / "other.gguf", n_embd=128, seed=2)
    path = tmp_path / "models.yaml"
    text = tiny_catalog(tmp_path, tiny_model, {"q8": {"ftype": "Q8_0"}}, {"t-q8": "q8"})
    path.write_text(
        text.read_text().replace(
            "recipes:",
            f"  - {{name: broken, family: smollm, model: tiny, quant: F32, kind: base, "
            f"license: MIT, source: {{local: {{path: '{tmp_path / 'missing.gguf'}'}}}}}}\n"
            f"  - {{name: other, family: smollm, model: tiny, quant: F32, kind: base, "
            f"license: MIT, source: {{local: {{path: '{other}'}}}}}}\nrecipes:",
        )
    )
    broken, different, fine = _run(path, ["broken", "other", "t-q8"])
    assert broken.status == rec.STATUS_SKIPPED and "does not exist" in broken.error
    assert different.status == rec.STATUS_OK  # same vocabulary, other weights: a large KLD
    assert different.kld_mean > fine.kld_mean and fine.status == rec.STATUS_OK


@pytest.mark.llama
def test_a_corpus_shorter_than_one_chunk_stops_with_the_reason(tmp_path, tiny_model):
    path = tiny_catalog(tmp_path, tiny_model, {}, {})
    with pytest.raises(EdgeevalError, match="fewer than one chunk"):
        _run(path, ["tiny-f32"], text="too short")


def test_reference_is_the_float_variant_unless_named(tmp_path, tiny_model):
    catalog = load_catalog(
        tiny_catalog(tmp_path, tiny_model, {"q8": {"ftype": "Q8_0"}}, {"t-q8": "q8"})
    )
    named = [catalog.get("t-q8"), catalog.get("tiny-f32")]
    assert f.pick_reference(named, None, catalog).name == "tiny-f32"
    assert f.pick_reference(named, "t-q8", catalog).name == "t-q8"
    with pytest.raises(EdgeevalError, match="pass --ref"):
        f.pick_reference([catalog.get("t-q8")], None, catalog)
