"""Operating-system sandboxes for running an untrusted program (model-written code).

`choose(unsafe=...)` returns the sandbox this machine has, and `Sandbox.command(argv, ...)`
wraps a command line in it. Knows nothing about what runs inside.

- Linux: bubblewrap (`bwrap`, Debian package `bubblewrap`). New user, pid, network, IPC, UTS
  and (where the kernel allows) cgroup namespaces; no capabilities; uid/gid 65534 inside; a
  fresh read-only root holding only read-only binds of /usr (and the /bin, /lib... entries
  beside it, as the links or directories they are on the host), /etc/ld.so.cache and the
  interpreter's prefix; one writable directory (the program's own temporary directory, also
  its working directory and HOME; /dev is a private tmpfs discarded at exit); a /proc of its
  own pid namespace; a cleared environment (PATH, LC_ALL, HOME, TMPDIR only);
  `--new-session` (no terminal to inject into); `--die-with-parent` (everything in it is
  SIGKILLed when the process that started bwrap dies). When the program exits, its pid
  namespace ends and the kernel kills every process it left behind (setsid daemons too).
  Verified as root in a Debian 12 container with bubblewrap 0.8.0: the full namespace set
  works there (the explicit flags are the set `--unshare-all` would ask for).
- macOS: `sandbox-exec` with a generated profile: no network, no writes outside the
  program's temporary directory (and /dev/null), no reading the user's home except the
  interpreter's prefix, no fork, no exec except the interpreter. Only unit-tested (the
  command line and profile), not run: no Mac was available.
- Elsewhere, or without the tool: `choose` raises SandboxUnavailableError naming the
  package, unless `unsafe` (--unsafe-code-exec) asks for the in-process guard alone.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgeeval.errors import SandboxUnavailableError

BWRAP, SANDBOX_EXEC, UNSAFE = "bwrap", "sandbox-exec", "none (unsafe)"
BWRAP_INSTALL = "sudo apt-get install bubblewrap"
# Host root entries bound read-only into the bwrap sandbox (when they exist).
SYSTEM_ENTRIES = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SANDBOX_UID = "65534"  # nobody


@dataclass(frozen=True)
class Sandbox:
    """An OS sandbox: `kind` is BWRAP, SANDBOX_EXEC or UNSAFE, `tool` the wrapper's path."""

    kind: str
    tool: str = ""

    @property
    def isolated(self) -> bool:
        """True when an operating-system sandbox (not only the in-process guard) is used."""
        return self.kind != UNSAFE

    def command(self, argv: Sequence[str], *, workdir: str) -> list[str]:
        """`argv` (whose first item is the interpreter) wrapped so that it runs sandboxed with
        `workdir` as its only writable directory."""
        if self.kind == BWRAP:
            return bwrap_command(self.tool, argv, workdir=workdir, readable=interpreter_dirs())
        if self.kind == SANDBOX_EXEC:
            profile = seatbelt_profile(
                workdir=workdir,
                interpreter=argv[0],
                readable=interpreter_dirs(),
                home=os.path.expanduser("~"),
            )
            return [self.tool, "-p", profile, *argv]
        return list(argv)


def environment(workdir: str) -> dict[str, str]:
    """The whole environment a sandboxed program gets (no tokens, nothing of the parent's)."""
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}


def interpreter() -> str:
    """The real Python executable (a venv's python resolved to its base interpreter, which
    is all `python -I -S` needs)."""
    return os.path.realpath(sys.executable)


def interpreter_dirs() -> list[str]:
    """Directories the interpreter must read: its prefixes and its executable's directory."""
    exe_dir = os.path.dirname(interpreter())
    dirs = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix, exe_dir)}
    return sorted(dirs)


def _host_entry(path: str) -> str | None:
    """'link:<target>' for a symlink, 'dir' for a directory, None when absent."""
    if os.path.islink(path):
        return "link:" + os.readlink(path)
    return "dir" if os.path.isdir(path) else None


