"""Running model-written code (HumanEval) and judging it from outside the code's reach.

Only called when the user passed `--allow-code-exec` (or `--unsafe-code-exec`). Each problem
runs as two processes, each in its own operating-system sandbox (edgeeval.sandbox.jail:
bubblewrap on Linux, sandbox-exec on macOS; none with --unsafe-code-exec):

- the candidate: the prompt + the model's completion, loaded as a module; it then answers
  calls of the entry point, one request per line on a pipe, values in a plain-data codec
  (None, numbers, strings, bytes and lists/tuples/dicts/sets of them; see exec_boot).
- the checker: the task's prompt (for helpers such as HumanEval's `poly`) and test code,
  with the entry point replaced by a proxy that forwards each call to the candidate; it runs
  check(proxy) and writes "passed" or "failed ..." on a pipe that only it holds, to this
  process, prefixed with a per-problem random nonce.

Both also keep the inner guard of earlier versions: rlimits (CPU, address space, file size,
open files, no core dumps, no new processes) and an audit hook refusing process creation,
signals, sockets, ctypes, writes outside their temporary directory, reads outside it and the
standard library, and dir_fd-relative file calls. The hook's lists are constants in its code,
and `import __main__` reaches a fresh module, so emptying them from inside no longer works;
it is still best effort (CPython's own modules can be patched), the OS sandbox is the wall.
Under bwrap the wall also holds what the hook cannot: its seccomp filter refuses every new
process (the hook can be side-stepped by loading _posixsubprocess under another name, and
RLIMIT_NPROC does not bind for root) and setuid/setgid bits, and each program writes only
into a size-limited tmpfs of its own (see edgeeval.sandbox.jail).

Temporary directories. Each check makes one private directory, edgeeval-<pid>-check-<random>
(mode 0700, so no other user can reach into it), holding `candidate/` and `checker/`, the
working directories of the two programs (under bwrap, only the path: each program gets a
tmpfs there). The pid in the name is this process's: if it is killed during a check, the
start-up sweep (edgeeval.engine.process.sweep_stale_tempdirs) removes the directory once
that pid is gone.

Why a pass cannot be forged. The verdict is the checker's, and nothing the model wrote runs
in the checker: it only receives decoded plain data, so an assertion there holds only if the
returned value really equals what the test expects. The candidate cannot reach the checker:
they are separate processes in separate pid namespaces (neither can see, signal or ptrace
the other), and the report pipe is never handed to the candidate. So an early os._exit(0)
or sys.exit(0) (the checker sees the candidate gone: failed), frame walking or patching the
harness inside the candidate (only changes the data it sends) and printing a fake verdict
(nobody reads the candidate's output) are all failures. This process decides: passed only
when the checker reported "passed" with the nonce and exited 0, within the time limit.
Residual risk: weak tests (a hard-coded answer that satisfies them passes, as anywhere), and
bugs in CPython's JSON decoder or the kernel. With --unsafe-code-exec the two are sibling
processes of one user with no OS walls: a program that defeats the inner guard can reach the
checker through /proc, so a forged pass, and anything else, becomes possible.

Outcomes: "passed"; "failed" (an exception or failed assertion, a refused operation, an
exit before the check finished); "timeout" (wall clock or CPU time; counted as a failure, it
is the model's program); "harness_error" (a sandbox did not start, the prompt does not run on
its own, or the checker was killed from outside): not a result of the model, reported apart.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from edgeeval.orphans import child_setup
from edgeeval.sandbox.jail import (
    BWRAP,
    WORKDIR_BYTES,
    Sandbox,
    environment,
    interpreter,
    seccomp_fd,
    seccomp_filter,
)

PASSED, FAILED, TIMEOUT, HARNESS_ERROR = "passed", "failed", "timeout", "harness_error"
OUTCOMES = (PASSED, FAILED, TIMEOUT, HARNESS_ERROR)
_BOOT = (Path(__file__).with_name("exec_boot.py")).read_text()


@dataclass(frozen=True)
class ExecLimits:
    """Resources one program may use."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_bytes: int = 512 * 2**20
    file_bytes: int = 10 * 2**20
    open_files: int = 64
    # new processes: 0 is enforced by the seccomp filter under bwrap (for every uid) and by
    # RLIMIT_NPROC; more (only for tests of the pid namespace) by RLIMIT_NPROC alone, which
    # does not bind when the bench runs as root.
    processes: int = 0
    workdir_bytes: int = WORKDIR_BYTES  # the writable tmpfs of each program under bwrap


