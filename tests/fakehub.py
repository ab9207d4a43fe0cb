"""A fake Hugging Face Hub on 127.0.0.1, close enough to the real one for `hf_hub_download`.

Two HTTP servers run in daemon threads: the Hub itself and a "CDN" on another port. As on the
real Hub, `HEAD`/`GET /{repo_id}/resolve/{revision}/{filename}` answers an LFS file with a 302 to
the CDN carrying `X-Repo-Commit`, `X-Linked-Etag` (the sha256, quoted) and `X-Linked-Size`;
huggingface_hub stops at that redirect (another host), reads the metadata from it, and downloads
from the CDN without the Authorization header. With `hub.redirect = "relative"` the 302 instead
points at `/blobs/...` on the Hub itself, as a mirror or a renamed repo does; huggingface_hub then
follows it even for HEAD, so blob responses carry the commit and ETag too.

Also served like the real Hub: non-LFS files directly (ETag = git blob sha1), Range requests (206)
for resumed downloads, 404s with `X-Error-Code` RepoNotFound / RevisionNotFound / EntryNotFound,
and gated repos answering 401 (no token) or 403 (a token without access) with GatedRepo.
The tree API (`GET /api/models/{repo_id}/tree/{revision}[/{path}]`, what `HfApi.list_repo_tree`
and `list_repo_files` call) lists a revision's files as JSON, with `lfs.oid` (the sha256) for LFS
files; it is a metadata request, never a content one.
Dataset repos (`add_file(..., repo_type="dataset")`) answer under
`/datasets/{repo_id}/resolve/{revision}/{filename}`, the URL huggingface_hub builds for
`repo_type="dataset"`, and behave like model repos otherwise.

Use the `fake_hub` fixture (`from tests.fakehub import fake_hub  # noqa: F401`). It points
HF_ENDPOINT at the fake, turns telemetry off, and hides any real token so nothing leaves loopback.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest
from huggingface_hub import close_session, constants, get_session

_RESOLVE = re.compile(r"^/(?P<repo>.+?)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")
_TREE = re.compile(
    r"^/api/(?P<kind>models|datasets)/(?P<repo>[^/]+/[^/]+)/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?$"
)
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubFile:
    """One file at one commit; `advertised_sha256` is what the Hub claims, not always the truth."""

    content: bytes
    advertised_sha256: str
    lfs: bool
    commit: str

    @property
    def git_sha1(self) -> str:
        """The git blob id, the ETag the Hub sends for files stored in git rather than LFS."""
        header = f"blob {len(self.content)}\0".encode()
        return hashlib.sha1(header + self.content).hexdigest()

    @property
    def blob_path(self) -> str:
        return f"/blobs/{self.commit}/{hashlib.sha256(self.content).hexdigest()}"


@dataclass
class FakeRepo:
    gated: bool = False
    granted_tokens: set[str] = field(default_factory=set)
    commits: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    files: dict[tuple[str, str], HubFile] = field(default_factory=dict)  # (commit, name) -> file

    def resolve(self, revision: str) -> str | None:
        """The commit a revision names: a known branch/tag or a known full commit hash."""
        if revision in self.commits:
            return self.commits[revision]
        return revision if revision in self.commits.values() else None


@dataclass
class _Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    cut_after: int | None = None  # send only this many body bytes, then drop the connection


class FakeHub:
    """State of the fake Hub plus its two servers. Call `close()` when done (the fixture does)."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        #: Every request seen by either server: (method, path with query, lower-cased headers).
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        #: "cdn" (LFS files redirect to the second server) or "relative" (to /blobs on the Hub).
        self.redirect = "cdn"
        self._blobs: dict[str, HubFile] = {}
        self._cut_next: int | None = None
        self._lock = threading.Lock()
        self._hub_server = _serve(self, role="hub")
        self._cdn_server = _serve(self, role="cdn")
        self.url = _url(self._hub_server)
        self.cdn_url = _url(self._cdn_server)

    def add_file(
        self,
        repo_id: str,
        filename: str,
        content: bytes,
        *,
        revision: str = "main",
        gated: bool = False,
        lfs: bool = True,
        advertised_sha256: str | None = None,
        repo_type: str = "model",
    ) -> str:
        """Publish `content` as `filename` in `repo_id` at `revision`; return the commit hash.

        `advertised_sha256` makes the Hub claim a sha256 the content does not have.
        `repo_type="dataset"` publishes into a dataset repo, served under `/datasets/{repo_id}/`.
        """
        repo_id = _repo_key(repo_id, repo_type)
        repo = self.repos.setdefault(repo_id, FakeRepo())
        repo.gated = repo.gated or gated
        # A full commit hash names itself, as on the real Hub; a branch or tag gets a made-up one.
        commit = repo.commits.setdefault(
            revision,
            revision
            if _COMMIT.match(revision)
            else hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest(),
        )
        sha = advertised_sha256 or hashlib.sha256(content).hexdigest()
        entry = HubFile(content=content, advertised_sha256=sha, lfs=lfs, commit=commit)
        repo.files[(commit, filename)] = entry
        self._blobs[entry.blob_path] = entry
        return commit

    def grant(self, repo_id: str, token: str, *, repo_type: str = "model") -> None:
        """Let `token` read gated `repo_id` (as if its owner accepted the terms)."""
        self.repos.setdefault(_repo_key(repo_id, repo_type), FakeRepo()).granted_tokens.add(token)

    def cut_next_download(self, after_bytes: int) -> None:
        """Make the next full blob GET stop after `after_bytes` bytes, to force a resume."""
        self._cut_next = after_bytes

    def seen(self, method: str, path_prefix: str) -> list[dict[str, str]]:
        """Headers of the requests with `method` whose path starts with `path_prefix`."""
        return [h for m, p, h in self.requests if m == method and p.startswith(path_prefix)]

    def close(self) -> None:
        for server in (self._hub_server, self._cdn_server):
            server.shutdown()
            server.server_close()

    # The request handlers call these; each returns the whole reply.

    def handle(self, role: str, method: str, path: str, headers: dict[str, str]) -> _Reply:
        with self._lock:
            self.requests.append((method, path, headers))
        path = urlsplit(path).path
        if path.startswith("/blobs/") and (role == "cdn" or self.redirect == "relative"):
            return self._blob(path, method, headers)
        tree = _TREE.match(path) if role == "hub" else None
        if tree is not None and method == "GET":
            return self._tree(tree, headers)
        match = _RESOLVE.match(path) if role == "hub" else None
        if match is None:
            return _Reply(404, {"Content-Type": "text/plain"}, b"Not Found")
        return self._resolve(
            unquote(match["repo"]),
            unquote(match["revision"]),
            unquote(match["filename"]),
            method,
            headers,
        )

    def _resolve(
        self, repo_id: str, revision: str, filename: str, method: str, headers: dict[str, str]
    ) -> _Reply:
        repo = self.repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        refusal = self._gate(repo_id, repo, headers)
        if refusal is not None:
            return refusal
        commit = repo.resolve(revision)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        entry = repo.files.get((commit, filename))
        if entry is None:
            reply = _error(404, "EntryNotFound", f'{filename} does not exist on "{revision}"')
            reply.headers["X-Repo-Commit"] = commit
            return reply
        if not entry.lfs:
            reply = _content(entry.content, method, headers)
            reply.headers.update({"X-Repo-Commit": commit, "ETag": f'"{entry.git_sha1}"'})
            return reply
        base = self.cdn_url if self.redirect == "cdn" else ""
        return _Reply(
            302,
            {
                "Location": base + entry.blob_path,
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{entry.advertised_sha256}"',
                "X-Linked-Size": str(len(entry.content)),
                # The real Hub's ETag here is the git id of the LFS pointer, not of the content.
                "ETag": f'"{hashlib.sha1(entry.advertised_sha256.encode()).hexdigest()}"',
                "Content-Length": "0",
            },
        )

    def _tree(self, match: re.Match, headers: dict[str, str]) -> _Reply:
        """The tree API: every file of the revision (under `path`), recursive, as JSON."""
        repo_id = unquote(match["repo"])
        if match["kind"] == "datasets":
            repo_id = f"datasets/{repo_id}"
        repo = self.repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        refusal = self._gate(repo_id, repo, headers)
        if refusal is not None:
            return refusal
        commit = repo.resolve(unquote(match["revision"]))
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {match['revision']}")
        prefix = unquote(match["path"] or "").strip("/")
        listing = []
        for (file_commit, name), entry in sorted(repo.files.items()):
            if file_commit != commit or (prefix and not name.startswith(prefix + "/")):
                continue
            item: dict = {"type": "file", "oid": entry.git_sha1, "size": len(entry.content)}
            item["path"] = name
            if entry.lfs:
                item["lfs"] = {
                    "oid": entry.advertised_sha256,
                    "size": len(entry.content),
                    "pointerSize": 134,
                }
            listing.append(item)
        body = json.dumps(listing).encode()
        return _Reply(
            200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body
        )

    def content_requests(self) -> list[str]:
        """Paths of the GET requests that asked for file content (not the tree API)."""
        return [p for m, p, _ in self.requests if m == "GET" and not p.startswith("/api/")]

    def _gate(self, repo_id: str, repo: FakeRepo, headers: dict[str, str]) -> _Reply | None:
        if not repo.gated:
            return None
        auth = headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
        if token is None:
            return _error(
                401,
                "GatedRepo",
                f"Access to model {repo_id} is restricted. You must "
                "have access to it and be authenticated to access it. Please log in.",
            )
        if token not in repo.granted_tokens:
            return _error(
                403,
                "GatedRepo",
                f"Access to model {repo_id} is restricted and you "
                f"are not in the authorized list. Visit {self.url}/{repo_id} to ask "
                "for access.",
            )
        return None

    def _blob(self, path: str, method: str, headers: dict[str, str]) -> _Reply:
        entry = self._blobs.get(path)
        if entry is None:
            return _Reply(404, {"Content-Type": "text/plain"}, b"NoSuchKey")
        reply = _content(entry.content, method, headers)
        # Needed when the redirect was relative: the client then HEADs the blob on the Hub and
        # reads the commit and ETag from this response.
        reply.headers.update(
            {"X-Repo-Commit": entry.commit, "ETag": f'"{entry.advertised_sha256}"'}
        )
        if method == "GET" and reply.status == 200 and self._cut_next is not None:
            reply.cut_after, self._cut_next = self._cut_next, None
        return reply


