"""Download a variant's file from the Hugging Face Hub; turn the Hub's refusals into our errors.

Files go into the standard Hugging Face cache (`settings.hf_hub_cache()`: HF_HUB_CACHE, else
HF_HOME/hub, else ~/.cache/huggingface/hub) through `hf_hub_download`, so a file the user already
downloaded with any Hugging Face tool (or llama.cpp, ollama's hf.co pulls aside) is used where it
lies and never fetched twice. `fetch.sources` verifies the file afterwards: against the catalog's
sha256 when it has one, else against the Hub's own LFS sha256 (the cache names each blob by it).

huggingface_hub reads `HF_ENDPOINT` and `HF_HUB_CACHE` once, when it is imported; every call here
passes the endpoint, cache folder and token from `settings` explicitly so the values at call
time win (mirrors, tests).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub import errors as hf_errors

from edgeeval import errors, settings
from edgeeval.catalog.models import (
    Variant,
    hub_path_problem,
    hub_repo_id_problem,
    hub_source_problem,
)
from edgeeval.fetch.files import ensure_free_space
from edgeeval.safeio import STORAGE_ERRNOS
from edgeeval.text import Progress

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class _Where:
    """One file on one Hub: what every request and every error message needs."""

    repo_id: str
    filename: str
    revision: str
    endpoint: str

    @property
    def page(self) -> str:
        """The repository's web page (where gated terms are accepted)."""
        return f"{self.endpoint}/{self.repo_id}"

    @property
    def label(self) -> str:
        return f"{self.repo_id}/{self.filename}" if self.filename else self.repo_id


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub repository as its tree listing (or the local cache) describes it."""

    path: str
    size: int | None
    sha256: str | None  # the LFS sha256; None for files stored in git


def where(repo_id: str, filename: str, revision: str | None = None) -> _Where:
    """The addressing of one Hub file, with the endpoint in effect now."""
    return _Where(repo_id, filename, revision or "main", settings.hf_endpoint())


def fetch_hub_variant(variant: Variant, *, progress: Progress) -> Path:
    """`variant`'s Hub file in the Hugging Face cache, downloaded if needed (not yet verified:
    the caller checks it). Raises GatedRepoError, RepoNotFoundError, OfflineError or HubError
    with a message that says what to do; ChecksumMismatchError before downloading anything when
    the Hub's size or sha256 already contradicts the catalog; DiskSpaceError when it won't fit."""
    return download(
        _variant_where(variant),
        size_bytes=variant.size_bytes,
        sha256=variant.sha256,
        progress=progress,
        label=variant.name,
    )


def download(
    at: _Where,
    *,
    size_bytes: int | None,
    sha256: str | None,
    progress: Progress,
    label: str,
) -> Path:
    """The file `at` in the Hugging Face cache, fetched when it is not there (see
    fetch_hub_variant for the errors). `size_bytes`/`sha256`: what the caller expects. A repo
    id, file name or revision that would leave the repository or the cache is a HubError
    before any request; a full or read-only disk is a HubError naming the folder."""
    problem = _names_problem(at)
    if problem:
        raise _hub_error(f"cannot fetch from {at.repo_id!r}: {problem}", at)
    if settings.offline():
        raise _offline_error(
            f"{at.label} is not in the Hugging Face cache ({settings.hf_hub_cache()}) and "
            "offline mode is on (EDGEEVAL_OFFLINE/HF_HUB_OFFLINE); unset it to download",
            at,
        )
    token = settings.hf_token()
    try:
        meta = _metadata(at, token)
        _check_expected(size_bytes, sha256, at, meta)
        ensure_free_space(settings.hf_hub_cache(), meta.size or size_bytes or 0)
        progress(f"{label}: downloading {at.label} ({_size_text(meta.size)})")
        # Pin the download to the commit the size came from, so a push in between cannot mix them.
        path = _download(at, token, revision=meta.commit_hash or at.revision)
    except Exception as exc:
        mapped = _translate(exc, at)
        if mapped is None:
            raise
        raise mapped from exc
    if meta.commit_hash and meta.commit_hash != at.revision:
        _record_ref(at, meta.commit_hash)
    return path


def _record_ref(at: _Where, commit: str) -> None:
    """Point the cache's `refs/<revision>` at `commit`, as huggingface_hub does when it resolves
    a branch itself, so the next lookup of `revision` finds the file with no request."""
    repo_dir = settings.hf_hub_cache() / f"models--{at.repo_id.replace('/', '--')}"
    ref = repo_dir / "refs" / at.revision
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        if not ref.is_file() or ref.read_text().strip() != commit:
            ref.write_text(commit)
    except OSError:  # a read-only cache: the next run asks the Hub again, nothing worse
        return


def cached_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """The file's path in the Hugging Face cache when it is there (no network), else None
    (also for names that are not a repo id, a file in it or a revision)."""
    if _names_problem(where(repo_id, filename, revision)):
        return None
    found = huggingface_hub.try_to_load_from_cache(
        repo_id, filename, cache_dir=settings.hf_hub_cache(), revision=revision or "main"
    )
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def cached_variant_file(variant: Variant) -> Path | None:
    """A hub variant's file in the Hugging Face cache, if there (no network)."""
    source = variant.source
    if not source.repo_id or not source.filename or hub_source_problem(source):
        return None
    return cached_file(source.repo_id, source.filename, source.revision)


