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


def _logp(*rows: tuple[float, ...]) -> np.ndarray:
    return np.log(np.array(rows, dtype=np.float64)).astype(np.float32)


# --- the math on hand-made arrays ---


def test_log_softmax_matches_the_worked_example():
    out = kld.log_softmax(np.array([[0.0, math.log(3.0)]], np.float32))
    assert out == pytest.approx(np.array([[math.log(0.25), math.log(0.75)]]), abs=1e-6)


def test_kld_of_the_docstring_example_and_of_identical_rows():
    ref, q = _logp((0.5, 0.5), (0.5, 0.5)), _logp((0.25, 0.75), (0.5, 0.5))
    stats = kld.token_stats(ref, q, np.array([0, 1]))
    assert stats.kld == pytest.approx([0.5 * math.log(2) + 0.5 * math.log(2 / 3), 0.0], abs=1e-6)
    assert stats.kld[0] == pytest.approx(0.1438, abs=1e-4)
    assert stats.kld[1] == 0.0
    assert stats.nll == pytest.approx([-math.log(0.25), -math.log(0.5)], abs=1e-6)
    assert stats.p_diff == pytest.approx([-0.25, 0.0], abs=1e-6)


def test_same_top_and_the_floor_of_tiny_reference_probabilities():
    ref = _logp((0.7, 0.3 - 1e-9, 1e-9))
    q = _logp((0.2, 0.8 - 1e-3, 1e-3))
    stats = kld.token_stats(ref, q, np.array([0]))
    expected = 0.7 * math.log(0.7 / 0.2) + (0.3 - 1e-9) * math.log((0.3 - 1e-9) / (0.8 - 1e-3))
    assert stats.kld[0] == pytest.approx(expected, rel=1e-5)  # the 1e-9 term is below e^-16
    assert not stats.same_top[0]
    assert kld.token_stats(ref, ref, np.array([0])).same_top[0]


def _dense_stats(ref16: np.ndarray, q: np.ndarray, targets: np.ndarray) -> dict:
    """token_stats written the plain way: every entry converted, the variant rounded to the
    reference's float16 grid, argmax over whole rows."""
    lr = ref16.astype(np.float64)
    lq = q.astype(np.float16).astype(np.float64)
    rows = np.arange(len(targets))
    terms = np.where(lr > kld.LOGP_FLOOR, np.exp(lr) * (lr - lq), 0.0)
    return {
        "kld": terms.sum(axis=1),
        "nll": -lq[rows, targets],
        "nll_ref": -lr[rows, targets],
        "same_top": lr.argmax(axis=1) == lq.argmax(axis=1),
    }


def test_sparse_token_stats_on_a_float16_reference_equal_the_dense_formula():
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((40, 3000)).astype(np.float32) * 6
    ref16 = kld.log_softmax(logits).astype(np.float16)
    q = kld.log_softmax(logits + rng.standard_normal(logits.shape).astype(np.float32) * 0.5)
    # Row 0: the variant's two best values differ by less than a float16 step, the larger one
    # second; on the reference's grid they tie and the first one is the variant's pick.
    q[0, :] = -30.0
    q[0, 5], q[0, 9] = -0.5, -0.5 + 1e-5
    ref16[0, :] = np.float16(-30.0)
    ref16[0, 5], ref16[0, 9] = np.float16(-0.6), np.float16(-0.9)
    targets = rng.integers(0, 3000, size=40)
    got, want = kld.token_stats(ref16, q, targets), _dense_stats(ref16, q, targets)
    assert (ref16 > kld.LOGP_FLOOR).mean() < 0.9  # the floor leaves entries out
    assert got.kld == pytest.approx(want["kld"], rel=1e-9, abs=1e-12)
    assert got.nll == pytest.approx(want["nll"]) and got.nll_ref == pytest.approx(want["nll_ref"])
    assert (got.same_top == want["same_top"]).all()
    assert got.same_top[0] and not got.same_top[1:].all()
    same = kld.token_stats(ref16, ref16.astype(np.float32), targets)
    assert (same.kld == 0).all() and same.same_top.all()


def test_float16_floor_test_through_bit_patterns_equals_the_comparison():
    values = np.array(
        [0.0, -0.0, 6e-8, -6e-8, -1e-3, -15.99, -16.0, -16.01, -60000.0, -np.inf, np.inf],
        np.float16,
    )
    expected = values.astype(np.float32) > -16.0
    assert (kld._above(values, -16.0) == expected).all()
    assert (kld._above(values, -15.995) == (values.astype(np.float32) > -15.995)).all()


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
def test_a_variant_against_itself_has_zero_kld_and_full_top_agreement(tmp_path, tiny_model):
    path = tiny_catalog(tmp_path, tiny_model, {"f32": {"ftype": "F32"}}, {"t-copy": "f32"})
    same, copy = _run(path, ["tiny-f32", "t-copy"])
    for result in (same, copy):
        assert result.status == rec.STATUS_OK, result.error
        assert result.n_tokens == 4 * 31 and result.n_chunks == 4
        assert result.kld_mean == 0.0 and result.kld_max == 0.0
        assert result.same_top_pct == 100.0 and result.rms_dp_pct == 0.0
        assert result.ln_ppl_ratio == 0.0 and result.ppl == result.ppl_ref


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
