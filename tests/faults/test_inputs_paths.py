"""Only regular files are models: a directory, /dev/zero or a FIFO as a model path is refused
at once with a message saying what it is, never read (a hang) or hashed forever."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeeval.catalog.models import Source, Variant
from edgeeval.errors import FetchError, InvalidModelFileError
from edgeeval.fetch.files import open_regular, sha256_file
from edgeeval.fetch.sources import fetch, is_cached, verify_file
from edgeeval.gguf.check import check_gguf
from tests.faults.inputs_support import write_gguf


@pytest.fixture()
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe with a writer waiting on it. Should code under test open it blocking, the
    writer connects, writes nothing and closes, so the read ends instead of hanging the suite;
    the refusal the tests expect happens before any of that."""
    path = tmp_path / "pipe.gguf"
    os.mkfifo(path)

    def writer() -> None:
        with open(path, "wb"):
            pass

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    yield path
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets the waiting writer go
    thread.join()
    os.close(fd)


def _local(path: Path | str, **changes: object) -> Variant:
    return Variant(
        name="m",
        family="qwen",
        model="M",
        quant="Q8_0",
        source=Source(kind="local", path=str(path)),
        license="mit",
        kind="instruct",
        **changes,
    )


def _special(tmp_path: Path, fifo: Path) -> dict[str, Path]:
    return {"a directory": tmp_path, "a device": Path("/dev/zero"), "a named pipe": fifo}


def test_open_regular_names_what_the_path_is(tmp_path, fifo):
    for kind, path in _special(tmp_path, fifo).items():
        with pytest.raises(InvalidModelFileError, match=f"it is {kind}"):
            open_regular(path)


def test_the_gguf_check_and_the_hash_refuse_special_files(tmp_path, fifo):
    for path in _special(tmp_path, fifo).values():
        with pytest.raises(InvalidModelFileError, match="not a regular file"):
            check_gguf(path)
        with pytest.raises(InvalidModelFileError, match="not a regular file"):
            sha256_file(path)
        with pytest.raises(InvalidModelFileError):
            verify_file(path, size_bytes=None, sha256=None, remove_on_mismatch=False)


def test_a_local_source_must_be_a_regular_file(tmp_path, fifo):
    for path in _special(tmp_path, fifo).values():
        variant = _local(path)
        assert not is_cached(variant)
        with pytest.raises(FetchError, match="not a regular file") as info:
            fetch(variant)
        assert "source.local.path" in str(info.value)


def test_an_empty_local_path_is_refused_not_taken_as_the_current_directory():
    with pytest.raises(FetchError, match="not a regular file"):
        fetch(_local(""))


def test_a_missing_local_file_says_so():
    with pytest.raises(FetchError, match="does not exist"):
        fetch(_local("/nonexistent/model.gguf"))


def test_a_link_to_a_regular_file_is_accepted(tmp_path):
    real = write_gguf(tmp_path / "real.gguf")
    link = tmp_path / "link.gguf"
    link.symlink_to(real)
    file = fetch(_local(link))
    assert file.sha256 == sha256_file(real) and check_gguf(link).n_tensors == 2


def test_a_link_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "zero.gguf"
    link.symlink_to("/dev/zero")
    with pytest.raises(FetchError, match="not a regular file"):
        fetch(_local(link))
    with pytest.raises(InvalidModelFileError, match="a device"):
        check_gguf(link)
