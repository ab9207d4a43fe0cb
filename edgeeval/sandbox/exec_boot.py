"""The program that runs inside each code sandbox (its source is passed to `python -I -S -c`).

It imports only the standard library, because the sandbox sees no site-packages and no
edgeeval. One source, two roles, chosen by the JSON header line on stdin:

- "candidate": sets the inner guard (rlimits + audit hook), then runs the model's module
  (prompt + completion) and serves calls of its entry point: one JSON request line in, one
  JSON reply line out, values in the plain-data codec below. Nothing it says is trusted.
- "checker": sets the same guard, runs the task's prompt (for the helpers the tests use) and
  test code, with the entry point replaced by a proxy that forwards each call to the candidate
  process and decodes the reply as plain data, then calls check(proxy). It alone reports
  "passed" or "failed", on a pipe only it holds.

edgeeval.sandbox.codeexec starts the two roles as separate processes (separate OS sandboxes
where one exists) and explains why this keeps a verdict from being forged.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import types

MAX_LINE = 1 << 24  # a reply over 16 MiB is an error, not a reason to run out of memory


# ---- plain-data codec: the only things that cross from the candidate to the checker ----


def encode(value: object) -> object:
    """A JSON-able tree for None, bool, int, float, complex, str, bytes and lists, tuples,
    dicts, sets and frozensets of them; raises TypeError for anything else. Containers are
    lists whose first item names the type, so scalars never look like containers."""
    if value is None or type(value) in (bool, str, float):
        return value
    if isinstance(value, (str, float)):
        return _base(value)
    if isinstance(value, int):
        number = int(value)
        return number if number.bit_length() < 4000 else ["I", hex(number)]
    if isinstance(value, complex):
        return ["C", value.real, value.imag]
    if isinstance(value, (bytes, bytearray)):
        return ["B", bytes(value).hex()]
    for tag, kind in (("L", list), ("T", tuple), ("S", set), ("F", frozenset)):
        if isinstance(value, kind):
            return [tag, *(encode(item) for item in value)]
    if isinstance(value, dict):
        return ["D", *([encode(k), encode(v)] for k, v in value.items())]
    raise TypeError(f"a {type(value).__name__} is not plain data (it cannot be checked)")


def _base(value: str | float) -> str | float:
    """A subclass of str or float as a plain str or float."""
    return str.__str__(value) if isinstance(value, str) else float.__float__(value)


def decode(tree: object) -> object:
    """The value `encode` made `tree` from; raises ValueError on anything malformed."""
    if tree is None or type(tree) in (bool, int, float, str):
        return tree
    if type(tree) is not list or not tree or type(tree[0]) is not str:
        raise ValueError("malformed value")
    tag, items = tree[0], tree[1:]
    if tag in ("L", "T", "S", "F"):
        kind = {"L": list, "T": tuple, "S": set, "F": frozenset}[tag]
        return kind(decode(item) for item in items)
    if tag == "D":
        return {decode(k): decode(v) for k, v in items}
    if tag == "I" and len(items) == 1:
        return int(items[0], 16)
    if tag == "B" and len(items) == 1:
        return bytes.fromhex(items[0])
    if tag == "C" and len(items) == 2:
        return complex(float(items[0]), float(items[1]))
    raise ValueError(f"unknown value tag {tag!r}")


# ---- the pipe protocol: one JSON object per line ----


class Line:
    """Reads JSON lines from one pipe and writes them to another."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.reader = os.fdopen(read_fd, "rb") if read_fd >= 0 else None
        self.write_fd = write_fd

    def send(self, message: dict) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self.write_fd, data) :]

    def receive(self) -> dict | None:
        """The next message; None at the end of the pipe."""
        assert self.reader is not None, "this line was opened without a read end"
        raw = self.reader.readline(MAX_LINE + 1)
        if not raw:
            return None
        if len(raw) > MAX_LINE or not raw.endswith(b"\n"):
            raise ValueError("a message over 16 MiB")
        message = json.loads(raw)
        if type(message) is not dict:
            raise ValueError("a message that is not an object")
        return message


def describe(exc: BaseException) -> list[str]:
    """[exception type name, message], never raising."""
    try:
        return [type(exc).__name__, " ".join(str(exc).split())[:500]]
    except BaseException:
        return [type(exc).__name__, ""]


# ---- the inner guard ----


