import struct

import numpy as np
import pytest

from edgeeval.errors import InvalidModelFileError
from edgeeval.gguf.check import check_gguf, kv_cache_bytes


def write_tiny_gguf(path):
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_tensor("w1", np.ones((8, 64), dtype=np.float32))
    writer.add_tensor("w2", np.zeros((4, 32), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_well_formed_file_passes_and_is_summarized(tmp_path):
    summary = check_gguf(write_tiny_gguf(tmp_path / "ok.gguf"))
    assert summary.n_tensors == 2
    assert summary.n_params == 8 * 64 + 4 * 32
    assert summary.data_bytes == 8 * 64 * 4 + 4 * 32 * 2
    # 2 layers * 256 cells (100 padded as llama.cpp pads it) * 2 kv heads * (16 + 16) * 2 bytes
    assert kv_cache_bytes(summary, 100) == 2 * 256 * 2 * 32 * 2


def test_truncated_file_is_rejected_naming_the_tensor(tmp_path):
    path = write_tiny_gguf(tmp_path / "t.gguf")
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size - 100)
    with pytest.raises(InvalidModelFileError, match="tensor 'w2' data ends"):
        check_gguf(path)


def _header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


@pytest.mark.parametrize(
    "blob, reason",
    [
        (b"NOPE" + b"\0" * 20, "magic"),
        (b"GGUF" + struct.pack("<IQQ", 99, 0, 0), "version 99"),
        (_header(2**60, 0), "implausible counts"),
        (_header(0, 1) + struct.pack("<Q", 2**40) + b"k", "larger than allowed"),
        (
            _header(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 4, 2**40),
            "array of",
        ),
        (_header(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<I", 77), "value type 77"),
        (_header(1, 0), "file ends inside the header"),
    ],
)
def test_hostile_headers_are_refused_before_native_code(tmp_path, blob, reason):
    path = tmp_path / "bad.gguf"
    path.write_bytes(blob)
    with pytest.raises(InvalidModelFileError, match=reason) as info:
        check_gguf(path)
    assert str(path) in str(info.value)
