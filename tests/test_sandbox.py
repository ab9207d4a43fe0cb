"""Choosing the OS sandbox and building its command line, with the platform's facts given
(no Mac is needed for the macOS part, no bwrap for the Linux part)."""

import struct

import pytest

from edgeeval.errors import EdgeevalError, SandboxUnavailableError
from edgeeval.sandbox import jail as sb

ARGV = ["/opt/py/bin/python3.11", "-I", "-S", "-c", "pass"]


def which_only(*present: str):
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_linux_with_a_working_bwrap_chooses_it():
    chosen = sb.choose(
        unsafe=False, platform="linux", which=which_only("bwrap"), probe=lambda t: ""
    )
    assert chosen == sb.Sandbox(sb.BWRAP, "/usr/bin/bwrap") and chosen.isolated


def test_without_bwrap_code_exec_is_refused_naming_the_package_and_the_opt_out():
    with pytest.raises(SandboxUnavailableError) as caught:
        sb.choose(unsafe=False, platform="linux", which=which_only())
    message = str(caught.value)
    assert isinstance(caught.value, EdgeevalError) and caught.value.exit_code == 2
    assert "apt-get install bubblewrap" in message and "make sysdeps" in message
    assert "--unsafe-code-exec" in message and "bwrap (bubblewrap) is not installed" in message


def test_a_bwrap_that_fails_here_is_refused_with_its_own_message():
    def probe(tool: str) -> str:
        return "bwrap fails here (exit code 1): No permissions to creating new namespace"

    with pytest.raises(SandboxUnavailableError, match="No permissions to creating new namespace"):
        sb.choose(unsafe=False, platform="linux", which=which_only("bwrap"), probe=probe)


def test_unsafe_chooses_the_inner_guard_alone_even_where_a_sandbox_exists():
    chosen = sb.choose(unsafe=True, platform="linux", which=which_only("bwrap"))
    assert (chosen.kind, chosen.isolated) == ("none (unsafe)", False)
    assert chosen.command(ARGV, workdir="/tmp/w") == ARGV


def test_an_unknown_platform_is_refused():
    with pytest.raises(SandboxUnavailableError, match="win32"):
        sb.choose(unsafe=False, platform="win32", which=which_only("bwrap"))


def test_macos_chooses_sandbox_exec_and_refuses_without_it():
    chosen = sb.choose(unsafe=False, platform="darwin", which=which_only("sandbox-exec"))
    assert chosen == sb.Sandbox(sb.SANDBOX_EXEC, "/usr/bin/sandbox-exec")
    with pytest.raises(SandboxUnavailableError, match="sandbox-exec is missing"):
        sb.choose(unsafe=False, platform="darwin", which=which_only())


def test_the_macos_command_runs_the_interpreter_under_the_profile(monkeypatch):
    monkeypatch.setattr(sb, "interpreter_dirs", lambda: ["/opt/py"])
    monkeypatch.setattr(sb.os.path, "expanduser", lambda path: "/Users/me")
    cmd = sb.Sandbox(sb.SANDBOX_EXEC, "/usr/bin/sandbox-exec").command(ARGV, workdir="/w/x")
    assert cmd[:2] == ["/usr/bin/sandbox-exec", "-p"] and cmd[3:] == ARGV
    assert cmd[2] == sb.seatbelt_profile(
        workdir="/w/x", interpreter=ARGV[0], readable=["/opt/py"], home="/Users/me"
    )


def test_the_macos_profile_denies_network_and_writes_outside_the_workdir():
    profile = sb.seatbelt_profile(
        workdir="/w/x", interpreter="/opt/py/bin/python3", readable=["/opt/py"], home="/Users/me"
    ).splitlines()
    assert profile[:3] == ["(version 1)", "(allow default)", "(deny network*)"]
    # SBPL: the last matching rule wins, so each allow must follow its deny
    order = [
        "(deny process-exec)",
        '(allow process-exec (literal "/opt/py/bin/python3"))',
        "(deny file-write*)",
        '(allow file-write* (subpath "/w/x"))',
        '(deny file-read* (subpath "/Users/me"))',
        '(allow file-read* (subpath "/opt/py"))',
        '(allow file-read* (subpath "/w/x"))',
    ]
    assert [line for line in profile if line in order] == order
    assert "(deny process-fork)" in profile
    assert not [line for line in profile if "allow network" in line]


def test_profile_paths_are_quoted():
    profile = sb.seatbelt_profile(workdir='/w/a"b', interpreter="/p", readable=[], home="/h")
    assert '(subpath "/w/a\\"b")' in profile


HOST = {"/usr": "dir", "/bin": "link:usr/bin", "/lib": "link:usr/lib", "/lib64": "dir"}