def install_guard(tmp: str, limits: list, hook: bool = True) -> None:
    """Set the rlimits and (unless `hook` is False: tests of the OS sandbox alone) add the
    audit hook, which cannot be removed. The hook keeps its data in constants and default
    arguments, not in globals or closure cells, and refuses the events that would reach or
    rewrite it (gc, tracing, function __code__/__defaults__). It refuses chmod and mkdir with
    setuid/setgid bits too (the OS sandbox's seccomp filter refuses them in every call)."""
    for name, soft, hard in limits:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if not hook:
        return
    readable = [tmp, f"/proc/{os.getpid()}", "/dev/null", "/dev/urandom", "/dev/zero"]
    readable += [os.path.realpath(p) for p in sys.path if p]
    sys.addaudithook(_make_hook(os.path.realpath(tmp), tuple(readable)))


def _make_hook(tmp: str, readable: tuple):  # noqa: ANN202 - returns the hook function
    def hook(
        event,
        args,
        tmp=tmp,
        readable=readable,
        realpath=os.path.realpath,
        fsdecode=os.fsdecode,
        refuse=PermissionError,
        write_flags=os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC,
        type=type,  # builtins bound now: the program could replace them in `builtins`
        set=set,
        str=str,
        bool=bool,
        any=any,
        int=int,
        bytes=bytes,
        len=len,
    ):
        if event in {
            "os.fork", "os.forkpty", "os.system", "os.kill", "os.killpg", "os.symlink",
            "os.link", "os.chroot", "os.startfile", "signal.pthread_kill", "subprocess.Popen",
            "resource.setrlimit", "resource.prlimit", "pty.spawn", "sys.remote_exec",
            "sys._current_frames", "sys.settrace", "sys.setprofile", "gc.get_objects",
            "gc.get_referrers", "gc.get_referents",
        } or event.startswith((
            "socket.", "ctypes.", "os.exec", "os.spawn", "os.posix_spawn", "mmap.",
            "_posixsubprocess", "winreg.",
        )):  # fmt: skip
            raise refuse(f"sandbox: {event} is not allowed")
        if event in {"os.chmod", "os.mkdir"} and type(args[1]) is int and args[1] & 0o6000:
            raise refuse("sandbox: setuid and setgid bits are not allowed")
        if event == "object.__setattr__" and args[1] in {
            "__code__", "__defaults__", "__kwdefaults__",
        }:  # fmt: skip
            raise refuse(f"sandbox: setting {args[1]} is not allowed")
        if event == "import" and args[0].partition(".")[0] in {
            "ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "_testcapi",
            "_testinternalcapi",
        }:  # fmt: skip
            raise refuse(f"sandbox: importing {args[0]} is not allowed")
        write, paths = True, ()
        if event == "open":
            path, mode, flags = args
            write = bool(mode and set(str(mode)) & set("wax+")) or bool((flags or 0) & write_flags)
            paths = (path,)
            if mode is None and type(path) in (str, bytes) and not fsdecode(path).startswith("/"):
                # os.open(relative, dir_fd=...): the event does not carry the dir_fd
                raise refuse("sandbox: os.open needs an absolute path")
        elif event in {"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
                       "os.truncate", "os.utime", "os.setxattr", "os.removexattr",
                       "shutil.rmtree", "shutil.chown"}:  # fmt: skip
            paths = (args[0],)
        elif event in {"os.rename", "shutil.move"}:
            paths = (args[0], args[1])
        elif event in {"shutil.copyfile", "shutil.copytree", "shutil.copymode",
                       "shutil.copystat"}:  # fmt: skip
            paths = (args[1],)
        for path in paths:
            if path is None or type(path) is int:
                continue
            if type(path) not in (str, bytes):  # a PathLike could answer differently later
                raise refuse("sandbox: paths must be str or bytes")
            real = realpath(fsdecode(path))
            if real == tmp or real.startswith(tmp + "/"):
                continue
            if not write and any(real == r or real.startswith(r + "/") for r in readable):
                continue
            raise refuse(f"sandbox: {'writing' if write else 'reading'} {real} is not allowed")
        fd_args = {"os.remove": (1,), "os.rmdir": (1,), "os.mkdir": (2,), "os.chmod": (2,),
                   "os.chown": (3,), "os.utime": (3,), "os.rename": (2, 3)}  # fmt: skip
        fd_args = fd_args.get(event, ())
        if any(type(args[i]) is int and args[i] >= 0 for i in fd_args if i < len(args)):
            raise refuse(f"sandbox: {event} relative to a directory fd is not allowed")

    return hook


