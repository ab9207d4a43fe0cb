"""Issue 20's sandbox faults, each attacked for real: a setuid binary planted where other users
can reach it (1), a fork bomb through `_posixsubprocess` loaded under another name (4), /dev/shm
filled in RAM (13), and the temp dirs of a worker SIGKILLed during a check (14). Each attack runs
with the inner guard (edgeeval's configuration) and without it (the OS sandbox alone), and where
it is harmless a control shows that the attack itself works when nothing stops it. The bwrap
tests are skipped only where bwrap is not installed. Run them as root and as an unprivileged
user (`setpriv --reuid=65534 --regid=65534 --clear-groups`): several limits differ for root."""

from __future__ import annotations

import ast
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edgeeval.engine.process import sweep_stale_tempdirs
from edgeeval.sandbox import jail
from edgeeval.sandbox.codeexec import FAILED, CodeCheck, ExecLimits, run_check
from edgeeval.sandbox.jail import Sandbox, choose
from tests.faults.test_code_sandbox import (
    NO_OS_SANDBOX,
    QUICK,
    REPO,
    TRIVIAL_CHECK,
    processes_in,
    processes_with,
    wait_until,
)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    if not sys.platform.startswith("linux") or shutil.which("bwrap") is None:
        pytest.skip("bwrap (bubblewrap) is not installed: apt-get install bubblewrap")
    return choose(unsafe=False)  # bwrap present but broken is a failure, not a skip


@pytest.fixture(params=[True, False], ids=["with-inner-guard", "os-sandbox-alone"])
def guard(request: pytest.FixtureRequest) -> bool:
    return request.param


def run_module(code: str, sandbox: Sandbox, guard: bool, limits: ExecLimits = QUICK):
    """Run `code` as the candidate module's top level (then a trivial check)."""
    check = CodeCheck("", code + "\n\ndef f(*args):\n    return 1\n", TRIVIAL_CHECK, "f")
    return run_check(check, sandbox=sandbox, limits=limits, inner_guard=guard)


# ---- 1: a setuid binary other users can reach ----

PLANT = """
import os, time
def attempt(action):
    try:
        action()
    except Exception:
        pass
with open("tool", "wb") as out:  # stands in for a small static ELF
    out.write(b"#!/bin/sh\\nid\\n")
attempt(lambda: os.chmod("tool", 0o4755))
attempt(lambda: os.chmod("tool", 0o6755))
attempt(lambda: os.close(os.open("made-setuid", os.O_CREAT | os.O_WRONLY, 0o4755)))
attempt(lambda: os.mkdir("setgid-dir", 0o2777))
attempt(lambda: os.chmod(".", 0o755))
attempt(lambda: os.chmod("..", 0o755))
time.sleep(2)  # the window in which another user would run it
modes = {name: oct(os.lstat(name).st_mode) for name in sorted(os.listdir("."))}
raise RuntimeError("PLANTED " + repr(modes))
"""
SETID = stat.S_ISUID | stat.S_ISGID


def exposed(root: Path) -> list[str]:
    """Files and directories under `root` with a setuid/setgid bit, and attack files another
    user could reach (every directory on the way from `root` searchable by others)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            try:
                mode = path.lstat().st_mode
            except OSError:
                continue  # removed meanwhile
            if mode & SETID:
                found.append(f"{path} {oct(mode)}")
            if name in ("tool", "made-setuid") and _reachable(root, path.parent):
                found.append(f"{path} reachable by other users")
    return found


def _reachable(root: Path, directory: Path) -> bool:
    """Every directory from `root` down to `directory` lets others through (o+x)."""
    while True:
        try:
            if not directory.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        if directory == root:
            return True
        directory = directory.parent


@pytest.mark.parametrize("workdir", ["tmpfs", "host-bind"])
def test_planted_setuid_files_never_appear_where_other_users_can_reach_them(
    sandbox, guard, workdir, tmp_path, monkeypatch
):
    if workdir == "host-bind":  # what a bwrap without --size (before 0.7) gets
        monkeypatch.setattr(jail, "bwrap_sizes_tmpfs", lambda tool: False)
    tmp_path.chmod(0o1777)  # a temp dir like /tmp: anyone may pass
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # control: the planting itself works where nothing stops it (no OS sandbox, no hook)
    control = run_module(PLANT, NO_OS_SANDBOX, guard=False)
    assert re.search(r"'tool': '0o10[67]755'", control.detail), control
    # the attack, watched from outside while it runs
    seen: set[str] = set()
    result = []
    runner = threading.Thread(target=lambda: result.append(run_module(PLANT, sandbox, guard)))
    runner.start()
    while runner.is_alive():
        seen.update(exposed(tmp_path))
        time.sleep(0.02)
    runner.join()
    (outcome,) = result
    assert outcome.status == FAILED and "PLANTED" in outcome.detail, outcome  # it ran to its end
    assert seen == set()
    assert "'tool': '0o100644'" in outcome.detail  # inside too, the bits did not take
    assert "made-setuid" not in outcome.detail and "setgid-dir" not in outcome.detail


def test_the_check_directory_is_private_while_the_check_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    modes: list[int] = []
    code = "import time\ntime.sleep(1.5)\n"
    runner = threading.Thread(target=lambda: run_module(code, NO_OS_SANDBOX, guard=True))
    runner.start()
    while runner.is_alive():
        modes += [p.stat().st_mode & 0o777 for p in tmp_path.glob("edgeeval-*")]
        time.sleep(0.02)
    runner.join()
    assert modes and set(modes) == {0o700}


def test_the_inner_guard_refuses_setuid_bits_without_an_os_sandbox(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    outcome = run_module(PLANT, NO_OS_SANDBOX, guard=True)
    assert "'tool': '0o100644'" in outcome.detail and "setgid-dir" not in outcome.detail


# ---- 4: a fork bomb through _posixsubprocess loaded under another name ----

FORK_BOMB = """
import importlib.util, os, sys
lib = [p for p in sys.path if p.endswith("lib-dynload")][0]
name = [n for n in os.listdir(lib) if n.startswith("_posixsubprocess.")][0]
spec = importlib.util.spec_from_file_location("renamed._posixsubprocess", lib + "/" + name)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
started, errors = 0, []
for _ in range({tries}):
    read_end, write_end = os.pipe()
    try:
        pid = module.fork_exec(
            [b"/bin/sleep", b"{marker}"], [b"/bin/sleep"], True, (write_end,), None, None,
            -1, -1, -1, -1, -1, -1, read_end, write_end, True, False, -1, None, None, None,
            -1, None, False,
        )
        started += pid > 0
    except Exception as exc:
        errors.append(type(exc).__name__ + ": " + str(exc))
    finally:
        os.close(read_end)
        os.close(write_end)
