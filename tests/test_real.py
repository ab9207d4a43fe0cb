"""Real llama.cpp on the smallest embedded model (SmolLM2-135M, fetched once from PyPI)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeeval import records as rec
from edgeeval.engine.backend import LlamaBackend, LoadOptions
from edgeeval.store import runs as store

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def backend(smollm_path):
    b = LlamaBackend(str(smollm_path), LoadOptions(n_ctx=512, n_threads=2))
    yield b
    b.close()


def test_shared_prefix_logliks_equal_full_reevaluation(backend):
    ctx = backend.tokenize("Question: What is the capital of France?\nAnswer:", add_bos=True)
    conts = [backend.tokenize(t, add_bos=False) for t in (" Paris", " Berlin", " the moon base")]
    shared = backend.choice_logliks(ctx, conts)
    again = backend.choice_logliks(ctx, conts, reuse_context=False)
    one_batch = backend.one_batch_logliks(ctx, conts)
    assert np.allclose(shared, again, atol=1e-6)
    assert np.allclose(shared, one_batch, atol=1e-2)  # batch-shape numerics only
    assert shared[0] > shared[1] > shared[2]


def test_loglik_matches_a_direct_computation_from_llama_logits(smollm_path, backend):
    import llama_cpp

    ctx = backend.tokenize("The cat sat on the", add_bos=True)
    cont = backend.tokenize(" mat and slept", add_bos=False)
    ours = backend.choice_logliks(ctx, [cont])[0]
    llm = llama_cpp.Llama(model_path=str(smollm_path), n_ctx=512, logits_all=True, verbose=False)
    llm.eval(ctx + cont)
    logits = np.asarray(llm.scores[: len(ctx) + len(cont)], dtype=np.float64)
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    # logits at position i predict token i+1
    direct = sum(logp[len(ctx) - 1 + i, tok] for i, tok in enumerate(cont))
    llm.close()
    assert ours == pytest.approx(direct, abs=1e-3)


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "edgeeval", *args], capture_output=True, text=True, env=env
    )


def test_bench_end_to_end_records_a_truncated_model_and_goes_on(real_catalog, tmp_path):
    done = _cli(
        "--catalog",
        str(real_catalog),
        "bench",
        "--reps",
        "2",
        "--pp",
        "32",
        "--tg",
        "8",
        "--limit",
        "3",
        "--n-ctx",
        "512",
    )
    assert done.returncode == 0, done.stderr
    run_id = store.list_runs()[-1]
    records = {r.variant.name: r for r in store.load_records(run_id)}
    bad, good = records["smol-truncated"], records["smol"]
    assert bad.status == rec.STATUS_ERROR and "truncated" in bad.error
    assert good.status == rec.STATUS_OK
    assert {s.test for s in good.speed} == {"pp32", "tg8"}
    assert all(len(s.samples_ts) == 2 and s.avg_ts > 0 for s in good.speed)
    scored = [t for t in good.tasks if t.status == "ok"]
    assert len(scored) == len(good.tasks) - 1 and all(t.n == 3 for t in scored)
    (skipped,) = [t for t in good.tasks if t.status != "ok"]  # code runs only when allowed
    assert skipped.task == "humaneval" and "--allow-code-exec" in skipped.reason
    memory = good.memory
    assert memory.peak_rss_bytes > good.variant.size_bytes * 0.5
    # the sampler's peak agrees with the kernel's own maximum resident size of the child
    assert abs(memory.peak_rss_bytes - memory.os_maxrss_bytes) / memory.os_maxrss_bytes < 0.03
    report = json.loads((store.run_dir(run_id) / "report.json").read_text())
    assert [r["name"] for r in report["rows"]] == ["smol", "smol-truncated"]
    assert report["rows"][0]["rank"] == 1 and report["rows"][1]["rank"] is None
    assert "smol" in done.stdout and "GB = 10^9" not in done.stdout
