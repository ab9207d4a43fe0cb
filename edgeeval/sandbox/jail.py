"""Operating-system sandboxes for running an untrusted program (model-written code).

`choose(unsafe=...)` returns the sandbox this machine has, and `Sandbox.command(argv, ...)`
wraps a command line in it. Knows nothing about what runs inside.

- Linux: bubblewrap (`bwrap`, Debian package `bubblewrap`). New user, pid, network, IPC, UTS
  and (where the kernel allows) cgroup namespaces; no capabilities; uid/gid 65534 inside;
  `no_new_privs` (bwrap always sets it: no exec gains privileges); a fresh read-only root
  holding only read-only binds of /usr (and the /bin, /lib... entries beside it, as the links
  or directories they are on the host), /etc/ld.so.cache and the interpreter's prefix; every
  mount nosuid. One writable place: the program's working directory (also HOME and TMPDIR),
  a size-limited tmpfs of its own at the path of its host directory, so nothing it writes
  ever lands on the host or is seen by anyone else, and it is gone when the program ends
  (bwrap before 0.7 has no --size: there the host directory is bound, which the caller keeps
  inside a private 0700 directory, and the seccomp filter still refuses setuid bits).
  /dev is a private tmpfs remounted read-only (/dev/null and friends still work, /dev/shm
  cannot be filled); a /proc of its own pid namespace; a cleared environment (PATH,
  LC_ALL, HOME, TMPDIR only); `--new-session` (no terminal to inject into);
  `--die-with-parent` (everything in it is SIGKILLed when the process that started bwrap
  dies). When the program exits, its pid namespace ends and the kernel kills every process
  it left behind (setsid daemons too).
  A seccomp filter (`seccomp_filter`, x86_64 and aarch64) refuses setuid/setgid mode bits
  in chmod/fchmod/fchmodat(2), open/openat/creat, mknod(at) and mkdir(at), with openat2 and
  io_uring (whose arguments it cannot read) refused outright; and unless new processes are
  allowed, every fork, vfork and clone that is not a thread (EAGAIN; clone3 answers ENOSYS so
  the C library falls back to clone). That is a process limit of 0 that holds for every uid:
  RLIMIT_NPROC, which the code check also sets, does not bind when the bench runs as root
  (uid 0 outside the user namespace is exempt). On other architectures there is no filter:
  RLIMIT_NPROC and the inner guard remain. Why not a pids cgroup or a second uid: the
  cgroup tree is read-only in most containers, and bwrap started as an unprivileged uid
  cannot bind an interpreter that lives under a 0700 home (/root/.pyenv), which is common.
  Verified as root in a Debian 12 container with bubblewrap 0.8.0 (kernel 6.x): the full
  namespace set works there (the explicit flags are the set `--unshare-all` would ask for).
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
import platform
import shutil
import struct
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
WORKDIR_BYTES = 32 * 2**20  # the size of the sandbox's writable tmpfs, unless told


@dataclass(frozen=True)
class Sandbox:
    """An OS sandbox: `kind` is BWRAP, SANDBOX_EXEC or UNSAFE, `tool` the wrapper's path."""

    kind: str
    tool: str = ""

    @property
    def isolated(self) -> bool:
        """True when an operating-system sandbox (not only the in-process guard) is used."""
        return self.kind != UNSAFE

    def command(
        self,
        argv: Sequence[str],
        *,
        workdir: str,
        seccomp_fd: int | None = None,
        workdir_bytes: int = WORKDIR_BYTES,
    ) -> list[str]:
        """`argv` (whose first item is the interpreter) wrapped so that it runs sandboxed with
        `workdir` as its only writable directory (under bwrap: a tmpfs of `workdir_bytes` at
        that path, the host directory not shared; a bwrap older than 0.7 cannot size a tmpfs
        and binds the host directory instead). `seccomp_fd` (bwrap only) is a readable fd
        holding a `seccomp_filter` program; the caller passes it to the child."""
        if self.kind == BWRAP:
            return bwrap_command(
                self.tool, argv, workdir=workdir, readable=interpreter_dirs(),
                seccomp_fd=seccomp_fd,
                workdir_bytes=workdir_bytes if bwrap_sizes_tmpfs(self.tool) else None,
            )  # fmt: skip
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
    seccomp_fd: int | None = None,
    workdir_bytes: int | None = WORKDIR_BYTES,
) -> list[str]:
    """The bwrap command line described in the module docstring; `workdir_bytes=None` binds
    the host `workdir` instead of a tmpfs (for a bwrap without --size)."""
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
    cmd += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
    if workdir_bytes is None:
        cmd += ["--bind", workdir, workdir, "--remount-ro", "/"]
    else:
        cmd += ["--size", str(workdir_bytes), "--tmpfs", workdir, "--remount-ro", "/"]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    cmd += ["--chdir", workdir]
    return cmd + list(argv)


# ---- the seccomp filter (classic BPF over struct seccomp_data, see seccomp(2)) ----

_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|BPF_W|BPF_ABS...
_ALLOW, _KILL, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000  # SECCOMP_RET_*
_EPERM, _EAGAIN, _ENOSYS = 1, 11, 38
SETID_BITS = 0o6000  # S_ISUID | S_ISGID
_CLONE_THREAD = 0x00010000
_X32_BIT = 0x40000000


