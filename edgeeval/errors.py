"""Every error edgeeval raises on purpose.

Each class carries its details as attributes so callers (and tests) can inspect them, and its
message says what went wrong and what to do next. The CLI is the only place these become text
on the terminal and an exit code.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from edgeeval.settings import GB
from edgeeval.text import safe_text


def suggest(name: str, known: list[str], *, n: int = 3) -> list[str]:
    """Up to `n` known names closest to `name`, best first (for "did you mean").

    >>> suggest("qwen", ["qwen2", "gemma", "smollm"])
    ['qwen2']
    """
    return difflib.get_close_matches(name, known, n=n, cutoff=0.5)


class EdgeevalError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1


class ConfigError(EdgeevalError, ValueError):
    """A config file (models.yaml, a task suite) is invalid.

    `path` is the file, `entry` the item inside it (may be None), `key` the offending key.
    """

    exit_code = 2

    def __init__(
        self, message: str, *, path: str | Path, entry: str | None = None, key: str | None = None
    ) -> None:
        where = safe_text(path, 300)
        if entry is not None:
            where += f": entry '{safe_text(entry, 80)}'"
        if key is not None:
            where += f": key '{safe_text(key, 80)}'"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.entry = entry
        self.key = key


class UnknownNameError(EdgeevalError, KeyError):
    """A model, set or task name that is not in the catalog; suggests the closest names."""

    exit_code = 2

    def __init__(self, kind: str, name: str, suggestions: list[str], *, hint: str = "") -> None:
        msg = f"unknown {kind} '{name}'"
        if suggestions:
            msg += "; did you mean " + " or ".join(f"'{s}'" for s in suggestions) + "?"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)
        self.kind = kind
        self.name = name
        self.suggestions = suggestions

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class FetchError(EdgeevalError):
    """A model file could not be obtained."""


class ChecksumMismatchError(FetchError):
    """A downloaded or local file does not match the size or sha256 the catalog promises."""

    def __init__(
        self,
        path: str | Path,
        *,
        expected_sha256: str | None,
        actual_sha256: str | None,
        expected_size: int | None = None,
        actual_size: int | None = None,
        removed: bool = False,
    ) -> None:
        parts = []
        if expected_size is not None and actual_size is not None and expected_size != actual_size:
            parts.append(f"size expected {expected_size:,} bytes, got {actual_size:,}")
        if expected_sha256 and actual_sha256 and expected_sha256 != actual_sha256:
            parts.append(f"sha256 expected {expected_sha256}, got {actual_sha256}")
        what = "; ".join(parts) or "content does not match the catalog"
        tail = (
            " The bad file was removed; run the fetch again."
            if removed
            else " Check the file or the sha256 in models.yaml."
        )
        super().__init__(f"{path}: {what}.{tail}")
        self.path = str(path)
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256
        self.expected_size = expected_size
        self.actual_size = actual_size


class HubError(FetchError):
    """The Hugging Face Hub refused or could not serve a file."""

    def __init__(self, message: str, *, repo_id: str, filename: str | None = None) -> None:
        super().__init__(message)
        self.repo_id = repo_id
        self.filename = filename

    def __str__(self) -> str:  # OSError would otherwise print "[Errno None] None: filename"
        return str(self.args[0])


class RepoNotFoundError(HubError, FileNotFoundError):
    """The repository or the file in it does not exist (or is private)."""


class GatedRepoError(HubError, PermissionError):
    """The repository is gated: the user must accept its terms and authenticate."""


class OfflineError(FetchError, ConnectionError):
    """A file is needed from the network but offline mode is on or the network is unreachable."""

    def __init__(
        self, message: str, *, repo_id: str | None = None, filename: str | None = None
    ) -> None:
        super().__init__(message)
        self.repo_id = repo_id
        self.filename = filename

    def __str__(self) -> str:  # see HubError.__str__
        return str(self.args[0])


class DiskSpaceError(EdgeevalError, OSError):
    """Not enough free disk space for a download or a build."""

    def __init__(self, path: str | Path, *, needed_bytes: int, free_bytes: int) -> None:
        super().__init__(
            f"not enough free disk space in {path}: need {needed_bytes / GB:.2f} GB, "
            f"{free_bytes / GB:.2f} GB free. Free some space or set EDGEEVAL_HOME to a "
            "larger disk."
        )
        self.path = str(path)
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes


class InvalidModelFileError(EdgeevalError, ValueError):
    """A file is not a well-formed GGUF (checked before llama.cpp parses it)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{safe_text(path, 300)}: not a valid GGUF file: {safe_text(reason, 300)}")
        self.path = str(path)
        self.reason = reason


class PreflightError(EdgeevalError):
    """The machine is clearly too small for what was asked (use --force to try anyway)."""


class RunNotFoundError(EdgeevalError, FileNotFoundError):
    """A run id or directory with stored results does not exist."""


