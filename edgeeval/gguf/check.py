"""Reject malformed or hostile GGUF files before llama.cpp's native parser sees them.

The walk reads the header, every metadata key/value and every tensor description with hard
bounds on counts and lengths, then checks that every tensor's data lies inside the file. It
never allocates more than the bounds allow, so a header claiming 2^60 tensors or a 4 GB string
is refused in microseconds. Layout facts (GGUF v2/v3): magic "GGUF", u32 version, u64 tensor
count, u64 kv count, then kvs, tensor infos, padding to `general.alignment` (default 32), data.

Every metadata value edgeeval itself reads (alignment, architecture, layer and head counts,
head sizes, the vocabulary) is type- and range-checked here, so later estimates can trust
them; a file with, say, `head_count = 0` or a string alignment is refused with the key named.
Only regular files are opened (a FIFO, device or directory is refused without blocking).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeGuard

from edgeeval.errors import InvalidModelFileError
from edgeeval.gguf.kvcache import kv_bytes
from edgeeval.safeio import open_regular
from edgeeval.text import safe_text

MAX_TENSORS = 100_000
MAX_KVS = 100_000
MAX_STRING_BYTES = 16 * 2**20
MAX_ARRAY_LEN = 10_000_000
MAX_DIMS = 4
#: Arrays up to this many items are kept in the summary; longer ones become an ArrayLength.
MAX_KEPT_ARRAY = 4096
MAX_ALIGNMENT = 1 << 20

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


class ArrayLength(int):
    """The item count of a metadata array too long to keep in memory (e.g. the vocabulary)."""


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

    def uint(self, fmt: str) -> int:
        """Read one unsigned integer field ("I" or "Q") and return it."""
        value = self.unpack(fmt)
        assert isinstance(value, int)  # struct's integer formats always give int
        return value

    def string(self) -> str:
        length = self.uint("Q")
        if length > MAX_STRING_BYTES or length > self.file_size:
            raise self.fail(f"string of {length} bytes is larger than allowed")
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, vtype: int, depth: int = 0) -> object:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY and depth == 0:
            item_type, count = self.uint("I"), self.uint("Q")
            if count > MAX_ARRAY_LEN:
                raise self.fail(f"array of {count} items is larger than allowed")
            if count > MAX_KEPT_ARRAY:  # read (bounds-checked) but keep only the count
                for _ in range(count):
                    self.value(item_type, depth + 1)
                return ArrayLength(count)
            return [self.value(item_type, depth + 1) for _ in range(count)]
        raise self.fail(f"unknown metadata value type {vtype}")


def check_gguf(path: str | Path) -> GgufSummary:
    """Walk `path`'s GGUF structure with bounds; raise InvalidModelFileError naming the problem."""
    path = Path(path)
    with open_regular(path) as fh:
        return read_gguf(fh, path, os.fstat(fh.fileno()).st_size)