def _repo_key(repo_id: str, repo_type: str) -> str:
    """How a repo appears in resolve URLs: models bare, datasets and spaces under a prefix."""
    return repo_id if repo_type == "model" else f"{repo_type}s/{repo_id}"


def _content(content: bytes, method: str, headers: dict[str, str]) -> _Reply:
    """200 with the whole content, or 206 with the part a `Range: bytes=a-b` header asks for."""
    base = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    wanted = _RANGE.match(headers.get("range", ""))
    if wanted is None:
        return _Reply(200, {**base, "Content-Length": str(len(content))}, content)
    start = int(wanted[1])
    end = min(int(wanted[2]) if wanted[2] else len(content) - 1, len(content) - 1)
    if start >= len(content) or start > end:
        return _Reply(
            416, {**base, "Content-Range": f"bytes */{len(content)}", "Content-Length": "0"}
        )
    part = content[start : end + 1]
    return _Reply(
        206,
        {
            **base,
            "Content-Length": str(len(part)),
            "Content-Range": f"bytes {start}-{end}/{len(content)}",
        },
        part,
    )


def _error(status: int, code: str, message: str) -> _Reply:
    body = ('{"error": "' + message.replace('"', "'") + '"}').encode()
    return _Reply(
        status,
        {
            "X-Error-Code": code,
            "X-Error-Message": message,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        },
        body,
    )


