"""Promises 1, 2 and 5 on the real embedded model: a run killed with SIGKILL loses nothing
finished and --resume redoes only what is missing, down to the items of an unfinished task; a
worker killed mid-task keeps its speed, memory and scored items; a worker that stops answering
is stopped by the stall limit, which names itself; a model that cannot fit is refused before
loading unless forced."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import psutil
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


# 40 arith items in chunks of 16 (one sequence per decode): a kill after the first chunk lands
# in the middle of the task.
ITEMS = ["--models", "smol-a", "--limit", "40", "--eval-batch", "1"]
FIRST_CHUNK = "smol-a: arith: 16/40 items"


def _stored_items(run_id):
    """(item_id) of each stored arith sample line of the run, in order."""
    lines = (store.run_dir(run_id) / "samples.jsonl").read_text().splitlines()
    return [json.loads(line)["item_id"] for line in lines if '"task": "arith"' in line]


def _run_until(cmd, marker, act, env=None):
    """Run `cmd`, call `act(proc)` when a stderr line holds `marker`; return (rc, stderr,
    the monotonic time of each later line)."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    seen, after = [], []
    try:
        for line in proc.stderr:
            seen.append(line)
            if act is not None and marker in line:
                act(proc)
                act = None
            elif act is None:
                after.append((time.monotonic(), line))
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, "".join(seen), after


def _kill_worker(proc):
    (worker,) = [
        p for p in psutil.Process(proc.pid).children() if "edgeeval.run.worker" in p.cmdline()
    ]
    worker.send_signal(signal.SIGKILL)  # the worker only: the bench records what it kept


def test_a_worker_killed_mid_task_keeps_its_items_and_resume_scores_only_the_rest(
    two_model_catalog, one_task_suite
):
    rc, err, _ = _run_until(
        _bench(two_model_catalog, *one_task_suite, *ITEMS), FIRST_CHUNK, _kill_worker
    )
    assert rc == 3, err  # nothing ranked
    run_id = store.list_runs()[-1]
    (record,) = store.load_records(run_id)
    assert record.status == rec.STATUS_CRASH
    (partial,) = record.tasks
    assert partial.status == rec.STATUS_PARTIAL and 16 <= partial.n < 40
    assert record.error.startswith("child died from SIGKILL (likely out of memory) in arith")
    assert (
        f"in arith after {partial.n}/40 items; load time, speed, {partial.n} items and "
        f"memory kept; `edgeeval bench --resume {run_id}` finishes it" in record.error
    )
    assert [s.test for s in record.speed] == ["pp16", "tg4"] and record.load_s is not None
    assert record.memory is not None and record.memory.peak_rss_bytes > 50 * 10**6
    kept = _stored_items(run_id)
    assert len(kept) == partial.n == len(set(kept))

    resumed = subprocess.run(
        [*_bench(two_model_catalog)[: -len(FAST)], "--resume", run_id],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    left = 40 - partial.n
    assert f"smol-a: resuming: speed kept; arith: {partial.n}/40 items kept, {left} to go" in (
        resumed.stderr
    )
    assert "smol-a: timing" not in resumed.stderr  # the speed phase is not measured again
    (final,) = store.load_records(run_id)
    assert final.status == rec.STATUS_OK and final.speed == record.speed
    (task,) = final.tasks
    assert (task.status, task.n) == ("ok", 40)
    items = _stored_items(run_id)
    assert len(items) == 40 == len(set(items))  # each item scored once: none re-run
    assert final.memory.speed_peak_rss_bytes == record.memory.speed_peak_rss_bytes

    whole = subprocess.run(  # the same task, uninterrupted, in a run of its own
        _bench(two_model_catalog, *one_task_suite, *ITEMS), capture_output=True, text=True
    )
    assert whole.returncode == 0, whole.stderr
    (once,) = store.load_records(store.list_runs()[-1])
    (uninterrupted,) = once.tasks
    fields = ("n", "acc", "acc_se", "acc_norm", "acc_norm_se", "status", "protocol")
    assert [getattr(task, f) for f in fields] == [getattr(uninterrupted, f) for f in fields]


def test_a_worker_that_stops_answering_is_stopped_by_the_stall_limit(
    two_model_catalog, one_task_suite, tmp_path
):
    flag = tmp_path / "hang"
    hang = str(Path(__file__).resolve().parent / "faults" / "decode_hang")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([hang, str(REPO)]),
        "EDGEEVAL_TEST_HANG_FLAG": str(flag),
    }
    hung_at: list[float] = []

    def hang_decodes(_proc):
        flag.touch()  # the next llama_decode never returns
        hung_at.append(time.monotonic())

    cmd = _bench(two_model_catalog, *one_task_suite, *ITEMS, "--stall-timeout", "3")
    cmd += ["--timeout", "300"]  # a backstop: without the stall limit, this one names itself
    rc, err, after = _run_until(cmd, FIRST_CHUNK, hang_decodes, env=env)
    assert rc == 3, err
    (record,) = store.load_records(store.list_runs()[-1])
    assert record.status == rec.STATUS_TIMEOUT
    assert record.error.startswith("stalled 3 s (--stall-timeout) in arith after 16/40 items; ")
    assert "load time, speed, 16 items and memory kept; `edgeeval bench --resume" in (record.error)
    (stopped,) = [t for t, line in after if "smol-a: timeout: stalled 3 s" in line]
    # the stall clock runs from the last event (before the hang): 3 s, plus the sampler's
    # and the decode beat's polling; a wall-clock limit would not have fired for minutes
    assert 2.0 < stopped - hung_at[0] < 3 + 5


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
