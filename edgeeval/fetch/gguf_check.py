"""Reject malformed or hostile GGUF files before llama.cpp's native parser sees them.

The walk reads the header, every metadata key/value and every tensor description with hard
bounds on counts and lengths, then checks that every tensor's data lies inside the file. It
never allocates more than the bounds allow, so a header claiming 2^60 tensors or a 4 GB string
is refused in microseconds. Layout facts (GGUF v2/v3): magic "GGUF", u32 version, u64 tensor
count, u64 kv count, then kvs, tensor infos, padding to `general.alignment` (default 32), data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edgeeval.errors import InvalidModelFileError

MAX_TENSORS = 100_000
MAX_KVS = 100_000
MAX_STRING_BYTES = 16 * 2**20
MAX_ARRAY_LEN = 10_000_000
MAX_DIMS = 4

# GGUF metadata value types -> struct format of the scalar (None: string/array handled apart).
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    """One tensor description from the header: name, shape (row length first), ggml type id."""

    name: str
    shape: tuple[int, ...]
    type_id: int


@dataclass(frozen=True)
class GgufSummary:
    """What the walk learned: enough for pre-flight estimates, reports and quantization plans."""

    version: int
    n_tensors: int
    n_params: int
    metadata: dict[str, object]
    data_bytes: int
    tensors: tuple[TensorInfo, ...] = ()


def _type_sizes() -> dict[int, tuple[int, int]]:
    """ggml type id -> (elements per block, bytes per block), from the gguf package."""
    from gguf import GGML_QUANT_SIZES  # pure-Python constants from llama.cpp's own package

    return {int(t): size for t, size in GGML_QUANT_SIZES.items()}


class _Reader:
    def __init__(self, fh: BinaryIO, path: Path, file_size: int) -> None:
        self.fh, self.path, self.file_size = fh, path, file_size

    def fail(self, reason: str) -> InvalidModelFileError:
        return InvalidModelFileError(self.path, reason)

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise self.fail(
                f"file ends inside the header (wanted {n} bytes at offset "
                f"{self.fh.tell() - len(data)})"
            )
        return data

    def unpack(self, fmt: str) -> object:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = int(self.unpack("Q"))  # type: ignore[arg-type]
        if length > MAX_STRING_BYTES or length > self.file_size:
            raise self.fail(f"string of {length} bytes is larger than allowed")
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, vtype: int, depth: int = 0) -> object:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY and depth == 0:
            item_type, count = int(self.unpack("I")), int(self.unpack("Q"))  # type: ignore[arg-type]
            if count > MAX_ARRAY_LEN:
                raise self.fail(f"array of {count} items is larger than allowed")
            items = [self.value(item_type, depth + 1) for _ in range(count)]
            return items if count <= 64 else len(items)  # keep only short arrays in memory
        raise self.fail(f"unknown metadata value type {vtype}")


def check_gguf(path: str | Path) -> GgufSummary:
    """Walk `path`'s GGUF structure with bounds; raise InvalidModelFileError naming the problem."""
    path = Path(path)
    file_size = path.stat().st_size
    with open(path, "rb") as fh:
        r = _Reader(fh, path, file_size)
        if r.take(4) != b"GGUF":
            raise r.fail("missing GGUF magic bytes (is this a GGUF model file?)")
        version = int(r.unpack("I"))  # type: ignore[arg-type]
        if version not in (2, 3):
            raise r.fail(f"unsupported GGUF version {version}")
        n_tensors, n_kv = int(r.unpack("Q")), int(r.unpack("Q"))  # type: ignore[arg-type]
        if n_tensors > MAX_TENSORS or n_kv > MAX_KVS:
            raise r.fail(f"implausible counts: {n_tensors} tensors, {n_kv} metadata keys")
        metadata = {}
        for _ in range(n_kv):
            key = r.string()
            metadata[key] = r.value(int(r.unpack("I")))  # type: ignore[arg-type]
        tensors = [_tensor_info(r) for _ in range(n_tensors)]
        align = int(metadata.get("general.alignment", 32))  # type: ignore[arg-type]
        if align <= 0 or align & (align - 1):
            raise r.fail(f"general.alignment {align} is not a power of two")
        data_start = -(-fh.tell() // align) * align
    n_params, data_bytes = _check_extents(r, tensors, data_start)
    return GgufSummary(
        version=version,
        n_tensors=n_tensors,
        n_params=n_params,
        metadata={k: v for k, v in metadata.items() if not isinstance(v, list) or len(v) <= 64},
        data_bytes=data_bytes,
        tensors=tuple(TensorInfo(n, d, t) for n, d, t, _ in tensors),
    )


def _tensor_info(r: _Reader) -> tuple[str, tuple[int, ...], int, int]:
    name = r.string()
    n_dims = int(r.unpack("I"))  # type: ignore[arg-type]
    if not 0 < n_dims <= MAX_DIMS:
        raise r.fail(f"tensor '{name}' has {n_dims} dimensions")
    dims = tuple(int(r.unpack("Q")) for _ in range(n_dims))  # type: ignore[arg-type]
    ttype, offset = int(r.unpack("I")), int(r.unpack("Q"))  # type: ignore[arg-type]
    return name, dims, ttype, offset


def _check_extents(r: _Reader, tensors: list, data_start: int) -> tuple[int, int]:
    sizes = _type_sizes()
    n_params = data_bytes = 0
    for name, dims, ttype, offset in tensors:
        if ttype not in sizes:
            raise r.fail(f"tensor '{name}' has unknown type id {ttype}")
        block, block_bytes = sizes[ttype]
        count = 1
        for d in dims:
            if d <= 0 or d > 2**40:
                raise r.fail(f"tensor '{name}' has a bad dimension {d}")
            count *= d
        if dims[0] % block:
            raise r.fail(f"tensor '{name}' row length {dims[0]} is not a multiple of {block}")
        nbytes = count // block * block_bytes
        if data_start + offset + nbytes > r.file_size:
            raise r.fail(
                f"tensor '{name}' data ends at byte {data_start + offset + nbytes:,} "
                f"but the file has {r.file_size:,} bytes (truncated download?)"
            )
        n_params += count
        data_bytes += nbytes
    return n_params, data_bytes


def kv_cache_bytes(summary: GgufSummary, n_ctx: int, *, bytes_per_value: int = 2) -> int | None:
    """Estimated KV cache size at `n_ctx` for an F16 cache, from the GGUF metadata.

    bytes = n_layer * n_ctx * n_head_kv * (key_length + value_length) * 2. Sliding-window layers
    (Gemma 3) hold less in practice, so this is an upper bound for them. None when unknown.
    """
    meta = summary.metadata
    arch = meta.get("general.architecture")
    try:
        n_layer = int(meta[f"{arch}.block_count"])  # type: ignore[arg-type]
        n_head = meta[f"{arch}.attention.head_count"]
        n_head_kv = meta.get(f"{arch}.attention.head_count_kv", n_head)
        n_embd = int(meta[f"{arch}.embedding_length"])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(n_head, list) or isinstance(n_head_kv, list):
        return None
    head_dim = n_embd // int(n_head)  # type: ignore[arg-type]
    k_len = int(meta.get(f"{arch}.attention.key_length", head_dim))  # type: ignore[arg-type]
    v_len = int(meta.get(f"{arch}.attention.value_length", head_dim))  # type: ignore[arg-type]
    return n_layer * n_ctx * int(n_head_kv) * (k_len + v_len) * bytes_per_value  # type: ignore[arg-type]