raise RuntimeError("STARTED " + str(started) + " ERRORS " + repr(errors[:1]))
"""


def started(detail: str) -> int:
    found = re.search(r"STARTED (\d+)", detail)
    assert found, f"the fork bomb did not run to its end: {detail}"
    return int(found.group(1))


@pytest.mark.skipif(sys.version_info[:2] not in ((3, 11), (3, 12)), reason="fork_exec's args")
def test_a_fork_bomb_past_the_inner_guard_starts_no_process(sandbox, guard):
    marker = f"86399.{secrets.randbelow(10**9)}"
    try:  # control: the hook does not stop the renamed module (only the kernel may)
        control = run_module(FORK_BOMB.format(tries=3, marker=marker), NO_OS_SANDBOX, True)
        assert "sandbox:" not in control.detail and "STARTED" in control.detail, control
        if os.geteuid() == 0:  # RLIMIT_NPROC does not bind for root: the bomb goes off
            assert started(control.detail) == 3
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
    # QUICK has the default limit, ExecLimits.processes = 0: no new process at all
    outcome = run_module(FORK_BOMB.format(tries=50, marker=marker), sandbox, guard)
    assert started(outcome.detail) == 0, outcome
    assert "BlockingIOError" in outcome.detail or "Resource temporarily" in outcome.detail


# ---- 13: /dev/shm in RAM ----

FILL = """
import os
written = {{}}
for path in ("/dev/shm/fill", "/dev/fill", "/fill", "fill-0", "fill-1", "fill-2", "fill-3"):
    try:
        with open(path, "wb") as out:
            for _ in range({mib}):
                out.write(b"x" * 2**20)
                out.flush()
    except OSError:
        pass
    try:
        written[path] = os.stat(path).st_size
    except OSError:
        pass
raise RuntimeError("WRITTEN " + repr(written))
"""


def filled(code: str, sandbox: Sandbox, limits: ExecLimits) -> dict[str, int]:
    """{path: bytes} the FILL code reports (without the hook, which refuses /dev itself)."""
    outcome = run_module(code, sandbox, False, limits)
    assert "WRITTEN" in outcome.detail, outcome
    return ast.literal_eval(outcome.detail.split("WRITTEN ", 1)[1])


def test_dev_shm_and_dev_cannot_be_written(sandbox):
    limits = ExecLimits(wall_s=30, cpu_s=10, file_bytes=8 * 2**20)
    written = filled(FILL.format(mib=8), sandbox, limits)
    assert "/dev/shm/fill" not in written and "/dev/fill" not in written, written
    assert "/fill" not in written and written["fill-0"] == 8 * 2**20  # the workdir works


def test_the_workdir_is_a_tmpfs_capped_at_its_limit(sandbox, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    limits = ExecLimits(wall_s=30, cpu_s=10, file_bytes=8 * 2**20, workdir_bytes=4 * 2**20)
    written = filled(FILL.format(mib=8), sandbox, limits)
    assert 3 * 2**20 <= sum(written.values()) <= limits.workdir_bytes, written
    assert not [p for p in tmp_path.rglob("fill-*")]  # nothing of it on the host


# ---- 14: temp dirs of a worker killed during a check ----

WORKER = """
import sys
from edgeeval.sandbox.jail import UNSAFE, Sandbox, choose
from edgeeval.sandbox.codeexec import CodeCheck, ExecLimits, run_check
box = Sandbox(UNSAFE) if sys.argv[1] == "unsafe" else choose(unsafe=False)
check = CodeCheck("", "import time\\ntime.sleep(600)\\n", "def check(c):\\n    c()\\n", "f")
run_check(check, sandbox=box, limits=ExecLimits(wall_s=600, cpu_s=600))
"""


@pytest.mark.parametrize("kind", ["bwrap", "unsafe"])
def test_the_sweep_removes_the_check_dirs_of_a_killed_worker(kind, tmp_path, request):
    if kind == "bwrap":
        request.getfixturevalue("sandbox")  # skips without bwrap
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, kind], env=env)
    try:
        assert wait_until(lambda: processes_in(tmp_path))  # the check is running
        assert list(tmp_path.glob("edgeeval-*"))
        worker.kill()
        worker.wait()
    finally:
        worker.kill()
        worker.wait()
        if kind == "unsafe":  # no OS sandbox: nothing takes the children down with the worker
            for pid in processes_in(tmp_path):
                os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not processes_in(tmp_path) and not processes_with(str(tmp_path)))
    removed = sweep_stale_tempdirs(tmp_path)
    assert removed and list(tmp_path.iterdir()) == []
