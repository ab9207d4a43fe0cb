import signal
import sys

from edgeeval.engine.process import maxrss_bytes, run_child

PY = sys.executable


def test_a_hung_child_is_killed_at_the_timeout_and_reported():
    outcome = run_child([PY, "-c", "import time; time.sleep(600)"], timeout_s=1.0)
    assert outcome.timed_out
    assert outcome.signal == signal.SIGKILL


def test_a_crashing_child_reports_its_signal_and_stderr():
    code = (
        "import os, signal, sys; print('about to crash', file=sys.stderr, flush=True); "
        "os.kill(os.getpid(), signal.SIGSEGV)"
    )
    outcome = run_child([PY, "-c", code], timeout_s=60)
    assert outcome.signal == signal.SIGSEGV and not outcome.timed_out
    assert "about to crash" in outcome.stderr_tail


def test_progress_events_reach_the_parent_in_order():
    code = (
        "import json\nfor i in range(3): print(json.dumps({'event': 'step', 'index': i}))\n"
        "print('native noise that is not json')"
    )
    seen = []
    outcome = run_child([PY, "-c", code], timeout_s=60, on_event=seen.append)
    assert outcome.returncode == 0
    assert [(e.kind, e.index) for e in seen] == [("step", 0), ("step", 1), ("step", 2)]


def test_sampled_peak_rss_agrees_with_the_kernels_maxrss():
    # The child touches 300 MB and keeps it for about a second of busy work, so the sampler,
    # polling every 20 ms, sees the plateau; the kernel's ru_maxrss is the reference.
    code = (
        "import time\nb = bytearray(300 * 10**6)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
        "end = time.monotonic() + 1.0\nwhile time.monotonic() < end: pass\n"
    )
    outcome = run_child([PY, "-c", code], timeout_s=60)
    assert outcome.returncode == 0
    assert outcome.peak_rss_bytes > 300 * 10**6
    assert abs(outcome.peak_rss_bytes - outcome.os_maxrss_bytes) / outcome.os_maxrss_bytes < 0.03
    assert outcome.n_samples >= 10


def test_maxrss_units_differ_by_platform():
    assert maxrss_bytes(1000, "linux") == 1_024_000
    assert maxrss_bytes(1000, "darwin") == 1000


def test_kernel_peak_is_the_childs_own_even_when_the_parent_is_large():
    # Linux carries a parent's RSS high-water mark into a forked child and across exec; the
    # kernel figure must still describe the child alone.
    ballast = bytearray(600 * 10**6)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    code = (
        "import time\nb = bytearray(100 * 10**6)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
        "end = time.monotonic() + 0.5\nwhile time.monotonic() < end: pass\n"
    )
    outcome = run_child([PY, "-c", code], timeout_s=60)
    assert outcome.returncode == 0
    assert outcome.os_maxrss_bytes < 400 * 10**6
    assert abs(outcome.peak_rss_bytes - outcome.os_maxrss_bytes) / outcome.os_maxrss_bytes < 0.03
    del ballast