def read_gguf(fh: BinaryIO, path: Path, file_size: int) -> GgufSummary:
    """check_gguf over an open binary stream (`read` and `tell`) of a file of `file_size` bytes:
    a local file, or the start of a remote one read by byte ranges (fetch/header.py)."""
    r = _Reader(fh, path, file_size)
    if r.take(4) != b"GGUF":
        raise r.fail("missing GGUF magic bytes (is this a GGUF model file?)")
    version = r.uint("I")
    if version not in (2, 3):
        raise r.fail(f"unsupported GGUF version {version}")
    n_tensors, n_kv = r.uint("Q"), r.uint("Q")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KVS:
        raise r.fail(f"implausible counts: {n_tensors} tensors, {n_kv} metadata keys")
    metadata: dict[str, object] = {}
    for _ in range(n_kv):
        key = r.string()
        metadata[key] = r.value(r.uint("I"))
    check_metadata(metadata, path)
    tensors = [_tensor_info(r) for _ in range(n_tensors)]
    align = metadata.get("general.alignment", 32)
    assert _is_int(align)  # check_metadata refused any other alignment
    data_start = -(-fh.tell() // align) * align
    n_params, data_bytes = _check_extents(r, tensors, data_start, align)
    return GgufSummary(
        version=version,
        n_tensors=n_tensors,
        n_params=n_params,
        metadata=metadata,
        data_bytes=data_bytes,
        tensors=tuple(TensorInfo(n, d, t) for n, d, t, _ in tensors),
    )


def _tensor_info(r: _Reader) -> tuple[str, tuple[int, ...], int, int]:
    name = r.string()
    n_dims = r.uint("I")
    if not 0 < n_dims <= MAX_DIMS:
        raise r.fail(f"tensor '{name}' has {n_dims} dimensions")
    dims = tuple(r.uint("Q") for _ in range(n_dims))
    ttype, offset = r.uint("I"), r.uint("Q")
    return name, dims, ttype, offset


def _check_extents(r: _Reader, tensors: list, data_start: int, align: int) -> tuple[int, int]:
    sizes = _type_sizes()
    n_params = data_bytes = 0
    for name, dims, ttype, offset in tensors:
        if offset % align:
            raise r.fail(f"tensor '{name}' data offset {offset} is not a multiple of {align}")
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


def kv_cache_bytes(summary: GgufSummary, n_ctx: int, **options: Any) -> int | None:
    """KV cache bytes llama.cpp allocates at `n_ctx` for this file, from its metadata: per-layer
    GQA, sliding-window layers and MLA as fetch.kvcache models them, the context padded as
    llama.cpp pads it. `options` are kvcache.kv_layout's (n_ubatch, swa_full, flash_attn,
    cache_type_k, cache_type_v; kvcache.kv_options gives a run's): by default an F16 cache and
    llama-cpp-python's full-size window layers. None when unknown (missing values, values
    check_gguf would refuse, or an architecture whose memory is not a plain KV cache).
    """
    return kv_bytes(summary.metadata, n_ctx, **options)


# --- metadata checks ------------------------------------------------------------------------
# Per key (after "<arch>." for the model keys): what the value must be and its upper bound.
_ARCH_COUNTS = {
    "block_count": 1 << 16,
    "embedding_length": 1 << 24,
    "context_length": 1 << 40,
    "attention.key_length": 1 << 20,
    "attention.value_length": 1 << 20,
}
_ARCH_HEADS = ("attention.head_count", "attention.head_count_kv")
_MAX_HEADS = 1 << 16


def _shown(value: object) -> str:
    """A metadata value, short and safe to print, with its Python type."""
    return f"{type(value).__name__} {safe_text(repr(value), 40)}"


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool | ArrayLength)


def _heads_ok(value: object, minimum: int) -> bool:
    """A head count: an integer, or a per-layer list of integers (0 = no attention there)."""
    if isinstance(value, list):
        return bool(value) and all(_is_int(v) and 0 <= v <= _MAX_HEADS for v in value)
    return _is_int(value) and minimum <= value <= _MAX_HEADS


def check_metadata(metadata: dict[str, object], path: str | Path) -> None:
    """Raise InvalidModelFileError naming the key when a value edgeeval reads is mistyped or
    out of range (alignment, architecture, layer/head counts, head sizes, vocabulary)."""

    def fail(key: str, what: str) -> InvalidModelFileError:
        return InvalidModelFileError(
            path, f"metadata {key} must be {what}, got {_shown(meta[key])}"
        )

    meta = metadata
    if "general.alignment" in meta:
        align = meta["general.alignment"]
        if not _is_int(align) or not 0 < align <= MAX_ALIGNMENT or align & (align - 1):
            raise fail("general.alignment", f"a power of two up to {MAX_ALIGNMENT}")
    if "tokenizer.ggml.tokens" in meta and not isinstance(
        meta["tokenizer.ggml.tokens"], list | ArrayLength
    ):
        raise fail("tokenizer.ggml.tokens", "an array")
    arch = meta.get("general.architecture")
    if "general.architecture" in meta and not (isinstance(arch, str) and 0 < len(arch) <= 64):
        raise fail("general.architecture", "a short string")
    if not isinstance(arch, str):
        return
    for suffix, limit in _ARCH_COUNTS.items():
        key = f"{arch}.{suffix}"
        value = meta.get(key)
        if key in meta and not (_is_int(value) and 0 < value <= limit):
            raise fail(key, f"an integer from 1 to {limit}")
    for suffix in _ARCH_HEADS:
        key = f"{arch}.{suffix}"
        minimum = 0 if suffix.endswith("_kv") else 1
        if key in meta and not _heads_ok(meta[key], minimum):
            raise fail(
                key, f"an integer from {minimum} to {_MAX_HEADS} or a per-layer list of them"
            )
