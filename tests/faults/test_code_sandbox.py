"""Real escape attempts against the OS sandbox (bubblewrap), each aimed at a canary the test
owns: a file outside the sandbox's temp dir, an environment variable of this process, a
sleeping child process, a listener on 127.0.0.1. Each attack runs twice: with the inner guard
(the configuration edgeeval uses) and without it (the OS sandbox alone), and each test first
shows, where that is harmless, that the same attack does succeed with no OS sandbox, so a
broken sandbox would fail it. Skipped only where bwrap is not installed."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeeval.sandbox.codeexec import FAILED, PASSED, CodeCheck, ExecLimits, run_check
from edgeeval.sandbox.jail import UNSAFE, Sandbox, choose

REPO = Path(__file__).resolve().parents[2]
QUICK = ExecLimits(wall_s=15, cpu_s=5)
# new processes allowed (RLIMIT_NPROC alone, no seccomp fork rule): for the tests of what
# the pid namespace does with processes the program leaves behind
FORKING = ExecLimits(wall_s=15, cpu_s=5, processes=64)
TRIVIAL_CHECK = "def check(candidate):\n    assert candidate() == 1\n"
NO_OS_SANDBOX = Sandbox(UNSAFE)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    if not sys.platform.startswith("linux") or shutil.which("bwrap") is None:
        pytest.skip("bwrap (bubblewrap) is not installed: apt-get install bubblewrap")
    return choose(unsafe=False)  # bwrap present but broken is a failure, not a skip


@pytest.fixture(params=[True, False], ids=["with-inner-guard", "os-sandbox-alone"])
def guard(request: pytest.FixtureRequest) -> bool:
    return request.param


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    path = tmp_path / "canary.txt"
    path.write_text("CANARY-" + secrets.token_hex(8))
    path.chmod(0o600)
    return path


def attack(
    code: str,
    sandbox: Sandbox,
    guard: bool = False,
    test: str = TRIVIAL_CHECK,
    limits: ExecLimits = QUICK,
):
    """Run `code` as the candidate module's top level; returns the ExecResult."""
    source = code + "\n\ndef f(*args):\n    return 1\n"
    check = CodeCheck("", source, test, "f")
    return run_check(check, sandbox=sandbox, limits=limits, inner_guard=guard)


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError):
            continue
        if entry.isdigit() and marker.encode() in cmdline and int(entry) != os.getpid():
            found.append(int(entry))
    return found


def processes_in(directory: Path) -> list[int]:
    """Pids whose working directory is inside `directory` (sandboxed processes run in their
    temp dir, bound at the same path)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(directory) + "/"):
            found.append(int(entry))
    return found


def alive_and_unsignalled(pid: int) -> bool:
    """The process exists, is not a zombie and has no SIGKILL pending (a kill that has been
    sent but not yet acted on counts as killed)."""
    try:
        status = dict(
            line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
    except OSError:
        return False
    pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
    return status["State"][0] not in "ZX" and not pending & (1 << (signal.SIGKILL - 1))


def wait_until(condition, timeout_s: float = 20.0) -> bool:
    """Poll `condition` until it holds or the time is up; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# ---- files ----

READ = """
import os
found = []
def look(label, read):
    try:
        data = read()
    except Exception as exc:
        return
    text = data.decode("latin-1") if isinstance(data, bytes) else str(data)
    for prefix in ("CANARY-", "ENVCANARY-"):
        if prefix in text:
            found.append(label + ":" + text[text.index(prefix):][:40])
look("open", lambda: open({canary!r}, "rb").read())
def by_dirfd():
    fd = os.open("/", os.O_RDONLY)
    return os.read(os.open({canary!r}.lstrip("/"), os.O_RDONLY, dir_fd=fd), 100)
look("dir_fd", by_dirfd)
look("env", lambda: repr(dict(os.environ)))
for pid in ["self", "1", str(os.getppid()), {parent_pid!r}] + os.listdir("/proc"):
    look("proc-environ", lambda: open("/proc/" + pid + "/environ", "rb").read())
if found:
    raise RuntimeError("LEAKED " + " ".join(found))
"""


def test_the_canary_file_and_environment_cannot_be_read(sandbox, guard, canary, monkeypatch):
    monkeypatch.setenv("EDGEEVAL_TEST_CANARY", "ENVCANARY-" + secrets.token_hex(8))
    code = READ.format(canary=str(canary), parent_pid=str(os.getpid()))
    # guard bypass for the control: make the hook's realpath say "inside the temp dir"
    blind = (
        "import posixpath, os\n_c = os.getcwd()\nposixpath._joinrealpath = lambda *a: (_c, True)\n"
    )
    control = attack(blind + code, NO_OS_SANDBOX, guard=True)
    assert "LEAKED open:CANARY-" in control.detail  # the attack works where nothing stops it
    result = attack(code, sandbox, guard)
    assert "LEAKED" not in result.detail and "CANARY-" not in result.detail
    assert result.status == PASSED  # nothing was found, the trivial check ran