def _fresh_main() -> dict:
    """A new, empty __main__ module (so `import __main__` does not reach this program)."""
    module = types.ModuleType("__main__")
    sys.modules["__main__"] = module
    return module.__dict__


# ---- the two roles ----


def candidate(cfg: dict) -> None:
    """Run the model's module, then answer calls of its entry point until the pipe ends."""
    line = Line(cfg["request_fd"], cfg["reply_fd"])
    install_guard(cfg["tmp"], cfg["limits"], cfg["guard"])
    line.send({"started": True})
    namespace = _fresh_main()
    del cfg["limits"]
    try:
        exec(compile(cfg.pop("source"), "<generated>", "exec"), namespace)
        function = namespace[cfg["entry_point"]]
    except BaseException as exc:
        line.send({"load_error": describe(exc)})
        return
    line.send({"ready": True})
    while (request := line.receive()) is not None:
        try:
            reply = {"ok": encode(function(*_arguments(request["args"])))}
        except BaseException as exc:
            reply = {"raised": describe(exc)}
        line.send(reply)


class CandidateError(Exception):
    """The candidate process could not answer a call (it ended, or sent nonsense)."""


def checker(cfg: dict) -> None:
    """Run the task's tests against a proxy of the candidate; report the verdict."""
    nonce, report_fd = cfg["nonce"], cfg["report_fd"]

    def report(word: str, detail: str = "") -> None:
        os.write(report_fd, f"{nonce} {word} {' '.join(detail.split())[:500]}\n".encode())

    line = Line(cfg["reply_fd"], cfg["request_fd"])
    install_guard(cfg["tmp"], cfg["limits"], cfg["guard"])
    report("started")
    if line.receive() is None:
        report("no_candidate", "the candidate's sandbox did not start")
        return
    loaded = line.receive()
    if loaded is None or "load_error" in loaded:
        name, message = (loaded or {}).get("load_error") or ["ProcessExit", "ended while loading"]
        report("failed", f"{name}: {message}")
        return
    namespace = _fresh_main()
    try:
        exec(_prompt_code(cfg["prompt"]), namespace)
    except BaseException as exc:
        report("prompt_error", "the task's prompt does not run on its own: " + _text(exc))
        return
    proxy = _proxy(line)
    namespace[cfg["entry_point"]] = proxy
    try:
        exec(compile(cfg["test"], "<test>", "exec"), namespace)
        namespace["check"](proxy)
    except BaseException as exc:
        report("failed", _text(exc))
    else:
        report("passed")


def _prompt_code(prompt: str) -> types.CodeType:
    """The prompt compiled; a prompt ending in a bare `def ...:` gets a `pass` body."""
    try:
        return compile(prompt + "\n", "<prompt>", "exec")
    except SyntaxError:
        return compile(prompt + "\n    pass\n", "<prompt>", "exec")


def _text(exc: BaseException) -> str:
    return ": ".join(describe(exc))


def _arguments(tree: object) -> list[object]:
    """The positional arguments the checker's proxy sent (always encoded as a list)."""
    args = decode(tree)
    if not isinstance(args, list):
        raise TypeError(f"the arguments arrived as a {type(args).__name__}, not a list")
    return args


def _proxy(line: Line):  # noqa: ANN202 - returns a function
    """A stand-in for the entry point: each call goes to the candidate process."""
    import builtins

    def call(*args: object, **kwargs: object) -> object:
        if kwargs:
            raise TypeError("keyword arguments are not forwarded to the candidate")
        line.send({"args": encode(list(args))})
        try:
            reply = line.receive()
        except ValueError as exc:
            raise CandidateError(f"the candidate sent nonsense: {exc}") from None
        if reply is None:
            raise CandidateError("the candidate's process ended during a call")
        if "raised" in reply:
            name, message = reply["raised"]
            kind = getattr(builtins, str(name), None)
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                kind = CandidateError
            raise kind(f"{message}" if kind is not CandidateError else f"{name}: {message}")
        if "ok" not in reply:
            raise CandidateError("the candidate sent a reply without a value")
        return decode(reply["ok"])

    return call


def main() -> None:
    cfg = json.loads(sys.stdin.buffer.readline())
    try:
        (candidate if cfg["role"] == "candidate" else checker)(cfg)
    finally:
        os._exit(0)


if __name__ == "__main__":
    main()