def test_the_bwrap_command_isolates_everything_but_the_workdir():
    cmd = sb.bwrap_command(
        "/usr/bin/bwrap", ARGV, workdir="/tmp/w", readable=["/opt/py", "/usr/lib/x"],
        host_entry=HOST.get,
    )  # fmt: skip
    text = " ".join(cmd)
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc"):
        assert flag in cmd
    for part in ("--unshare-uts", "--die-with-parent", "--new-session", "--clearenv"):
        assert part in cmd
    assert "--cap-drop ALL" in text and "--proc /proc --dev /dev" in text
    assert "--ro-bind /usr /usr" in text and "--symlink usr/bin /bin" in text
    assert "--ro-bind /lib64 /lib64" in text and "--ro-bind /opt/py /opt/py" in text
    assert "/usr/lib/x" not in text  # already inside the /usr bind
    assert "--proc /proc --dev /dev --remount-ro /dev" in text  # no writable /dev/shm
    assert f"--size {sb.WORKDIR_BYTES} --tmpfs /tmp/w --remount-ro /" in text
    assert "--chdir /tmp/w" in text and "--seccomp" not in cmd
    assert "--bind" not in cmd  # nothing of the host is writable
    env = {cmd[i + 1]: cmd[i + 2] for i, a in enumerate(cmd) if a == "--setenv"}
    assert env == {
        "PATH": "/usr/bin:/bin",
        "LC_ALL": "C.UTF-8",
        "HOME": "/tmp/w",
        "TMPDIR": "/tmp/w",
    }
    assert cmd[-len(ARGV) :] == ARGV


def test_the_bwrap_command_loads_the_seccomp_filter_and_sizes_the_workdir():
    cmd = sb.bwrap_command(
        "/usr/bin/bwrap", ARGV, workdir="/tmp/w", readable=[], host_entry=HOST.get,
        seccomp_fd=7, workdir_bytes=4096,
    )  # fmt: skip
    text = " ".join(cmd)
    assert "--size 4096 --tmpfs /tmp/w" in text and "--seccomp 7 --chdir /tmp/w" in text
    old = sb.bwrap_command(  # a bwrap without --size: the host directory is bound
        "/usr/bin/bwrap", ARGV, workdir="/tmp/w", readable=[], host_entry=HOST.get,
        workdir_bytes=None,
    )  # fmt: skip
    assert "--bind /tmp/w /tmp/w --remount-ro /" in " ".join(old) and "--size" not in old


def test_the_tmpfs_size_is_used_only_where_bwrap_has_it(monkeypatch):
    monkeypatch.setattr(sb, "interpreter_dirs", lambda: ["/opt/py"])
    box = sb.Sandbox(sb.BWRAP, "/usr/bin/bwrap")
    for has_size, expected in ((True, "--tmpfs"), (False, "--bind")):
        monkeypatch.setattr(sb, "bwrap_sizes_tmpfs", lambda tool, has=has_size: has)
        assert expected in box.command(ARGV, workdir="/tmp/w")


def _instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]


def _run_filter(program: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """What the classic-BPF `program` returns for one syscall (a tiny interpreter of the
    five instructions seccomp_filter uses), so the filter's logic is checked without a kernel."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    code, pc, acc = _instructions(program), 0, 0
    while True:
        op, jt, jf, k = code[pc]
        if op == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif op == 0x06:
            return k
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[op]
            pc += 1 + (jt if taken else jf)


X86_64 = 0xC000003E
ALLOW, EPERM, EAGAIN, ENOSYS, KILL = 0x7FFF0000, 0x50001, 0x5000B, 0x50026, 0x80000000


def test_the_seccomp_filter_refuses_setuid_bits_and_new_processes_on_x86_64():
    strict = sb.seccomp_filter(processes=False, machine="x86_64")
    assert strict is not None and len(strict) % 8 == 0
    chmod, fchmodat, openat, mkdir, clone, clone3, fork = 90, 268, 257, 83, 56, 435, 57
    assert _run_filter(strict, chmod, X86_64, (0, 0o4755)) == EPERM
    assert _run_filter(strict, chmod, X86_64, (0, 0o2755)) == EPERM
    assert _run_filter(strict, chmod, X86_64, (0, 0o1777)) == ALLOW  # sticky is harmless
    assert _run_filter(strict, fchmodat, X86_64, (0, 0, 0o4700)) == EPERM
    assert _run_filter(strict, openat, X86_64, (0, 0, 0o101, 0o4755)) == EPERM
    assert _run_filter(strict, openat, X86_64, (0, 0, 0o101, 0o644)) == ALLOW
    assert _run_filter(strict, mkdir, X86_64, (0, 0o2775)) == EPERM
    assert _run_filter(strict, fork, X86_64) == EAGAIN
    assert _run_filter(strict, clone, X86_64, (0x11,)) == EAGAIN  # SIGCHLD: a process
    assert _run_filter(strict, clone, X86_64, (0x3D0F00,)) == ALLOW  # pthread_create's flags
    assert _run_filter(strict, clone3, X86_64) == ENOSYS
    assert _run_filter(strict, 437, X86_64) == ENOSYS  # openat2: its mode is behind a pointer
    assert _run_filter(strict, 0, X86_64) == ALLOW  # read
    assert _run_filter(strict, 0x40000000 | 90, X86_64) == KILL  # x32
    assert _run_filter(strict, 15, 0x40000003) == KILL  # i386
    lenient = sb.seccomp_filter(processes=True, machine="x86_64")
    assert _run_filter(lenient, fork, X86_64) == ALLOW
    assert _run_filter(lenient, clone, X86_64, (0x11,)) == ALLOW
    assert _run_filter(lenient, chmod, X86_64, (0, 0o4755)) == EPERM


def test_the_seccomp_filter_knows_aarch64_and_nothing_else():
    program = sb.seccomp_filter(processes=False, machine="aarch64")
    assert _run_filter(program, 52, 0xC00000B7, (3, 0o6755)) == EPERM  # fchmod
    assert _run_filter(program, 220, 0xC00000B7, (0x11,)) == EAGAIN  # clone
    assert _run_filter(program, 52, X86_64, (3, 0o6755)) == KILL
    assert sb.seccomp_filter(processes=False, machine="riscv64") is None