WRITE = """
import os
def attempt(action):
    try:
        action()
    except Exception:
        pass
attempt(lambda: open({canary!r}, "a").write("changed"))
attempt(lambda: os.truncate({canary!r}, 0))
attempt(lambda: os.chmod({canary!r}, 0o777))
attempt(lambda: os.rename({canary!r}, {canary!r} + ".moved"))
attempt(lambda: os.remove({canary!r}))
attempt(lambda: open({new!r}, "w").write("new"))
attempt(lambda: os.mkfifo({fifo!r}))
attempt(lambda: os.symlink("/", {link!r}))
attempt(lambda: os.mkdir({newdir!r}))
def by_dirfd():
    fd = os.open("/", os.O_RDONLY)
    os.remove({canary!r}.lstrip("/"), dir_fd=fd)
attempt(by_dirfd)
def create_by_dirfd():
    fd = os.open("/", os.O_RDONLY)
    os.close(os.open({new!r}.lstrip("/"), os.O_WRONLY | os.O_CREAT, dir_fd=fd))
attempt(create_by_dirfd)
"""


def write_attack(canary: Path) -> str:
    names = {n: str(canary.parent / n) for n in ("new", "fifo", "link", "newdir")}
    return WRITE.format(canary=str(canary), **names)


def test_the_canary_file_cannot_be_changed_deleted_or_joined_by_new_files(sandbox, guard, canary):
    (tmp := canary.parent / "control").mkdir()
    (tmp / "canary.txt").write_text("control")
    attack(write_attack(tmp / "canary.txt"), NO_OS_SANDBOX, guard=False)
    left = {p.name for p in tmp.iterdir()}  # with nothing in the way, the attack works:
    assert "canary.txt" not in left and {"fifo", "link", "new", "newdir"} <= left
    shutil.rmtree(tmp)
    content, mode = canary.read_text(), canary.stat().st_mode
    result = attack(write_attack(canary), sandbox, guard)
    assert result.status == PASSED  # the attack ran to its end
    assert canary.read_text() == content and canary.stat().st_mode == mode
    assert sorted(p.name for p in canary.parent.iterdir()) == ["canary.txt"]


# ---- processes ----

KILL = """
import os, signal
def attempt(action):
    try:
        action()
    except Exception:
        pass
for pid in ({canary_pid}, {parent_pid}):
    attempt(lambda: os.kill(pid, signal.SIGKILL))
    attempt(lambda: os.killpg(pid, signal.SIGKILL))
    attempt(lambda: signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGKILL))
attempt(lambda: os.kill(-1, signal.SIGKILL))  # everything this process may signal
"""


def test_a_canary_process_cannot_be_signalled(sandbox, guard):
    canary = subprocess.Popen(["sleep", "1000"])
    try:
        code = KILL.format(canary_pid=canary.pid, parent_pid=os.getpid())
        result = attack(code, sandbox, guard)
        assert alive_and_unsignalled(canary.pid), "the canary process was killed from inside"
        assert result.status in (PASSED, FAILED)  # kill(-1) may take the candidate with it
    finally:
        canary.kill()
        canary.wait()


DAEMON = """
import os
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", {marker!r}])
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_setsid_daemon_does_not_outlive_the_sandbox(sandbox):
    marker = f"86399.{secrets.randbelow(10**9)}"
    try:  # control: without an OS sandbox (and the hook off), the daemon survives
        attack(DAEMON.format(marker=marker), NO_OS_SANDBOX, guard=False, limits=FORKING)
        assert processes_with(marker), "the control daemon did not start"
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not processes_with(marker))
    result = attack(DAEMON.format(marker=marker), sandbox, guard=False, limits=FORKING)
    assert result.status == PASSED, result  # the fork and the daemon happened
    assert wait_until(lambda: not processes_with(marker))  # the pid namespace is torn down


def test_the_inner_guard_still_refuses_the_daemon(sandbox):
    result = attack(DAEMON.format(marker="86399.1"), sandbox, guard=True)
    assert result.status == FAILED and "sandbox: os.fork is not allowed" in result.detail


# ---- network ----


def test_a_listener_on_loopback_cannot_be_reached(sandbox, guard):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        code = (
            "import socket\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n"
            "except Exception as exc:\n    pass\nelse:\n    raise RuntimeError('CONNECTED')\n"
        )
        control = attack(code, NO_OS_SANDBOX, guard=False)
        assert "CONNECTED" in control.detail
        listener.accept()[0].close()
        result = attack(code, sandbox, guard)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()[0].close()
        assert "CONNECTED" not in result.detail


# ---- the inner guard cannot be switched off from inside ----

DISABLE = """
import __main__, sys
for name in list(vars(__main__)):
    value = getattr(__main__, name)
    if isinstance(value, (set, list, dict)) and name != "__builtins__":
        value.clear()