def _serve(hub: FakeHub, *, role: str) -> ThreadingHTTPServer:
    handler = type(f"_{role.title()}Handler", (_Handler,), {"hub": hub, "role": role})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval only makes shutdown() return sooner; nothing waits on it otherwise.
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no pooled connection outlives a test's server.
    protocol_version = "HTTP/1.0"
    hub: FakeHub
    role: str

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(send_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(send_body=True)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return None  # keep test output clean; the hub records requests itself

    def _answer(self, *, send_body: bool) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.hub.handle(self.role, self.command, self.path, headers)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            body = reply.body if reply.cut_after is None else reply.body[: reply.cut_after]
            self.wfile.write(body)
        self.wfile.flush()


class NetworkEscapeError(AssertionError):
    """A test tried to reach a host other than 127.0.0.1."""


def _loopback_only(request: object) -> None:
    url = getattr(request, "url", None)
    if getattr(url, "host", None) != "127.0.0.1":
        raise NetworkEscapeError(f"blocked a request to {url}: tests may only reach 127.0.0.1")


@pytest.fixture
def fake_hub(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FakeHub]:
    """A running FakeHub with HF_ENDPOINT pointing at it and every real credential hidden."""
    hub = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    for name in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_OIDC_RESOURCE",
        "HF_HUB_OFFLINE",
        "EDGEEVAL_OFFLINE",
    ):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub read these at import time; a stored login would otherwise be sent along.
    no_token = tmp_path_factory.mktemp("hf-home") / "token"
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(no_token))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    close_session()  # the shared HTTP client is rebuilt under this environment
    # A code path that forgot `endpoint=` would go to huggingface.co: fail the test instead.
    get_session().event_hooks["request"].append(_loopback_only)
    try:
        yield hub
    finally:
        close_session()
        hub.close()