def lfs_sha256(path: Path) -> str | None:
    """The Hub's LFS sha256 of a cached file: the cache names each LFS blob by it."""
    name = Path(path).resolve().name
    return name if _SHA256.match(name) else None


def remove_cached(path: Path) -> None:
    """Remove a (corrupt) cached file: its blob and the snapshot link to it."""
    blob = Path(path).resolve()
    Path(path).unlink(missing_ok=True)
    if blob != Path(path):
        blob.unlink(missing_ok=True)


def list_files(repo_id: str, revision: str | None) -> list[RemoteFile]:
    """Every file of the repo at `revision`: from the Hub's tree API, or offline from the
    snapshot in the local cache. Raises the same errors as a download. Names that are not a
    relative path inside the repository (`/etc/x.gguf`, `../x.gguf`) are left out: a listing
    cannot make edgeeval read or write outside the cache."""
    at = where(repo_id, "", revision)
    problem = hub_repo_id_problem(repo_id) or _revision_problem(at.revision)
    if problem:
        raise _hub_error(f"cannot list {repo_id!r}: {problem}", at)
    if settings.offline():
        return _list_cached(at)
    api = huggingface_hub.HfApi(endpoint=at.endpoint, token=settings.hf_token())
    try:
        entries = api.list_repo_tree(repo_id, recursive=True, revision=at.revision)
        return [
            RemoteFile(e.path, e.size, e.lfs.sha256 if e.lfs else None)
            for e in entries
            if isinstance(e, huggingface_hub.hf_api.RepoFile)
            and isinstance(e.path, str)
            and not hub_path_problem(e.path)
        ]
    except Exception as exc:
        mapped = _translate(exc, at)
        if mapped is None:
            raise
        raise mapped from exc


def _list_cached(at: _Where) -> list[RemoteFile]:
    repo_dir = settings.hf_hub_cache() / f"models--{at.repo_id.replace('/', '--')}"
    ref = repo_dir / "refs" / at.revision
    commit = ref.read_text().strip() if ref.is_file() else at.revision
    snapshot = repo_dir / "snapshots" / commit
    if not snapshot.is_dir():
        raise _offline_error(
            f"{at.repo_id} (revision '{at.revision}') is not in the Hugging Face cache "
            f"({settings.hf_hub_cache()}) and offline mode is on; unset "
            "EDGEEVAL_OFFLINE/HF_HUB_OFFLINE to list it on the Hub",
            at,
        )
    return [
        RemoteFile(p.relative_to(snapshot).as_posix(), p.stat().st_size, lfs_sha256(p))
        for p in sorted(snapshot.rglob("*"))
        if p.is_file()
    ]


def _variant_where(variant: Variant) -> _Where:
    source = variant.source
    if not source.repo_id or not source.filename:
        raise errors.FetchError(
            f"{variant.name}: source.hub needs repo_id and filename in models.yaml"
        )
    problem = hub_source_problem(source)
    if problem:
        key, why = problem
        raise errors.FetchError(
            f"{variant.name}: source.hub.{key} in models.yaml: {why}; fix the entry "
            "(`edgeeval models` names the file)"
        )
    return where(source.repo_id, source.filename, source.revision)


def _revision_problem(revision: str) -> str | None:
    return hub_path_problem(revision, "a revision", "'main' or a commit hash")


def _names_problem(at: _Where) -> str | None:
    """Why `at` does not name a file inside a Hub repository at a revision, or None."""
    return (
        hub_repo_id_problem(at.repo_id)
        or (hub_path_problem(at.filename) if at.filename else None)
        or _revision_problem(at.revision)
    )


def _metadata(at: _Where, token: str | None) -> huggingface_hub.HfFileMetadata:
    """HEAD the file: its size, sha256 (the ETag of LFS files) and commit, without downloading."""
    url = huggingface_hub.hf_hub_url(
        at.repo_id, at.filename, revision=at.revision, endpoint=at.endpoint
    )
    return huggingface_hub.get_hf_file_metadata(url, token=token, endpoint=at.endpoint)


def _check_expected(
    size_bytes: int | None, sha256: str | None, at: _Where, meta: huggingface_hub.HfFileMetadata
) -> None:
    """Refuse early when the Hub already says the file is not the one expected.

    Saves downloading gigabytes only to fail verification. The ETag is compared only when it is a
    sha256 (LFS files); small git-stored files carry a git sha1 there instead.
    """
    etag = meta.etag if meta.etag and _SHA256.match(meta.etag) else None
    size_differs = None not in (size_bytes, meta.size) and size_bytes != meta.size
    sha_differs = None not in (sha256, etag) and sha256 != etag
    if size_differs or sha_differs:
        raise errors.ChecksumMismatchError(
            f"{at.page}/resolve/{at.revision}/{at.filename}",
            expected_sha256=sha256,
            actual_sha256=etag,
            expected_size=size_bytes,
            actual_size=meta.size,
        )


