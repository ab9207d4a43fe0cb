"""Downloads from the Hugging Face Hub, end to end against the fake Hub on loopback.

conftest.py gives every test its own EDGEEVAL_HOME under tmp_path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import socket
from pathlib import Path

import pytest
from huggingface_hub import constants

from edgeeval import errors, settings
from edgeeval.catalog.models import Source, Variant
from edgeeval.fetch import files, hub
from edgeeval.fetch import sources as fetch
from tests import fakehub
from tests.fakehub import FakeHub

# The fixture, bound by assignment rather than import so its use as a parameter name is no
# redefinition for the linter (a `pytest_plugins` entry in the root conftest would also do).
fake_hub = fakehub.fake_hub

CONTENT = bytes(range(256)) * 200  # 51,200 bytes, more than one download chunk
REPO = "org/repo"
FILE = "m.gguf"


def make_variant(
    content: bytes = CONTENT,
    *,
    repo_id: str = REPO,
    filename: str = FILE,
    revision: str | None = None,
    sha256: str | None = None,
    size_bytes: int | None = -1,
) -> Variant:
    """A hub variant whose catalog size and sha256 match `content` unless overridden."""
    return Variant(
        name="t",
        family="qwen",
        model="m",
        quant="Q8_0",
        source=Source(kind="hub", repo_id=repo_id, filename=filename, revision=revision),
        license="mit",
        kind="instruct",
        size_bytes=len(content) if size_bytes == -1 else size_bytes,
        sha256=sha256 or hashlib.sha256(content).hexdigest(),
    )


def _fetch_error(variant: Variant) -> errors.EdgeevalError:
    with pytest.raises(errors.EdgeevalError) as info:
        fetch.fetch(variant)
    assert hub.cached_variant_file(variant) is None
    assert not fetch.cached_path(variant).exists()
    return info.value


def test_fetch_downloads_through_the_cdn_redirect(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_user")
    fake_hub.add_file(REPO, FILE, CONTENT)
    variant = make_variant()
    messages: list[str] = []

    local = fetch.fetch(variant, progress=messages.append)

    # The file lives in the standard Hugging Face cache, named there by its LFS sha256.
    assert local.path.is_relative_to(settings.hf_hub_cache())
    assert local.path.resolve().name == variant.sha256
    assert local.path.read_bytes() == CONTENT
    assert local.sha256 == variant.sha256
    resolve = f"/{REPO}/resolve/"
    assert fake_hub.seen("HEAD", resolve), "metadata was not asked of the Hub"
    # The file came from the CDN, and the token stayed on the Hub as it must.
    (cdn_get,) = fake_hub.seen("GET", "/blobs/")
    assert cdn_get["host"] == fake_hub.cdn_url.removeprefix("http://")
    assert "authorization" not in cdn_get
    assert all(h["authorization"] == "Bearer hf_user" for h in fake_hub.seen("HEAD", resolve))
    assert any(f"downloading {REPO}/{FILE} (0.00 GB)" in m for m in messages)
    # No second copy in edgeeval's own cache.
    assert not list(settings.models_dir().glob("*")) if settings.models_dir().exists() else True


def test_relative_redirect_is_followed_like_a_mirror(fake_hub: FakeHub) -> None:
    fake_hub.redirect = "relative"
    fake_hub.add_file(REPO, FILE, CONTENT)

    local = fetch.fetch(make_variant())

    assert local.path.read_bytes() == CONTENT
    assert fake_hub.seen("GET", "/blobs/")
    assert all(h["host"] == fake_hub.url.removeprefix("http://") for _, _, h in fake_hub.requests)


def test_non_lfs_file_is_served_directly(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, FILE, CONTENT, lfs=False)

    assert fetch.fetch(make_variant()).path.read_bytes() == CONTENT
    assert not fake_hub.seen("GET", "/blobs/")
    assert fake_hub.seen("GET", f"/{REPO}/resolve/")


def test_pinned_revision_is_requested(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, FILE, b"old" * 100, revision="main")
    fake_hub.add_file(REPO, FILE, CONTENT, revision="v2")

    assert fetch.fetch(make_variant(revision="v2")).path.read_bytes() == CONTENT
    assert fake_hub.seen("HEAD", f"/{REPO}/resolve/v2/{FILE}")


def test_cut_download_resumes_with_a_range_request(fake_hub: FakeHub) -> None:
    # huggingface_hub writes whole chunks, so only a cut after the first chunk leaves something
    # to resume from (and it waits 1 s before the retry, its own backoff).
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    big = bytes(range(256)) * ((chunk + chunk // 8) // 256)
    fake_hub.add_file(REPO, FILE, big)
    fake_hub.cut_next_download(after_bytes=chunk + 1000)

    local = fetch.fetch(make_variant(big))

    assert local.path.read_bytes() == big
    ranges = [h.get("range") for h in fake_hub.seen("GET", "/blobs/")]
    assert ranges == [None, f"bytes={chunk}-"]


def test_second_fetch_of_a_cached_file_makes_no_request(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, FILE, CONTENT)
    variant = make_variant()
    fetch.fetch(variant)
    seen = len(fake_hub.requests)
    assert seen > 0

    assert fetch.fetch(variant).path.read_bytes() == CONTENT
    assert len(fake_hub.requests) == seen


def test_missing_repo_names_the_repo(fake_hub: FakeHub) -> None:
    error = _fetch_error(make_variant(repo_id="org/nope"))

    assert isinstance(error, errors.RepoNotFoundError)
    assert "org/nope" in str(error) and "HF_TOKEN" in str(error)
    assert (error.repo_id, error.filename) == ("org/nope", FILE)


def test_missing_file_names_file_and_repo(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, FILE, CONTENT)

    error = _fetch_error(make_variant(filename="other.gguf"))

    assert isinstance(error, errors.RepoNotFoundError)
    assert "other.gguf" in str(error) and REPO in str(error)
    assert error.filename == "other.gguf"


def test_missing_revision_names_the_revision(fake_hub: FakeHub) -> None:
    fake_hub.add_file(REPO, FILE, CONTENT)

    error = _fetch_error(make_variant(revision="v9"))

    assert isinstance(error, errors.RepoNotFoundError)
    assert "'v9'" in str(error) and REPO in str(error)


def test_gated_repo_without_token_says_where_to_accept(fake_hub: FakeHub) -> None:
    fake_hub.add_file("google/gated", FILE, CONTENT, gated=True)

    error = _fetch_error(make_variant(repo_id="google/gated"))

    assert isinstance(error, errors.GatedRepoError)
    assert f"{fake_hub.url}/google/gated" in str(error)
    assert "HF_TOKEN" in str(error)
    assert error.repo_id == "google/gated"
    assert all("authorization" not in h for _, _, h in fake_hub.requests)
    assert not fake_hub.seen("GET", "/blobs/")


def test_gated_repo_with_token_lacking_access(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_not_granted")
    fake_hub.add_file("google/gated", FILE, CONTENT, gated=True)

    error = _fetch_error(make_variant(repo_id="google/gated"))

    assert isinstance(error, errors.GatedRepoError)
    assert f"{fake_hub.url}/google/gated" in str(error)
    assert "HF_TOKEN" in str(error) and "no access" in str(error)
    assert fake_hub.seen("HEAD", "/google/gated/")[0]["authorization"] == "Bearer hf_not_granted"


def test_gated_repo_with_granted_token_downloads(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    fake_hub.add_file("google/gated", FILE, CONTENT, gated=True)
    fake_hub.grant("google/gated", "hf_granted")

    assert fetch.fetch(make_variant(repo_id="google/gated")).path.read_bytes() == CONTENT


def test_content_not_matching_the_catalog_is_removed(fake_hub: FakeHub) -> None:
    good = hashlib.sha256(CONTENT).hexdigest()
    corrupt = CONTENT[:-1] + b"\x00"
    # The Hub claims the right sha256 (so nothing is refused early) but serves other bytes.
    fake_hub.add_file(REPO, FILE, corrupt, advertised_sha256=good)

    error = _fetch_error(make_variant())

    assert isinstance(error, errors.ChecksumMismatchError)
    assert good in str(error) and hashlib.sha256(corrupt).hexdigest() in str(error)
    assert fake_hub.seen("GET", "/blobs/"), "the mismatch must be found after downloading"


def test_hub_sha256_contradicting_the_catalog_is_refused_before_download(fake_hub: FakeHub) -> None:
    other = b"another file" * 100
    fake_hub.add_file(REPO, FILE, other)
    variant = make_variant(size_bytes=None)  # catalog sha256 is CONTENT's

    error = _fetch_error(variant)

    assert isinstance(error, errors.ChecksumMismatchError)
    assert str(variant.sha256) in str(error)
    assert hashlib.sha256(other).hexdigest() in str(error)
    assert not fake_hub.seen("GET", "/")


@pytest.mark.parametrize("flag", ["EDGEEVAL_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_with_uncached_file_makes_no_request(
    fake_hub: FakeHub, flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(flag, "1")
    fake_hub.add_file(REPO, FILE, CONTENT)

    error = _fetch_error(make_variant())

    assert isinstance(error, errors.OfflineError)
    assert "offline" in str(error)
    assert fake_hub.requests == []


def test_hub_module_itself_refuses_network_when_offline(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEEVAL_OFFLINE", "1")
    fake_hub.add_file(REPO, FILE, CONTENT)
    with pytest.raises(errors.OfflineError) as info:
        hub.fetch_hub_variant(make_variant(), progress=lambda _: None)

    assert getattr(info.value, "repo_id", None) == REPO
    assert getattr(info.value, "filename", None) == FILE
    assert f"{REPO}/{FILE}" in str(info.value)
    assert fake_hub.requests == [] and hub.cached_variant_file(make_variant()) is None


def test_unreachable_hub_is_an_offline_error(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a loopback port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", dead)

    error = _fetch_error(make_variant())

    assert isinstance(error, errors.OfflineError)
    assert dead in str(error) and f"{REPO}/{FILE}" in str(error)
    assert getattr(error, "repo_id", None) == REPO


def test_disk_space_is_checked_with_the_size_the_hub_reports(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add_file(REPO, FILE, CONTENT)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1000))
    with pytest.raises(errors.DiskSpaceError) as info:
        hub.fetch_hub_variant(make_variant(size_bytes=None), progress=lambda _: None)

    assert info.value.needed_bytes == len(CONTENT) + files.DISK_MARGIN_BYTES
    assert not fake_hub.seen("GET", "/")


def _unpinned() -> Variant:
    """A hub variant whose catalog entry gives neither size nor sha256."""
    return dataclasses.replace(make_variant(), sha256=None, size_bytes=None)


def _prefill_cache(fake_hub: FakeHub, content: bytes = CONTENT) -> Path:
    """The file downloaded by the real huggingface_hub into the HF cache, as any tool would."""
    from huggingface_hub import hf_hub_download

    fake_hub.add_file(REPO, FILE, content)
    path = hf_hub_download(
        REPO, FILE, endpoint=fake_hub.url, cache_dir=settings.hf_hub_cache(), token=False
    )
    fake_hub.requests.clear()
    return Path(path)


def test_a_file_already_in_the_hf_cache_is_used_without_any_request(fake_hub: FakeHub) -> None:
    cached = _prefill_cache(fake_hub)

    local = fetch.fetch(make_variant())

    assert local.path == cached and local.sha256 == hashlib.sha256(CONTENT).hexdigest()
    assert fake_hub.requests == []
    assert fetch.is_cached(make_variant())


def test_hf_cache_is_used_offline(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = _prefill_cache(fake_hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert fetch.fetch(_unpinned()).path == cached
    assert fake_hub.requests == []


def test_hf_home_is_honoured(fake_hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    fake_hub.add_file(REPO, FILE, CONTENT)

    local = fetch.fetch(make_variant())

    assert local.path.is_relative_to(tmp_path / "hf-home" / "hub")


def test_without_a_catalog_sha256_the_hubs_lfs_sha256_is_checked_and_recorded(
    fake_hub: FakeHub,
) -> None:
    fake_hub.add_file(REPO, FILE, CONTENT)
    variant = _unpinned()
    assert variant.sha256 is None

    local = fetch.fetch(variant)

    assert local.sha256 == hashlib.sha256(CONTENT).hexdigest()
    from edgeeval.fetch import stamps

    assert stamps.known_sha256(local.path) == local.sha256  # recorded: not hashed again


def test_without_a_catalog_sha256_corrupt_content_fails_the_lfs_sha256(fake_hub: FakeHub) -> None:
    good = hashlib.sha256(CONTENT).hexdigest()
    corrupt = CONTENT[:-1] + b"\x01"
    fake_hub.add_file(REPO, FILE, corrupt, advertised_sha256=good)

    error = _fetch_error(_unpinned())

    assert isinstance(error, errors.ChecksumMismatchError)
    assert good in str(error) and "removed" in str(error)