def bwrap_command(
    bwrap: str,
    argv: Sequence[str],
    *,
    workdir: str,
    readable: Sequence[str],
    host_entry: Callable[[str], str | None] = _host_entry,
) -> list[str]:
    """The bwrap command line described in the module docstring."""
    cmd = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
    cmd += ["--unshare-uts", "--unshare-cgroup-try", "--uid", SANDBOX_UID, "--gid", SANDBOX_UID]
    cmd += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
    for name, value in environment(workdir).items():
        cmd += ["--setenv", name, value]
    bound = []
    for entry in SYSTEM_ENTRIES:
        kind = host_entry(entry)
        if kind and kind.startswith("link:"):
            cmd += ["--symlink", kind[5:], entry]
        elif kind == "dir":
            cmd += ["--ro-bind", entry, entry]
            bound.append(entry)
    for path in readable:
        if not any(path == b or path.startswith(b + "/") for b in bound):
            cmd += ["--ro-bind", path, path]
            bound.append(path)
    cmd += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--bind", workdir, workdir, "--remount-ro", "/"]
    cmd += ["--chdir", workdir]
    return cmd + list(argv)


def _quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def seatbelt_profile(*, workdir: str, interpreter: str, readable: Sequence[str], home: str) -> str:
    """A sandbox-exec (SBPL) profile; later rules win over earlier ones."""
    work = _quote(os.path.realpath(workdir))  # /var/folders/... is /private/var/...
    lines = [
        "(version 1)",
        "(allow default)",
        "(deny network*)",
        "(deny process-fork)",
        "(deny process-exec)",
        f"(allow process-exec (literal {_quote(interpreter)}))",
        "(deny file-write*)",
        f"(allow file-write* (subpath {work}))",
        '(allow file-write-data (literal "/dev/null"))',
        f"(deny file-read* (subpath {_quote(home)}))",
        *(f"(allow file-read* (subpath {_quote(p)}))" for p in readable),
        f"(allow file-read* (subpath {work}))",
    ]
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=4)
def probe_bwrap(bwrap: str) -> str:
    """'' when bwrap can run the interpreter with the full namespace set here; otherwise
    what went wrong (bwrap's own message)."""
    with tempfile.TemporaryDirectory(prefix="edgeeval-probe-") as tmp:
        argv = [interpreter(), "-I", "-S", "-c", "pass"]
        cmd = bwrap_command(bwrap, argv, workdir=tmp, readable=interpreter_dirs())
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=60, env=environment(tmp))
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
    if proc.returncode == 0:
        return ""
    message = " ".join(proc.stderr.decode("utf-8", "replace").split())[-300:]
    return f"bwrap fails here (exit code {proc.returncode}): {message}"


def choose(
    *,
    unsafe: bool,
    platform: str = sys.platform,
    which: Callable[[str], str | None] = shutil.which,
    probe: Callable[[str], str] = probe_bwrap,
) -> Sandbox:
    """The sandbox to run generated code in: UNSAFE when `unsafe`, otherwise the platform's
    OS sandbox. Raises SandboxUnavailableError when there is none that works."""
    if unsafe:
        return Sandbox(UNSAFE)
    if platform.startswith("linux"):
        tool = which("bwrap")
        if not tool:
            raise SandboxUnavailableError(
                platform=platform, reason="bwrap (bubblewrap) is not installed",
                install=BWRAP_INSTALL,
            )  # fmt: skip
        problem = probe(tool)
        if problem:
            raise SandboxUnavailableError(
                platform=platform,
                reason=problem + " (unprivileged user namespaces may be disabled: "
                "sysctl kernel.unprivileged_userns_clone=1)",
                install="",
            )
        return Sandbox(BWRAP, tool)
    if platform == "darwin":
        tool = which("sandbox-exec")
        if not tool:
            raise SandboxUnavailableError(
                platform=platform, reason="sandbox-exec is missing (it ships with macOS)",
                install="",
            )  # fmt: skip
        return Sandbox(SANDBOX_EXEC, tool)
    raise SandboxUnavailableError(
        platform=platform, reason="edgeeval knows no OS sandbox for this platform", install=""
    )
