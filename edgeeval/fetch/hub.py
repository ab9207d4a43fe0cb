"""Download a variant's file from the Hugging Face Hub; turn the Hub's refusals into our errors.

`fetch.fetch` calls `fetch_hub_variant` and verifies size and sha256 itself afterwards; this
module only gets the bytes to `target`. huggingface_hub downloads into
`EDGEEVAL_HOME/hub/<org>--<name>/` (its `local_dir` mode) and the finished file is then moved to
`target`, so `target` is either absent or complete. The download folder keeps no copy on purpose:
a corrupt file left in a cache would be handed out again on the next try instead of re-downloaded.

huggingface_hub reads `HF_ENDPOINT` once, when it is imported; every call here passes the endpoint
from `settings.hf_endpoint()` explicitly so the value at call time wins (mirrors, tests).
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub import errors as hf_errors

from edgeeval import errors, settings
from edgeeval.catalog.models import Variant
from edgeeval.fetch.files import ensure_free_space

Progress = Callable[[str], None]
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
        return f"{self.repo_id}/{self.filename}"


def fetch_hub_variant(variant: Variant, target: Path, *, progress: Progress) -> None:
    """Download `variant`'s Hub file to `target` (not yet verified: the caller checks it).

    Raises GatedRepoError, RepoNotFoundError, OfflineError or HubError with a message that says
    what to do; ChecksumMismatchError before downloading anything when the Hub's size or sha256
    already contradicts the catalog; DiskSpaceError when the file would not fit.
    """
    where = _where(variant)
    if settings.offline():
        raise _offline_error(
            f"{where.label} is not in edgeeval's cache and offline mode is on "
            "(EDGEEVAL_OFFLINE/HF_HUB_OFFLINE); unset it to download",
            where,
        )
    token = settings.hf_token()
    try:
        meta = _metadata(where, token)
        _check_against_catalog(variant, where, meta)
        _ensure_space(target, meta.size or variant.size_bytes or 0)
        progress(f"{variant.name}: downloading {where.label} ({_size_text(meta.size)})")
        # Pin the download to the commit the size came from, so a push in between cannot mix them.
        downloaded = _download(where, token, revision=meta.commit_hash or where.revision)
    except Exception as exc:
        mapped = _translate(exc, where)
        if mapped is None:
            raise
        raise mapped from exc
    _move_into_place(downloaded, target)


def download_dir(repo_id: str) -> Path:
    """Where huggingface_hub writes a repo's files before they are moved into the model cache."""
    return settings.home() / "hub" / repo_id.replace("/", "--")


def _where(variant: Variant) -> _Where:
    source = variant.source
    if not source.repo_id or not source.filename:
        raise errors.FetchError(
            f"{variant.name}: source.hub needs repo_id and filename in models.yaml"
        )
    return _Where(
        repo_id=source.repo_id,
        filename=source.filename,
        revision=source.revision or "main",
        endpoint=settings.hf_endpoint(),
    )


def _metadata(where: _Where, token: str | None) -> huggingface_hub.HfFileMetadata:
    """HEAD the file: its size, sha256 (the ETag of LFS files) and commit, without downloading."""
    url = huggingface_hub.hf_hub_url(
        where.repo_id, where.filename, revision=where.revision, endpoint=where.endpoint
    )
    return huggingface_hub.get_hf_file_metadata(url, token=token, endpoint=where.endpoint)


def _check_against_catalog(
    variant: Variant, where: _Where, meta: huggingface_hub.HfFileMetadata
) -> None:
    """Refuse early when the Hub already says the file is not the one the catalog describes.

    Saves downloading gigabytes only to fail verification. The ETag is compared only when it is a
    sha256 (LFS files); small git-stored files carry a git sha1 there instead.
    """
    etag = meta.etag if meta.etag and _SHA256.match(meta.etag) else None
    size_differs = None not in (variant.size_bytes, meta.size) and variant.size_bytes != meta.size
    sha_differs = None not in (variant.sha256, etag) and variant.sha256 != etag
    if size_differs or sha_differs:
        raise errors.ChecksumMismatchError(
            f"{where.page}/resolve/{where.revision}/{where.filename}",
            expected_sha256=variant.sha256,
            actual_sha256=etag,
            expected_size=variant.size_bytes,
            actual_size=meta.size,
        )


def _ensure_space(target: Path, size_bytes: int) -> None:
    # The download folder and the model cache both live under EDGEEVAL_HOME, and the file is
    # renamed from one to the other, so one check covers both.
    ensure_free_space(target.parent, size_bytes)


def _download(where: _Where, token: str | None, *, revision: str) -> Path:
    folder = download_dir(where.repo_id)
    path = huggingface_hub.hf_hub_download(
        where.repo_id,
        where.filename,
        revision=revision,
        token=token,
        endpoint=where.endpoint,
        local_dir=folder,
        # In local_dir mode huggingface_hub also looks for the file in its shared cache; point
        # that at our own folder so edgeeval never reads outside EDGEEVAL_HOME.
        cache_dir=folder / ".hf-cache",
    )
    return Path(path)


def _move_into_place(downloaded: Path, target: Path) -> None:
    """Move the finished download to `target` in one atomic step.

    shutil.move is a rename on one filesystem and a copy across two; either way it lands on a
    `.part` name first, so a copy cut short can never be mistaken for the model.
    """
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.move(str(downloaded), str(part))
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


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
            f"repository {where.repo_id} not found on {where.endpoint}: check source.hub.repo_id "
            "in models.yaml. If the repository is private, set HF_TOKEN to a token with access "
            "(or run `hf auth login`)",
            where,
        )
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return _not_found(
            f"revision '{where.revision}' not found in {where.repo_id}: check "
            "source.hub.revision in models.yaml",
            where,
        )
    if isinstance(exc, hf_errors.RemoteEntryNotFoundError):
        return _not_found(
            f"file {where.filename} not found in {where.repo_id} (revision "
            f"'{where.revision}'): check source.hub.filename in models.yaml; the "
            f"files are listed at {where.page}/tree/{where.revision}",
            where,
        )
    if isinstance(
        exc,
        (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, *_transport_errors()),
    ):
        return _offline_error(
            f"{where.label} is not in edgeeval's cache and the Hub at "
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
    error = errors.OfflineError(message)
    # OfflineError is not a HubError; give it the same attributes so callers can report alike.
    error.repo_id = where.repo_id  # type: ignore[attr-defined]
    error.filename = where.filename  # type: ignore[attr-defined]
    return error


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