@dataclass(frozen=True)
class _Abi:
    """One architecture's syscall numbers for the filter."""

    audit_arch: int  # AUDIT_ARCH_*
    mode_arg: dict[int, int]  # syscall number -> index of its mode argument
    forks: tuple[int, ...]  # fork, vfork (where the architecture has them)
    clone: int
    clone3: int
    unreadable: tuple[int, ...]  # openat2 and io_uring_setup: arguments behind pointers
    x32: bool = False  # x86_64: numbers with bit 30 set are the x32 ABI


_ABIS = {
    # chmod fchmod fchmodat fchmodat2 open openat creat mknod mknodat mkdir mkdirat
    "x86_64": _Abi(
        0xC000003E,
        {90: 1, 91: 1, 268: 2, 452: 2, 2: 2, 257: 3, 85: 1, 133: 1, 259: 2, 83: 1, 258: 2},
        forks=(57, 58),
        clone=56,
        clone3=435,
        unreadable=(437, 425),
        x32=True,
    ),
    # fchmod fchmodat fchmodat2 openat mknodat mkdirat (the generic table has no others)
    "aarch64": _Abi(
        0xC00000B7,
        {52: 1, 53: 2, 452: 2, 56: 3, 33: 2, 34: 2},
        forks=(),
        clone=220,
        clone3=435,
        unreadable=(437, 425),
    ),
}


def seccomp_filter(*, processes: bool, machine: str = "") -> bytes | None:
    """The compiled filter bwrap's --seccomp loads (None where the architecture is not known,
    `machine` defaulting to this one's): setuid/setgid mode bits refused with EPERM, openat2
    and io_uring_setup with ENOSYS; unless `processes`, fork/vfork and a clone that is not a
    thread refused with EAGAIN and clone3 with ENOSYS (so threads fall back to clone). A
    syscall of another ABI (32-bit or x32 calls on x86_64) kills the process."""
    abi = _ABIS.get(machine or platform.machine())
    if abi is None:
        return None
    low = 0 if sys.byteorder == "little" else 4  # where an argument's low 32 bits are

    def arg(index: int) -> int:
        return 16 + 8 * index + low

    code: list[tuple[int, str | int, str | int, int]] = [(_LD_ABS, 0, 0, 4)]  # arch
    code.append((_JEQ, 0, "kill", abi.audit_arch))
    code.append((_LD_ABS, 0, 0, 0))  # nr
    if abi.x32:
        code.append((_JGE, "kill", 0, _X32_BIT))
    code += [(_JEQ, "enosys", 0, nr) for nr in abi.unreadable]
    if not processes:
        code += [(_JEQ, "eagain", 0, nr) for nr in abi.forks]
        code += [(_JEQ, "enosys", 0, abi.clone3), (_JEQ, "clone", 0, abi.clone)]
    code += [(_JEQ, f"mode{i}", 0, nr) for nr, i in abi.mode_arg.items()]
    code.append((_RET, 0, 0, _ALLOW))
    labels: dict[str, int] = {}
    for index in sorted(set(abi.mode_arg.values())):
        labels[f"mode{index}"] = len(code)
        code += [(_LD_ABS, 0, 0, arg(index)), (_JSET, "eperm", 0, SETID_BITS)]
        code.append((_RET, 0, 0, _ALLOW))
    labels["clone"] = len(code)
    code += [(_LD_ABS, 0, 0, arg(0)), (_JSET, 0, "eagain", _CLONE_THREAD)]
    code.append((_RET, 0, 0, _ALLOW))
    for name, action in (("eperm", _ERRNO | _EPERM), ("eagain", _ERRNO | _EAGAIN),
                         ("enosys", _ERRNO | _ENOSYS), ("kill", _KILL)):  # fmt: skip
        labels[name] = len(code)
        code.append((_RET, 0, 0, action))

    def offset(at: int, target: str | int) -> int:
        if isinstance(target, int):
            return target
        jump = labels[target] - at - 1
        assert 0 <= jump < 256, "a BPF jump is one forward byte"
        return jump

    return b"".join(
        struct.pack("=HBBI", op, offset(at, jt), offset(at, jf), k)
        for at, (op, jt, jf, k) in enumerate(code)
    )


def seccomp_fd(program: bytes) -> int:
    """A pipe's read end holding `program` (whole, then EOF), for bwrap's --seccomp."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, program)  # a few hundred bytes: far below a pipe's buffer
    finally:
        os.close(write_fd)
    return read_fd


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
def bwrap_sizes_tmpfs(bwrap: str) -> bool:
    """Whether this bwrap has --size (0.7.0 and later; Ubuntu 22.04 ships 0.6.1). Without it,
    the program's directory is its host directory, inside the caller's private 0700 one."""
    try:
        proc = subprocess.run([bwrap, "--help"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--size" in proc.stdout + proc.stderr


@functools.lru_cache(maxsize=4)
def probe_bwrap(bwrap: str) -> str:
    """'' when bwrap can run the interpreter with the full namespace set here; otherwise
    what went wrong (bwrap's own message)."""
    program = seccomp_filter(processes=False)
    with tempfile.TemporaryDirectory(prefix=f"edgeeval-{os.getpid()}-probe-") as tmp:
        argv = [interpreter(), "-I", "-S", "-c", "pass"]
        fds = [seccomp_fd(program)] if program is not None else []
        cmd = Sandbox(BWRAP, bwrap).command(argv, workdir=tmp, seccomp_fd=fds[0] if fds else None)
        try:
            proc = subprocess.run(
                cmd, capture_output=True, timeout=60, env=environment(tmp), pass_fds=fds
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        finally:
            for fd in fds:
                os.close(fd)
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
