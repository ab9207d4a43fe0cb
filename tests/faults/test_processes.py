"""Processes clean up: a child dies with its parent, scratch directories of a killed parent are
swept, and one bench measures at a time per host (the lock dies with its holder too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from edgeeval.engine import hostlock
from edgeeval.engine.process import Event, owned_tempdir, run_child, sweep_stale_tempdirs
from edgeeval.errors import HostBusyError

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]
GRANDCHILD = "import json, os, time; print(json.dumps({'event': 'pid', 'detail': str(os.getpid())}), flush=True); time.sleep(600)"  # noqa: E501


def _gone(pid: int, within_s: float = 20.0) -> bool:
    """Poll (bounded) until `pid` no longer runs; a zombie awaiting its reaper counts as gone."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _start(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # read now: the test's own EDGEEVAL_HOME
    return subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True, env=env)


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_of_run_child_dies_when_its_parent_is_sigkilled():
    # the intermediate stands in for the bench: it starts the "worker" through run_child
    intermediate = _start(
        "import sys\n"
        "from edgeeval.engine.process import run_child\n"
        f"run_child([sys.executable, '-c', {GRANDCHILD!r}], timeout_s=600,\n"
        "          on_event=lambda e: print(e.detail, flush=True))\n"
    )
    try:
        grandchild = int(intermediate.stdout.readline())
        assert psutil.pid_exists(grandchild)
        intermediate.send_signal(signal.SIGKILL)
        intermediate.wait()
        assert _gone(grandchild), "the worker outlived its SIGKILLed parent"
    finally:
        _kill(intermediate)
        if psutil.pid_exists(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def test_the_watchdog_kills_a_child_whose_parent_died():
    # the portable path (macOS): a thread in the child watches its parent pid
    watched = (
        "import os, time\n"
        "from edgeeval.orphans import watch_parent\n"
        "watch_parent(os.getppid(), poll_s=0.05)\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(600)\n"
    )
    intermediate = _start(
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', {watched!r}])\n"
        "p.wait()\n"
    )
    try:
        grandchild = int(intermediate.stdout.readline())
        intermediate.send_signal(signal.SIGKILL)
        intermediate.wait()
        assert _gone(grandchild)
    finally:
        _kill(intermediate)


def test_ctrl_c_in_the_parent_kills_the_child_it_was_watching():
    seen: list[int] = []

    def interrupt(event: Event) -> None:
        seen.append(int(event.detail))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_child([PY, "-c", GRANDCHILD], timeout_s=600, on_event=interrupt)
    assert seen and not psutil.pid_exists(seen[0])  # killed and reaped, not left running


def test_scratch_dirs_of_a_killed_parent_are_swept_and_live_ones_kept(tmp_path):
    holder = _start(
        "import sys, time\n"
        "from edgeeval.engine.process import owned_tempdir\n"
        f"with owned_tempdir({str(tmp_path)!r}) as d:\n"
        "    (d / 'spec.json').write_text('{}')\n"
        "    print(d, flush=True)\n"
        "    time.sleep(600)\n"
    )
    left = Path(holder.stdout.readline().strip())
    assert left.name.startswith(f"edgeeval-{holder.pid}-")
    assert sweep_stale_tempdirs(tmp_path) == []  # its owner still runs
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert left.exists()  # SIGKILL: nobody could clean up
    unrelated = tmp_path / "edgeeval-quantize-abc"
    unrelated.mkdir()
    with owned_tempdir(tmp_path) as mine:
        assert sweep_stale_tempdirs(tmp_path) == [left]
        assert mine.exists() and unrelated.exists() and not left.exists()
    assert not mine.exists()


def _hold_lock_in_child() -> subprocess.Popen:
    holder = _start(
        "import time\n"
        "from edgeeval.engine import hostlock\n"
        "lock = hostlock.acquire('run-first')\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n"
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_bench_is_refused_with_the_first_ones_pid():
    holder = _hold_lock_in_child()
    try:
        with pytest.raises(HostBusyError) as info:
            hostlock.acquire("run-second")
        assert info.value.pid == holder.pid and info.value.run_id == "run-first"
        assert f"pid {holder.pid}" in str(info.value) and "--wait" in str(info.value)
        holder.send_signal(signal.SIGKILL)  # a killed holder leaves no stale lock
        holder.wait()
        hostlock.acquire("run-second").release()
    finally:
        _kill(holder)


def test_wait_says_so_and_starts_when_the_first_bench_ends():
    holder = _hold_lock_in_child()
    said: list[str] = []
    got: list[hostlock.BenchLock] = []
    waiter = threading.Thread(
        target=lambda: got.append(hostlock.acquire("run-second", wait=True, progress=said.append))
    )
    try:
        waiter.start()
        deadline = time.monotonic() + 20
        while not said and time.monotonic() < deadline:
            time.sleep(0.02)
        assert said and f"pid {holder.pid}" in said[0]
        assert not got  # still waiting while the first bench holds the lock
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        waiter.join(timeout=20)
        assert got and hostlock.holder(hostlock.lock_path()) == (os.getpid(), "run-second")
    finally:
        _kill(holder)
        waiter.join(timeout=20)
        for lock in got:
            lock.release()


@pytest.mark.real
def test_a_sigkilled_bench_leaves_no_worker_and_its_scratch_dir_is_swept(tmp_path, smollm_path):
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "variants:\n  - {name: smol, family: smollm, model: SmolLM2, quant: Q4_1, kind: instruct, "
        f'license: Apache-2.0, source: {{local: {{path: "{smollm_path}"}}}}}}\n'
        "sets:\n  default: [smol]\n"
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)}
    cmd = [PY, "-m", "edgeeval", "--catalog", str(catalog), "bench", "--n-ctx", "256"]
    bench = subprocess.Popen([*cmd, "--reps", "50"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in bench.stderr:
            if "smol: loaded" in line:  # the worker is measuring now
                break
        (worker,) = psutil.Process(bench.pid).children()
        bench.send_signal(signal.SIGKILL)  # only the parent: nothing can clean up after it
        bench.wait()
        assert _gone(worker.pid), "the worker kept computing after its bench was killed"
        (left,) = scratch.iterdir()
        assert left.name.startswith(f"edgeeval-{bench.pid}-")
        assert sweep_stale_tempdirs(scratch) == [left]
    finally:
        _kill(bench)


# --- limits: a stall, not work -------------------------------------------------------------

STEPS = (
    "import json, sys, time\n"
    "for i in range({n}):\n"
    "    print(json.dumps({{'event': 'items', 'done': i}}), flush=True)\n"
    "    time.sleep({every})\n"
    "time.sleep({then})\n"
)


def test_a_child_that_stops_answering_is_stopped_by_the_stall_limit():
    seen: list[tuple[float, Event]] = []
    code = STEPS.format(n=3, every=0.2, then=600)  # three events, then nothing
    outcome = run_child(
        [PY, "-c", code], stall_s=1.5, on_event=lambda e: seen.append((time.monotonic(), e))
    )
    stopped = time.monotonic()
    assert outcome.timed_out and outcome.limit == "stall" and outcome.limit_s == 1.5
    assert outcome.signal == signal.SIGKILL
    assert [e.done for _, e in seen] == [0, 1, 2] and outcome.last_event.done == 2
    # not before the stated limit after the last event; and before the child's own 600 s sleep
    # would have ended it (a logical bound, not a speed limit: a loaded host only delays ticks)
    assert 1.5 <= stopped - seen[-1][0] < 600.0


def test_a_child_that_keeps_making_progress_outlives_the_stall_limit():
    code = STEPS.format(n=12, every=0.25, then=0)  # 3 s of work, an event every 0.25 s
    outcome = run_child([PY, "-c", code], stall_s=1.0)
    assert not outcome.timed_out and outcome.limit == "" and outcome.returncode == 0
    assert len(outcome.events) == 12 and outcome.duration_s > 2.5


def test_the_total_limit_fires_even_while_events_come_and_names_itself():
    code = STEPS.format(n=1000, every=0.1, then=0)
    outcome = run_child([PY, "-c", code], stall_s=5.0, timeout_s=1.0)
    assert outcome.timed_out and outcome.limit == "timeout" and outcome.limit_s == 1.0
    assert outcome.events  # it was making progress: only the total limit could stop it


def test_events_are_typed_and_stray_lines_are_not_events():
    line = Event("items", task="arith", done=16, planned=40, fresh=16, seconds=2.5).to_line()
    assert Event.from_line(line) == Event(
        "items", "arith", done=16, planned=40, fresh=16, seconds=2.5
    )
    assert Event.from_line("llama.cpp: some native noise") is None
    assert Event.from_line('{"no": "event"}') is None
    assert Event.from_line('{"event": "x", "index": 3, "later": 1}') == Event("x", index=3)
    with pytest.raises(TypeError):
        Event("items", items=3)  # type: ignore[call-arg]  # a child's typo fails in the child
