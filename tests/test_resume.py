"""Promises 1, 2 and 5 on the real embedded model: a run killed with SIGKILL loses nothing
finished and --resume redoes only what is missing; a hang becomes a recorded timeout; a model
that cannot fit is refused before loading unless forced."""

import os
import shutil
import signal
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from edgeeval import pipeline
from edgeeval import records as rec
from edgeeval.catalog.models import load_catalog
from edgeeval.errors import PreflightError
from edgeeval.run import runner
from edgeeval.store import runs as store
from edgeeval.tasks.suite import tasks_dir

pytestmark = pytest.mark.real
REPO = Path(__file__).resolve().parent.parent
# One thread: on a busy shared machine llama.cpp's two spinning threads run several times slower.
FAST = ["--reps", "1", "--pp", "16", "--tg", "4", "--limit", "2", "--n-ctx", "256", "--no-ttft"]
FAST += ["--threads", "1"]


@pytest.fixture()
def two_model_catalog(tmp_path, smollm_path):
    path = tmp_path / "models.yaml"
    entries = "\n".join(
        f"  - {{name: {name}, family: smollm, model: SmolLM2, quant: Q4_1, kind: instruct, "
        f'license: Apache-2.0, source: {{local: {{path: "{smollm_path}"}}}}}}'
        for name in ("smol-a", "smol-b")
    )
    path.write_text(f"variants:\n{entries}\nsets:\n  default: [smol-a, smol-b]\n")
    return path


@pytest.fixture()
def one_task_suite(tmp_path, monkeypatch):
    """A package root whose only suite, `one`, is the arith task (the bench children inherit
    EDGEEVAL_ROOT): a real scored task, without the minutes the offline suite's generative
    task takes."""
    root = tmp_path / "root"
    benchmarks = tasks_dir(root)
    benchmarks.mkdir(parents=True)
    shutil.copy(tasks_dir(REPO) / "arith.yaml", benchmarks)
    (benchmarks / "suites.yaml").write_text("one: [arith]\n")
    shutil.copy(REPO / "models.yaml", root)  # the built-in catalog, under --catalog
    monkeypatch.setenv("EDGEEVAL_ROOT", str(root))
    return ["--suite", "one"]


def _bench(catalog, *args):
    return [sys.executable, "-m", "edgeeval", "--catalog", str(catalog), "bench", *FAST, *args]


def _lines(run_id):
    return (store.run_dir(run_id) / "records.jsonl").read_text().splitlines()


def test_a_killed_run_resumes_with_only_the_missing_model(two_model_catalog, one_task_suite):
    proc = subprocess.Popen(
        _bench(two_model_catalog, *one_task_suite),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    for line in proc.stderr:  # the second model starts only after the first is saved
        if "[2/2] smol-b" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    run_id = store.list_runs()[-1]
    first = _lines(run_id)
    assert len(first) == 1 and '"name": "smol-a"' in first[0]

    resumed = subprocess.run(  # no options: the run's own models and settings are used
        [*_bench(two_model_catalog)[: -len(FAST)], "--resume", run_id],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "smol-a: already measured in this run (resume), skipping" in resumed.stderr
    after = _lines(run_id)
    assert after[0] == first[0] and len(after) == 2  # smol-a untouched, smol-b added
    records = store.load_records(run_id)
    assert {r.variant.name: r.status for r in records} == {"smol-a": "ok", "smol-b": "ok"}
    assert all([(t.task, t.status, t.n) for t in r.tasks] == [("arith", "ok", 2)] for r in records)
    assert {r.settings.n_ctx for r in records} == {256}

    changed = subprocess.run(
        _bench(two_model_catalog, *one_task_suite, "--resume", run_id, "--seed", "1"),
        capture_output=True,
        text=True,
    )
    assert changed.returncode == 2  # a changed setting would not resume this run
    assert "--seed 1 differs from the run's 0; drop it to resume" in changed.stderr
    assert len(_lines(run_id)) == 2


def test_a_model_past_its_timeout_is_killed_and_recorded(two_model_catalog, one_task_suite):
    done = subprocess.run(
        _bench(two_model_catalog, *one_task_suite, "--models", "smol-a", "--timeout", "0.5"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 3  # nothing could be ranked
    (record,) = store.load_records(store.list_runs()[-1])
    assert record.status == rec.STATUS_TIMEOUT
    assert "timeout" in record.error


def test_preflight_refuses_a_model_that_cannot_fit(two_model_catalog, monkeypatch):
    Memory = namedtuple("Memory", "total available")
    monkeypatch.setattr(runner.psutil, "virtual_memory", lambda: Memory(8 * 10**9, 50 * 10**6))
    variant = load_catalog(two_model_catalog).get("smol-a")
    outcome = pipeline.bench(
        [variant], rec.RunSettings(n_ctx=256, suite=""), progress=lambda _: None
    )
    (record,) = outcome.records
    assert record.status == rec.STATUS_SKIPPED
    assert "only 0.05 GB is available" in record.error and "--force" in record.error


def test_preflight_message_names_the_numbers_and_force_overrides(monkeypatch, smollm_path):
    Memory = namedtuple("Memory", "total available")
    monkeypatch.setattr(runner.psutil, "virtual_memory", lambda: Memory(8 * 10**9, 10**8))
    variant = load_catalog().get("smollm2-135m-instruct-q4_1")
    file = runner.LocalFile(smollm_path, "x" * 64, smollm_path.stat().st_size)
    with pytest.raises(PreflightError) as info:
        runner.preflight(variant, file, 50 * 10**6, force=False)
    message = str(info.value)
    assert "weights 0.10" in message and "KV 0.05" in message and "0.10 GB is available" in message
    runner.preflight(variant, file, 50 * 10**6, force=True)  # forced: no error