@dataclass(frozen=True)
class CodeCheck:
    """One problem: the prompt, the model's completion, the test code defining
    check(candidate), and the name of the function under test. The candidate runs prompt +
    completion, or `program` when set (the instruct protocol's extracted code); the checker
    always has the prompt (for helpers such as HumanEval's `poly`)."""

    prompt: str
    completion: str
    test: str
    entry_point: str
    program: str = ""


@dataclass(frozen=True)
class ExecResult:
    """How one check ended; `detail` says why it failed or was not judged."""

    status: str
    detail: str = ""
    duration_s: float = 0.0


@dataclass
class _Child:
    role: str
    proc: subprocess.Popen | None = None
    stderr: IO[bytes] | None = None

    def tail(self) -> str:
        """The last lines the process wrote on stderr."""
        if self.stderr is None:
            return ""
        self.stderr.seek(0)
        text = self.stderr.read()[-1000:].decode("utf-8", "replace").strip()
        return " | ".join(text.splitlines()[-3:])

    def signal(self, sandboxed: bool) -> int:
        """The signal that ended the process (0 if it exited); bwrap reports 128 + n."""
        code = self.proc.returncode if self.proc else 0
        if code is None:
            return 0
        if code < 0:
            return -code
        return code - 128 if sandboxed and code > 128 else 0


def run_check(
    check: CodeCheck,
    *,
    sandbox: Sandbox,
    limits: ExecLimits = ExecLimits(),
    inner_guard: bool = True,
) -> ExecResult:
    """Run `check` as described in the module docstring; never raises for anything the
    program does. Returns the outcome. `inner_guard=False` leaves out the audit hook (the
    rlimits stay): only for tests of the OS sandbox on its own."""
    start = time.monotonic()
    nonce = secrets.token_hex(16)
    with ExitStack() as stack:
        private = stack.enter_context(
            tempfile.TemporaryDirectory(prefix=f"edgeeval-{os.getpid()}-check-")
        )  # mkdtemp: mode 0700
        tmp = [os.path.join(private, "candidate"), os.path.join(private, "checker")]
        for path in tmp:
            os.mkdir(path, 0o700)
        children = [_Child("candidate"), _Child("checker")]
        try:
            for child in children:
                child.stderr = stack.enter_context(tempfile.TemporaryFile())
            report_r, timed_out = _run_pair(
                check, children, tmp, sandbox, limits, nonce, inner_guard
            )
        except OSError as exc:
            _kill(children)
            return ExecResult(HARNESS_ERROR, f"could not start the sandbox: {exc}", _since(start))
        with os.fdopen(report_r, "rb") as pipe:
            lines = _report_lines(pipe.read(1 << 16), nonce)
        status, detail = _judge(lines, children, timed_out, sandbox, limits, _since(start))
    return ExecResult(status, detail, _since(start))


def _since(start: float) -> float:
    return time.monotonic() - start


def _run_pair(
    check: CodeCheck,
    children: list[_Child],
    tmp: list[str],
    sandbox: Sandbox,
    limits: ExecLimits,
    nonce: str,
    guard: bool,
) -> tuple[int, bool]:
    """Start the candidate and the checker connected by pipes, wait for the checker (or the
    wall clock), kill both. Returns (the read end of the report pipe, timed out)."""
    request_r, request_w = os.pipe()
    reply_r, reply_w = os.pipe()
    report_r, report_w = os.pipe()
    common = {"limits": _rlimits(limits), "entry_point": check.entry_point, "guard": guard}
    headers = [
        {"role": "candidate", "request_fd": request_r, "reply_fd": reply_w, "tmp": tmp[0],
         "source": check.program or check.prompt + check.completion},
        {"role": "checker", "request_fd": request_w, "reply_fd": reply_r, "tmp": tmp[1],
         "report_fd": report_w, "nonce": nonce, "prompt": check.prompt, "test": check.test},
    ]  # fmt: skip
    fds = [(request_r, reply_w), (request_w, reply_r, report_w)]
    try:
        for child, header, pass_fds, workdir in zip(children, headers, fds, tmp, strict=True):
            assert child.stderr is not None, "run_check opens each child's stderr file first"
            child.proc = proc = _start(sandbox, workdir, pass_fds, child.stderr, limits)
            _send_header(proc, {**common, **header})
    except OSError:
        os.close(report_r)
        raise
    finally:
        for fd in (request_r, request_w, reply_r, reply_w, report_w):
            os.close(fd)  # the children hold their ends; ours would hide an EOF
    checker = children[1].proc
    assert checker is not None, "both children were started above"
    timed_out = False
    try:
        checker.wait(timeout=limits.wall_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    _kill(children)
    return report_r, timed_out


def _start(
    sandbox: Sandbox,
    workdir: str,
    pass_fds: tuple[int, ...],
    stderr: IO[bytes],
    limits: ExecLimits,
) -> subprocess.Popen[bytes]:
    """One sandboxed `python -I -S` running exec_boot; returns the Popen."""
    program = seccomp_filter(processes=limits.processes > 0) if sandbox.kind == BWRAP else None
    filter_fd = seccomp_fd(program) if program is not None else None
    argv = sandbox.command(
        [interpreter(), "-I", "-S", "-c", _BOOT],
        workdir=workdir,
        seccomp_fd=filter_fd,
        workdir_bytes=limits.workdir_bytes,
    )
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=workdir,
            env=environment(workdir),
            pass_fds=pass_fds if filter_fd is None else (*pass_fds, filter_fd),
            start_new_session=True,
            # bwrap's --die-with-parent holds only once bwrap runs: this covers fork to exec
            preexec_fn=child_setup(os.getpid()),
        )
    finally:
        if filter_fd is not None:
            os.close(filter_fd)