class ChatTemplateError(EdgeevalError, ValueError):
    """A model's chat template was refused or failed in the rendering sandbox.

    `reason` says which limit or rule stopped it: "unsafe" (a forbidden attribute or call),
    "too_large" (a string, list or the output over the size limit), "timeout" (over the
    time limit), "invalid" (not valid Jinja), "raised" (the template's raise_exception) or
    "crashed" (the sandbox process died or answered nonsense).
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(f"chat template {reason}: {message}")
        self.reason = reason
        self.detail = message


class SandboxUnavailableError(EdgeevalError):
    """`--allow-code-exec` was asked for but no operating-system sandbox works on this machine.

    `platform` is sys.platform, `reason` why none works, `install` the command that fixes it
    (empty where edgeeval knows no sandbox for the platform).
    """

    exit_code = 2

    def __init__(self, *, platform: str, reason: str, install: str) -> None:
        fix = f"install it (`{install}`, or `make sysdeps`), or " if install else ""
        super().__init__(
            f"--allow-code-exec runs model-written code only inside an operating-system "
            f"sandbox, and none works on this machine ({platform}): {reason}. To fix: {fix}"
            "pass --unsafe-code-exec instead to run it with only the in-process guard "
            "(rlimits and an audit hook; not a security boundary)"
        )
        self.platform = platform
        self.reason = reason
        self.install = install


class InvalidRunIdError(EdgeevalError, ValueError):
    """A run id that cannot name a directory under the reports directory (`run_id`)."""

    exit_code = 2

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"invalid run id {run_id!r}: a run id is 1 to 100 letters, digits, '.', '_' or '-' "
            "and does not start with '.'; run `edgeeval runs` to list stored runs"
        )
        self.run_id = run_id


class DamagedRunError(EdgeevalError):
    """A run's file (`path`, e.g. run.json) exists but cannot be read; `reason` says why."""

    def __init__(self, path: str | Path, run_id: str, reason: str) -> None:
        super().__init__(
            f"{path}: cannot read run '{run_id}' ({reason}); run `edgeeval repair {run_id}` "
            "to rebuild it from the run's records.jsonl"
        )
        self.path = str(path)
        self.run_id = run_id
        self.reason = reason


class StoreFileError(EdgeevalError, ValueError):
    """A file of the store (`path`: a run's records.jsonl, ...) is not a regular file or is
    larger than edgeeval reads; `reason` says which, and the message the next step."""

    def __init__(self, path: str | Path, reason: str, *, hint: str = "") -> None:
        tail = f"; {hint}" if hint else ""
        super().__init__(f"{safe_text(path, 300)}: {safe_text(reason, 300)}{tail}")
        self.path = str(path)
        self.reason = reason


class StorageError(EdgeevalError, OSError):
    """Writing under the reports directory failed: disk full, read-only, no permission.

    `path` is the file being written, `reason` the system's words ("no space left on device"),
    `hint` the next step when it is not the usual one (free space, or EDGEEVAL_REPORTS).
    """

    def __init__(
        self, path: str | Path, reason: str, *, errno_code: int | None = None, hint: str = ""
    ) -> None:
        step = hint or (
            "free space or make it writable, or set EDGEEVAL_REPORTS=<dir> to store reports "
            "elsewhere"
        )
        super().__init__(
            f"cannot write {path}: {reason}; {step} (measurements already saved are kept)"
        )
        self.path = str(path)
        self.reason = reason
        self.errno_code = errno_code

    def __str__(self) -> str:  # OSError would otherwise format errno/filename
        return str(self.args[0])


class HostBusyError(EdgeevalError):
    """Another edgeeval bench holds this host's bench lock; `pid` is its process (None when
    it could not be read), `path` the lock file."""

    exit_code = 4

    def __init__(self, *, pid: int | None, run_id: str, path: str | Path) -> None:
        who = f"pid {pid}" if pid else "a process"
        run = f", run {run_id}" if run_id else ""
        super().__init__(
            f"another edgeeval bench ({who}{run}) is measuring on this host (lock {path}); "
            "two benches at once make every speed low. Wait for it, pass --wait to start "
            "when it finishes, or --allow-concurrent to measure anyway (the run is marked)"
        )
        self.pid = pid
        self.run_id = run_id
        self.path = str(path)


class ResumeConflictError(EdgeevalError):
    """`--resume` was given an option that differs from the stored run's; `option` is the
    option (or setting) as written, `given` and `stored` its two values."""

    exit_code = 2

    def __init__(self, option: str, given: str, stored: str, *, run_id: str) -> None:
        written = f"{option} {given}" if given else option
        super().__init__(
            f"{written} differs from the run's {stored}; drop it to resume run {run_id} "
            "(or start a new run without --resume)"
        )
        self.option = option
        self.given = given
        self.stored = stored
        self.run_id = run_id


class ClusterError(EdgeevalError):
    """A cluster run could not start or go on (no Ray, no reachable cluster, no worker)."""

    exit_code = 2


class ClusterUnavailableError(ClusterError, ImportError):
    """`--cluster` was asked for but Ray, an optional extra, is not installed (`reason`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"--cluster runs the sweep on Ray, an optional extra that is not installed here "
            f"({reason}); install it with `pip install 'edgeeval[ray]'` (or `pip install "
            "'ray>=2.9'`; `ray://` addresses also need `pip install 'ray[client]'`), or run "
            "without --cluster on this machine alone"
        )
        self.reason = reason


class UnattributedItemsError(EdgeevalError):
    """A run's per-item lines (`path`: samples.jsonl or generations.jsonl) name no variant and
    their order cannot prove whose each line is (`reason`): paired statistics are refused."""

    def __init__(self, run_id: str, path: str | Path, reason: str) -> None:
        super().__init__(
            f"run '{run_id}', {safe_text(Path(path).name, 100)}: cannot tell which variant "
            f"answered each item ({safe_text(reason, 300)}); the run is compared with "
            "unpaired standard errors. A run measured now writes the variant on every line."
        )
        self.run_id = run_id
        self.path = str(path)
        self.reason = reason