def _download(at: _Where, token: str | None, *, revision: str) -> Path:
    path = huggingface_hub.hf_hub_download(
        at.repo_id,
        at.filename,
        revision=revision,
        token=token,
        endpoint=at.endpoint,
        cache_dir=settings.hf_hub_cache(),
    )
    return Path(path)


def _translate(exc: Exception, where: _Where) -> errors.FetchError | None:
    """The edgeeval error for a huggingface_hub (or network) failure; None for anything else."""
    if isinstance(exc, errors.EdgeevalError):  # already ours (checksum, disk space): keep as is
        return None
    if isinstance(exc, hf_errors.GatedRepoError):  # before RepositoryNotFoundError: a subclass
        return errors.GatedRepoError(
            _gated_message(where, _status(exc)), repo_id=where.repo_id, filename=where.filename
        )
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return _not_found(
            f"repository {where.repo_id} not found on {where.endpoint}: check the repo id "
            "(source.hub.repo_id in models.yaml, or the hf: spec). If the repository is "
            "private, set HF_TOKEN to a token with access (or run `hf auth login`)",
            where,
        )
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return _not_found(
            f"revision '{where.revision}' not found in {where.repo_id}: check "
            "source.hub.revision in models.yaml (or the @revision of the hf: spec)",
            where,
        )
    if isinstance(exc, hf_errors.RemoteEntryNotFoundError):
        return _not_found(
            f"file {where.filename} not found in {where.repo_id} (revision "
            f"'{where.revision}'): check source.hub.filename in models.yaml (or the hf: spec); the "
            f"files are listed at {where.page}/tree/{where.revision}",
            where,
        )
    if isinstance(
        exc,
        (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, *_transport_errors()),
    ):
        return _offline_error(
            f"{where.label} is not in the Hugging Face cache and the Hub at "
            f"{where.endpoint} cannot be reached ({_first_line(exc)}); check "
            "the network or HF_ENDPOINT and try again",
            where,
        )
    if isinstance(exc, hf_errors.HfHubHTTPError):
        return _hub_error(_http_message(where, _status(exc), exc), where)
    if isinstance(exc, (hf_errors.HFValidationError, hf_errors.FileMetadataError)):
        return _hub_error(
            f"cannot download {where.label} from {where.endpoint}: {_first_line(exc)}", where
        )
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        folder = exc.filename or settings.hf_hub_cache()
        return _hub_error(
            f"cannot write {folder}: {STORAGE_ERRNOS[exc.errno]} while downloading "
            f"{where.label}; free some space or make it writable, or set HF_HUB_CACHE to a "
            "folder on another disk, then run the fetch again",
            where,
        )
    if isinstance(exc, OSError) and exc.errno is None:
        # huggingface_hub raises a plain OSError when fewer bytes arrived than announced.
        return _hub_error(
            f"download of {where.label} failed: {_first_line(exc)}; run the fetch again", where
        )
    return None


def _gated_message(where: _Where, status: int | None) -> str:
    accept = f"accept its terms at {where.page} while logged in"
    if status == 403:  # a token was sent, but its account has not been granted access
        return (
            f"{where.repo_id} is gated and the token in use has no access to it: {accept} "
            "with the account that owns HF_TOKEN (or the `hf auth login` account), then "
            "run the fetch again"
        )
    return (
        f"{where.repo_id} is gated: {accept}, then set HF_TOKEN to an access token of that "
        "account (or run `hf auth login`) and run the fetch again"
    )


def _http_message(where: _Where, status: int | None, exc: Exception) -> str:
    if status == 401:
        return (
            f"the Hub at {where.endpoint} rejected the credentials for {where.label}: HF_TOKEN "
            f"(or the `hf auth login` token) is invalid or expired; create a new one at "
            f"{where.endpoint}/settings/tokens"
        )
    if status == 403:
        return (
            f"the Hub at {where.endpoint} refused {where.label} (403): the token in HF_TOKEN "
            "lacks read permission for this repository"
        )
    return (
        f"the Hub at {where.endpoint} answered {status} for {where.label} "
        f"({_first_line(exc)}); try again later"
    )


def _not_found(message: str, where: _Where) -> errors.RepoNotFoundError:
    return errors.RepoNotFoundError(message, repo_id=where.repo_id, filename=where.filename)


def _hub_error(message: str, where: _Where) -> errors.HubError:
    return errors.HubError(message, repo_id=where.repo_id, filename=where.filename)


def _offline_error(message: str, where: _Where) -> errors.OfflineError:
    # OfflineError is not a HubError, but carries the same attributes so callers report alike.
    return errors.OfflineError(message, repo_id=where.repo_id, filename=where.filename)


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level errors of the HTTP client huggingface_hub uses.

    huggingface_hub 2.x is built on httpx2, 1.x on httpx; both raise a TransportError subclass
    (refused, timed out, cut off) that is not an OSError, so it is looked up here by name.
    """
    found: list[type[BaseException]] = [ConnectionError]
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _size_text(size_bytes: int | None) -> str:
    return f"{size_bytes / settings.GB:.2f} GB" if size_bytes is not None else "size unknown"