def _send_header(proc: subprocess.Popen[bytes], header: dict) -> None:
    """Write the JSON header line and close stdin (a child that died early is judged later)."""
    assert proc.stdin is not None, "_start opens stdin as a pipe"
    try:
        proc.stdin.write((json.dumps(header) + "\n").encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass


def _rlimits(limits: ExecLimits) -> list[tuple[str, int, int]]:
    """(name, soft, hard). The CPU hard limit is one second above the soft one, so the kernel
    sends SIGXCPU first; equal hard limits keep the code from raising the soft ones back."""
    return [
        ("RLIMIT_CPU", limits.cpu_s, limits.cpu_s + 1),
        ("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes),
        ("RLIMIT_FSIZE", limits.file_bytes, limits.file_bytes),
        ("RLIMIT_NOFILE", limits.open_files, limits.open_files),
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_NPROC", limits.processes, limits.processes),
    ]


def _kill(children: list[_Child]) -> None:
    """SIGKILL each child's process group (bwrap takes its whole pid namespace with it)."""
    for child in children:
        if child.proc is None:
            continue
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        child.proc.wait()


def _report_lines(data: bytes, nonce: str) -> list[list[str]]:
    """The checker's report lines ("<nonce> <word> <detail>") as [word, detail]."""
    text = data.decode("utf-8", "replace")
    lines = [line.split(" ", 2)[1:] for line in text.splitlines() if line.startswith(nonce + " ")]
    return [words + [""] * (2 - len(words)) for words in lines]


def _judge(
    lines: list[list[str]],
    children: list[_Child],
    timed_out: bool,
    sandbox: Sandbox,
    limits: ExecLimits,
    duration_s: float,
) -> tuple[str, str]:
    """Outcome and detail from the checker's report, the exit statuses and the clocks."""
    candidate, checker = children
    assert checker.proc is not None, "_judge runs only after both children started"
    verdict = next(
        (w for w in lines if w[0] in (PASSED, FAILED, "no_candidate", "prompt_error")), None
    )
    if verdict and verdict[0] == PASSED and checker.proc.returncode == 0 and not timed_out:
        return PASSED, ""
    if timed_out:
        return TIMEOUT, f"still running after {limits.wall_s:g} s (wall clock); killed"
    died = candidate.signal(sandbox.isolated)
    if died == signal.SIGXCPU or (died == signal.SIGKILL and duration_s >= limits.cpu_s):
        return TIMEOUT, f"used more than {limits.cpu_s} s of CPU time"
    if verdict and verdict[0] == FAILED:
        return FAILED, verdict[1]
    if verdict and verdict[0] == "no_candidate":
        return HARNESS_ERROR, f"{verdict[1]}: {candidate.tail()}"
    if verdict and verdict[0] == "prompt_error":
        return HARNESS_ERROR, verdict[1]
    if not any(w[0] == "started" for w in lines):
        return HARNESS_ERROR, (
            f"the checker's sandbox did not start (exit code {checker.proc.returncode}): "
            + checker.tail()
        )
    if checker.signal(sandbox.isolated) == signal.SIGKILL:
        return HARNESS_ERROR, "the checker was killed from outside (out of memory on the host?)"
    return FAILED, f"the checker ended with code {checker.proc.returncode} without a verdict"
