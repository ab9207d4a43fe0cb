"""A variant's GGUF header without downloading the file: from the local copy when there is one,
else from the Hugging Face Hub by HTTP Range requests (only the header's bytes, in 1 MiB steps).

The header is walked by the same bounded reader as every local file (gguf.check.read_gguf); the
file's total size comes from the first answer's Content-Range, so the tensor extents are
checked against the real file. A header longer than MAX_HEADER_BYTES is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgeeval import errors, settings
from edgeeval.catalog.models import Variant
from edgeeval.gguf.check import GgufSummary, check_gguf, read_gguf

CHUNK_BYTES = 1 << 20
#: Long enough for any vocabulary we know of (Gemma 3's 262k tokens: about 6 MB of header).
MAX_HEADER_BYTES = 64 << 20
_CONTENT_RANGE = re.compile(r"^bytes \d+-\d+/(\d+)$")


@dataclass(frozen=True)
class Header:
    """A variant's header summary and where it came from ("local file", "Hub header")."""

    summary: GgufSummary
    source: str
    bytes_read: int = 0  # from the Hub; 0 for a local file


class RangedFile:
    """A read-only stream over a remote file, fetched by `Range: bytes=a-b` as it is read.

    `get(start, end)` returns (bytes, total file size); reads go on from the last offset."""

    def __init__(self, get, *, limit: int = MAX_HEADER_BYTES, label: str = "") -> None:
        self._get, self._limit, self.label = get, limit, label
        self._buf = b""
        self._pos = 0
        self.size: int | None = None

    def _fill(self, upto: int) -> None:
        while len(self._buf) < upto and (self.size is None or len(self._buf) < self.size):
            if len(self._buf) >= self._limit:
                raise errors.FetchError(
                    f"{self.label}: the GGUF header is longer than {self._limit >> 20} MiB; "
                    "refusing to read more of it (fetch the file to plan with it)"
                )
            data, size = self._get(len(self._buf), len(self._buf) + CHUNK_BYTES - 1)
            self.size = size
            if not data:
                break
            self._buf += data

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            raise ValueError("RangedFile reads a bounded number of bytes")
        self._fill(self._pos + n)
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def tell(self) -> int:
        return self._pos

    @property
    def bytes_read(self) -> int:
        return len(self._buf)


def hub_range_getter(repo_id: str, filename: str, revision: str | None):
    """A `get(start, end)` for RangedFile over one Hub file, through huggingface_hub's session
    (its endpoint, token and proxies), redirects followed to the CDN as downloads do."""
    import huggingface_hub

    endpoint = settings.hf_endpoint()
    url = huggingface_hub.hf_hub_url(
        repo_id, filename, revision=revision or "main", endpoint=endpoint
    )
    headers = huggingface_hub.utils.build_hf_headers(token=settings.hf_token())
    label = f"{repo_id}/{filename}"

    def get(start: int, end: int) -> tuple[bytes, int]:
        try:
            answer = huggingface_hub.get_session().get(
                url, headers={**headers, "Range": f"bytes={start}-{end}"}, follow_redirects=True
            )
        except Exception as exc:
            raise errors.HubError(
                f"{label}: reading the GGUF header from {endpoint} failed ({exc}); check the "
                "network, or fetch the file first (`edgeeval fetch NAME`)",
                repo_id=repo_id,
                filename=filename,
            ) from exc
        if answer.status_code == 416:
            return b"", start
        if answer.status_code not in (200, 206):
            raise errors.HubError(
                f"{label}: reading the GGUF header from {endpoint} got HTTP "
                f"{answer.status_code}; a gated repo needs HF_TOKEN, a missing one a fixed "
                "models.yaml entry",
                repo_id=repo_id,
                filename=filename,
            )
        if answer.status_code == 200:  # no Range support: the whole body, cut to the chunk
            body = answer.content
            return body[start : end + 1], len(body)
        found = _CONTENT_RANGE.match(answer.headers.get("content-range", ""))
        if not found:
            raise errors.HubError(
                f"{label}: the Hub's range answer has no Content-Range",
                repo_id=repo_id,
                filename=filename,
            )
        return answer.content, int(found.group(1))

    return get


def remote_header(repo_id: str, filename: str, revision: str | None = None) -> Header:
    """The header of a Hub file read by byte ranges (never the whole file)."""
    label = f"{repo_id}/{filename}"
    stream = RangedFile(hub_range_getter(repo_id, filename, revision), label=label)
    stream._fill(CHUNK_BYTES)  # learn the size first
    if not stream.size:
        raise errors.HubError(
            f"{label}: the Hub answered an empty file", repo_id=repo_id, filename=filename
        )
    summary = read_gguf(stream, Path(label), stream.size)  # type: ignore[arg-type]
    return Header(summary, "Hub header", stream.bytes_read)


def local_copy(variant: Variant) -> Path | None:
    """The variant's file on this machine, if there is one (never hashed here)."""
    kind = variant.source.kind
    if kind == "local":
        path = Path(variant.source.path or "").expanduser()
        return path if path.is_file() else None
    if kind == "hub":
        from edgeeval.fetch.hub import cached_variant_file

        return cached_variant_file(variant)
    path = settings.models_dir() / variant.filename
    return path if path.is_file() else None


def variant_header(variant: Variant, *, remote: bool = True) -> Header | str:
    """The variant's header, or a line saying why there is none (not fetched and not on the
    Hub, the network down, a malformed file)."""
    path, source = local_copy(variant), variant.source
    try:
        if path is not None:
            return Header(check_gguf(path), "local file")
        if source.kind == "hub" and source.repo_id and source.filename:
            if not remote or settings.offline():
                return "not fetched, and offline: no header to read"
            return remote_header(source.repo_id, source.filename, source.revision)
    except errors.EdgeevalError as exc:
        return str(exc).splitlines()[0]
    return f"not fetched ({source.kind} source: its header is read once `edgeeval fetch` has it)"
