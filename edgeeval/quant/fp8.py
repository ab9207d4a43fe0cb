"""FP8 E4M3, emulated: round weights to FP8 and store the dequantized values as F16.

This llama.cpp has no FP8 weight type, so an FP8 variant is emulated: each chosen tensor of a
16-bit (or F32) source is scaled, rounded to E4M3 and multiplied back, and the result is
written as F16. Its fidelity and accuracy are FP8's rounding; its speed and resident memory
are F16's, which is why builds record the storage size FP8 would have
(`storage_bytes`: one byte per weight plus a float32 scale per block) and the report ranks an
emulated variant by that size and shows no speed for it.

E4M3 "fn" (OCP FP8, as `ml_dtypes.float8_e4m3fn`): 1 sign, 4 exponent (bias 7) and 3 mantissa
bits; no infinities; largest value 448; smallest normal 2^-6; subnormals down to 2^-9.
Rounding is to nearest, ties to even; values beyond 448 saturate to +-448 (a plain cast
would give NaN).

Scalings (`fp8-e4m3:<scaling>` in a recipe; the default is block=128x128):
- `block=128x128`: one scale per 128 x 128 tile of (output row, input column), as
  DeepSeek-V3 and Qwen's -FP8 checkpoints store weights; edge tiles are partial;
- `channel`: one scale per output row;
- `tensor`: one scale for the whole tensor.
The scale is amax / 448 (float32), so the largest magnitude of each group lands on 448.
Example: a row [0.5, -1.75, 0.001] with `channel` has scale 1.75 / 448; 0.5 / scale = 128
(exact in E4M3) and 0.001 / scale = 0.256 rounds to 0.25 (steps are 2^-5 in [2^-2, 2^-1)),
so the row comes back as [0.5, -1.75, 0.0009765625].

The F16 store adds a rounding of at most 2^-11 relative (F16's 10 mantissa bits against
E4M3's 3), far below FP8's own step of 2^-4; a dequantized value beyond F16's range (only
possible from a BF16/F32 source) is an error naming the tensor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Largest finite E4M3 (fn) value.
E4M3_MAX = 448.0
#: Smallest normal exponent and mantissa bits of E4M3: subnormal step 2^(-6-3) = 2^-9.
E4M3_MIN_EXP = -6
E4M3_MANTISSA_BITS = 3
FP8_PREFIX = "fp8-e4m3"
DEFAULT_SCALING = "block=128x128"
#: Bytes per scale in the storage FP8 would have (float32, as DeepSeek-V3's scale_inv).
SCALE_BYTES = 4
#: Largest finite F16 value: the emulated file stores FP8's values as F16.
F16_MAX = 65504.0
#: Source tensor types an FP8 tensor may be rounded from.
SOURCE_TYPES = ("F16", "BF16", "F32")
_BLOCK = re.compile(r"block=(\d+)x(\d+)")
#: Rows converted at once (a multiple of any block height up to 4096 rows keeps tiles whole).
_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class Scaling:
    """How scales are grouped: `kind` is "block", "channel" or "tensor"; `block` is
    (rows, columns) for "block"."""

    kind: str
    block: tuple[int, int] = (0, 0)

    @property
    def spec(self) -> str:
        if self.kind == "block":
            return f"block={self.block[0]}x{self.block[1]}"
        return self.kind


def is_fp8(type_name: str | None) -> bool:
    """True for a recipe type of the fp8-e4m3 family (any scaling)."""
    return bool(type_name) and str(type_name).lower().split(":")[0] == FP8_PREFIX


def parse_fp8(text: str) -> str:
    """The canonical spelling of an fp8 recipe type, or ValueError saying what is allowed.

    >>> parse_fp8("FP8-E4M3"), parse_fp8("fp8-e4m3:channel"), parse_fp8("fp8-e4m3:block=1x64")
    ('fp8-e4m3:block=128x128', 'fp8-e4m3:channel', 'fp8-e4m3:block=1x64')
    """
    return f"{FP8_PREFIX}:{scaling_of(text).spec}"


def scaling_of(text: str) -> Scaling:
    """The Scaling an fp8 recipe type names (`fp8-e4m3[:block=RxC|channel|tensor]`)."""
    head, _, tail = str(text).strip().lower().partition(":")
    if head != FP8_PREFIX:
        raise ValueError(f"'{text}' is not an {FP8_PREFIX} type")
    tail = tail or DEFAULT_SCALING
    if tail in ("channel", "tensor"):
        return Scaling(tail)
    match = _BLOCK.fullmatch(tail)
    if match and int(match[1]) > 0 and int(match[2]) > 0:
        rows, cols = int(match[1]), int(match[2])
        if _CHUNK_ROWS % rows:
            raise ValueError(f"'{text}': block rows must divide {_CHUNK_ROWS}")
        return Scaling("block", (rows, cols))
    raise ValueError(
        f"unknown FP8 scaling '{tail}' in '{text}'; use {FP8_PREFIX}:block=128x128, "
        f"{FP8_PREFIX}:channel or {FP8_PREFIX}:tensor"
    )


# --- rounding ---


def round_e4m3(x: np.ndarray) -> np.ndarray:
    """`x` (any float array) rounded to the nearest E4M3 value, ties to even, saturating at
    +-448; float32 out. NaN stays NaN.

    >>> round_e4m3(np.array([1.0625, 1.1875, 500.0, -2.0**-10, 3 * 2.0**-10])).tolist()
    [1.0, 1.25, 448.0, -0.0, 0.00390625]
    """
    a = np.abs(np.asarray(x, dtype=np.float32))
    with np.errstate(invalid="ignore"):  # NaN and inf inputs: NaN stays, inf saturates
        return _round_abs(a, x)


def _round_abs(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    _, exp = np.frexp(a)  # a = m * 2^exp with m in [0.5, 1): the binade is 2^(exp - 1)
    step = np.ldexp(np.float32(1.0), np.maximum(exp - 1, E4M3_MIN_EXP) - E4M3_MANTISSA_BITS).astype(
        np.float32
    )
    # a / step and * step are exact (powers of two, no underflow); rint rounds half to even
    rounded = np.minimum(np.rint(a / step) * step, np.float32(E4M3_MAX))
    return np.copysign(rounded, x).astype(np.float32)


def group_amax(x: np.ndarray, scaling: Scaling) -> np.ndarray:
    """The amax of each scale group of a (..., rows, cols) float32 array, broadcastable back:
    block -> (..., ceil(rows/R), 1, ceil(cols/C), 1), channel -> (..., rows, 1),
    tensor -> a 0-d array."""
    a = np.abs(x)
    if scaling.kind == "tensor":
        return np.asarray(a.max() if a.size else 0.0, dtype=np.float32)
    if scaling.kind == "channel":
        return a.max(axis=-1, keepdims=True)
    r, c = scaling.block
    rows, cols = x.shape[-2:]
    pad = [(0, 0)] * (x.ndim - 2) + [(0, -rows % r), (0, -cols % c)]
    tiles = np.pad(a, pad).reshape(*x.shape[:-2], -(-rows // r), r, -(-cols // c), c)
    return tiles.max(axis=(-3, -1), keepdims=True)


def scale_of(amax: np.ndarray) -> np.ndarray:
    """amax / 448 as float32; 1 where amax is 0 (an all-zero group stays zero)."""
    amax = np.asarray(amax, dtype=np.float32)
    return np.where(amax > 0, amax / np.float32(E4M3_MAX), np.float32(1.0)).astype(np.float32)


def fake_quantize(x: np.ndarray, scaling: Scaling, *, amax: np.ndarray | None = None) -> np.ndarray:
    """`x` (..., rows, cols) through FP8 E4M3 and back: q = round_e4m3(x / scale), q * scale
    (float32). `amax` overrides the groups' amax (a tensor-wide scale over row chunks)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2:
        x = x.reshape(1, -1)
    scale = scale_of(group_amax(x, scaling) if amax is None else amax)
    if scaling.kind != "block":
        return round_e4m3(x / scale) * scale
    r, c = scaling.block
    rows, cols = x.shape[-2:]
    pad = [(0, 0)] * (x.ndim - 2) + [(0, -rows % r), (0, -cols % c)]
    tiles = np.pad(x, pad).reshape(*x.shape[:-2], -(-rows // r), r, -(-cols // c), c)
    out = (round_e4m3(tiles / scale) * scale).reshape(
        *x.shape[:-2], tiles.shape[-4] * r, tiles.shape[-2] * c
    )
    return out[..., :rows, :cols]


def n_scales(shape: tuple[int, ...], scaling: Scaling) -> int:
    """Scales an FP8 tensor of numpy `shape` (..., rows, cols) stores.

    >>> shape = (896, 4864)  # 896 rows of 4864: 7 x 38 blocks of 128 x 128
    >>> n_scales(shape, Scaling("block", (128, 128))), n_scales(shape, Scaling("channel"))
    (266, 896)
    """
    if len(shape) < 2:
        shape = (1, math.prod(shape))
    lead, (rows, cols) = math.prod(shape[:-2]), shape[-2:]
    if scaling.kind == "tensor":
        return 1
    if scaling.kind == "channel":
        return lead * rows
    r, c = scaling.block
    return lead * -(-rows // r) * -(-cols // c)


def storage_bytes(shape: tuple[int, ...], scaling: Scaling) -> int:
    """Bytes the tensor would take stored as FP8: one per weight plus a float32 per scale."""
    return math.prod(shape) + SCALE_BYTES * n_scales(shape, scaling)


# --- files ---


def dequantized(data: np.ndarray, type_name: str) -> np.ndarray:
    """A tensor's values as float32 (numpy shape), from F16, BF16 or F32 storage."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    return np.asarray(dequantize(data, GGMLQuantizationType[type_name]), dtype=np.float32)


def fp8_tensor(values: np.ndarray, scaling: Scaling, name: str) -> np.ndarray:
    """`values` (float32, numpy shape) through FP8 with `scaling`, as F16; chunked by rows so a
    large embedding never needs several float32 copies at once."""
    shape = values.shape
    x = values.reshape(-1, shape[-1]) if len(shape) != 3 else values
    out = np.empty(x.shape, dtype=np.float16)
    amax = group_amax(x, scaling) if scaling.kind == "tensor" else None
    axis = x.ndim - 2
    for start in range(0, x.shape[axis], _CHUNK_ROWS):
        part = (slice(None),) * axis + (slice(start, start + _CHUNK_ROWS),)
        got = fake_quantize(x[part], scaling, amax=amax)
        if np.any(np.abs(got) > F16_MAX):
            raise ValueError(
                f"{name}: an FP8-rounded value exceeds F16's range (65504); this source "
                "cannot be emulated in an F16 file"
            )
        out[part] = got
    return out.reshape(shape)


def write_fp8_gguf(src: str | Path, dst: str | Path, fp8: dict[str, str]) -> None:
    """Copy GGUF `src` to `dst` with every tensor named in `fp8` (tensor -> fp8 recipe type)
    rounded to FP8 and stored as F16; every other tensor and all metadata are copied as they
    are, and general.file_type says F16. Tensors are written one at a time.

    Raises ValueError naming the tensor when one in `fp8` is not F16/BF16/F32 in `src`.
    """
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields.get(gguf.Keys.General.ARCHITECTURE)
    writer = gguf.GGUFWriter(str(dst), arch.contents() if arch else "llama")
    writer.data_alignment = reader.alignment
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            continue
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), main, sub_type=sub)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
    for tensor in reader.tensors:
        if tensor.name in fp8:
            if tensor.tensor_type.name not in SOURCE_TYPES:
                raise ValueError(
                    f"{tensor.name} is {tensor.tensor_type.name} in {Path(src).name}; FP8 "
                    f"rounding needs a 16-bit source ({', '.join(SOURCE_TYPES)})"
                )
            shape = tuple(int(d) for d in reversed(tensor.shape))
            writer.add_tensor_info(tensor.name, shape, np.dtype(np.float16), 2 * math.prod(shape))
        else:
            writer.add_tensor_info(
                tensor.name,
                tensor.data.shape,
                tensor.data.dtype,
                tensor.data.nbytes,
                tensor.tensor_type,
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        if tensor.name in fp8:
            shape = tuple(int(d) for d in reversed(tensor.shape))
            values = dequantized(tensor.data, tensor.tensor_type.name).reshape(shape)
            data = fp8_tensor(values, scaling_of(fp8[tensor.name]), tensor.name)
        else:
            data = tensor.data
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()