frame = sys._getframe()
while frame is not None:
    if frame.f_globals is not globals():
        for key in [k for k, v in frame.f_globals.items() if isinstance(v, (set, list))]:
            frame.f_globals[key].clear()
    frame = frame.f_back
import os
os.fork()
"""


def test_emptying_main_and_every_reachable_set_leaves_the_guard_on(sandbox):
    result = attack(DISABLE, sandbox, guard=True)
    assert result.status == FAILED and "sandbox: os.fork is not allowed" in result.detail


# ---- a pass cannot be forged ----

SQUARE_TEST = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n"
FORGERIES = {
    "os._exit at import": "import os\nos._exit(0)\ndef f(x):\n    return 0\n",
    "os._exit in the call": "import os\ndef f(x):\n    os._exit(0)\n",
    "sys.exit at import": "import sys\nsys.exit(0)\ndef f(x):\n    return 0\n",
    "sys.exit in the call": "import sys\ndef f(x):\n    sys.exit(0)\n",
    "equal to everything": (
        "class Any:\n    def __eq__(self, other):\n        return True\n"
        "def f(x):\n    return Any()\n"
    ),
    "frame walking": (
        "import os, sys\n"
        "def f(x):\n"
        "    frame, words = sys._getframe(), set()\n"
        "    while frame is not None:\n"
        "        for scope in (frame.f_locals, frame.f_globals):\n"
        "            words |= {v for v in scope.values() if isinstance(v, str) and len(v) < 64}\n"
        "            scope.update(passed=True, verdict='passed', status='passed')\n"
        "        frame = frame.f_back\n"
        "    for word in words | {'x' * 32}:\n"
        "        for fd in range(64):\n"
        "            for text in (f'{word} passed\\n', '{\"ok\": 4}\\n'):\n"
        "                try:\n"
        "                    os.write(fd, text.encode())\n"
        "                except OSError:\n"
        "                    pass\n"
        "    os._exit(0)\n"
    ),
    "patching the harness": (
        "import sys, builtins, json\n"
        "frame = sys._getframe()\n"
        "while frame is not None:\n"
        "    g = frame.f_globals\n"
        "    for name in ('encode', 'describe', 'report'):\n"
        "        if name in g:\n"
        "            g[name] = lambda *a, **k: 4\n"
        "    frame = frame.f_back\n"
        "builtins.AssertionError = type('Quiet', (Exception,), {})\n"
        "json.dumps = lambda *a, **k: '{\"ok\": 4}'\n"
        "def f(x):\n    return -1\n"
    ),
    "printing a verdict": (
        "import sys\ndef f(x):\n"
        "    print('passed')\n    print('0' * 32 + ' passed', file=sys.stderr)\n    return -1\n"
    ),
}


@pytest.mark.parametrize("name", FORGERIES)
def test_a_forged_pass_is_recorded_as_a_failure(sandbox, guard, name):
    check = CodeCheck("", FORGERIES[name], SQUARE_TEST, "f")
    result = run_check(check, sandbox=sandbox, limits=QUICK, inner_guard=guard)
    assert result.status == FAILED, result
    honest = CodeCheck("", "def f(x):\n    return x * x\n", SQUARE_TEST, "f")
    assert run_check(honest, sandbox=sandbox, limits=QUICK, inner_guard=guard).status == PASSED


# ---- the sandbox dies with its parent ----

WORKER = """
import sys
from edgeeval.sandbox.jail import choose
from edgeeval.sandbox.codeexec import CodeCheck, ExecLimits, run_check
check = CodeCheck("", sys.stdin.read(), "def check(c):\\n    c()\\n", "f")
run_check(check, sandbox=choose(unsafe=False),
          limits=ExecLimits(wall_s=600, cpu_s=600, processes=64), inner_guard=False)
"""
STAY = """
import os
if os.fork() == 0:
    os.setsid()
    os.execv("/bin/sleep", ["sleep", {daemon!r}])
os.execv("/bin/sleep", ["sleep", {main!r}])
"""


def test_killing_the_worker_kills_everything_in_its_sandboxes(sandbox, tmp_path):
    daemon, main = (f"86399.{secrets.randbelow(10**9)}" for _ in range(2))
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(work)}
    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, env=env)
    try:
        worker.stdin.write(STAY.format(daemon=daemon, main=main).encode())
        worker.stdin.close()
        assert wait_until(lambda: processes_with(daemon) and processes_with(main))
        assert processes_with(str(work))  # bwrap's processes, named by their workdirs
        assert processes_in(work)  # the checker, waiting for the candidate
        worker.kill()
        worker.wait()
        assert wait_until(lambda: not processes_with(str(work)) and not processes_in(work))
        assert wait_until(lambda: not processes_with(main) and not processes_with(daemon))
    finally:
        worker.kill()
        left = processes_with(daemon) + processes_with(main) + processes_with(str(work))
        for pid in left + processes_in(work):
            os.kill(pid, signal.SIGKILL)
