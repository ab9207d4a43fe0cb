"""Build derived variants: a source GGUF re-typed by a recipe through llama.cpp's quantizer.

A recipe (models.yaml `recipes:`) names a llama.cpp file type (`ftype`: the default tensor type
plus llama.cpp's own per-tensor mixture, e.g. Q4_K_M), an ordered list of per-tensor overrides
(regex -> type, searched in tensor names, first match wins), the output and token-embedding types
and a `pure` flag (no mixture: every other quantizable tensor gets the file type's default).
Types are whatever this llama.cpp knows (Q8_0, Q4_K, MXFP4, NVFP4, ...); there is no FP8 weight
type in this version, so Q8_0 is the 8-bit point.

A tensor whose row length is not a multiple of its type's block size cannot hold that type.
For the types a recipe names, edgeeval picks the fallback before llama.cpp runs (llama.cpp's own
table, e.g. Q6_K -> Q8_0; NVFP4, which llama.cpp has no fallback for, -> Q5_0; F16 when nothing
fits); llama.cpp falls back for its mixture itself and its log is parsed. Both are reported.

The quantizer runs in a child process (`python -m edgeeval.quantize SPEC OUT`), so a native
abort is a reported failure. The result goes to `<models>/derived/<variant>.gguf` with a JSON
sidecar; a build with the same source sha256 and recipe hash is a cache hit.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeeval import hostinfo, settings
from edgeeval import records as rec
from edgeeval.catalog import Catalog, Variant, load_catalog, suggest
from edgeeval.errors import ConfigError, EdgeevalError, FetchError
from edgeeval.fetch import LocalFile, fetch, verify_file
from edgeeval.files import ensure_free_space, sha256_file
from edgeeval.gguf_check import check_gguf

Progress = Callable[[str], None]

#: llama.cpp's default tensor type for each file type it can write (llama_ftype_get_default_type).
FTYPE_DEFAULT_TYPE = {
    "F32": "F32", "F16": "F16", "BF16": "BF16", "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0",
    "Q5_1": "Q5_1", "Q8_0": "Q8_0", "Q1_0": "Q1_0", "Q2_0": "Q2_0", "MXFP4_MOE": "MXFP4",
    "Q2_K": "Q2_K", "Q2_K_S": "Q2_K", "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K",
    "TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0", "IQ2_XXS": "IQ2_XXS", "IQ2_XS": "IQ2_XS",
    "IQ2_S": "IQ2_XS", "IQ2_M": "IQ2_S", "IQ3_XS": "IQ3_S", "IQ3_XXS": "IQ3_XXS",
    "IQ1_S": "IQ1_S", "IQ1_M": "IQ1_M", "IQ4_NL": "IQ4_NL", "IQ4_XS": "IQ4_XS",
    "IQ3_S": "IQ3_S", "IQ3_M": "IQ3_S",
}
FLOAT_TYPES = ("F32", "F16", "BF16")
#: Types ggml cannot quantize weights to (activations, integers).
NOT_WEIGHT_TYPES = ("Q8_1", "Q8_K", "I8", "I16", "I32", "I64", "F64")
#: Types llama.cpp refuses to write without an importance matrix (recipes have none).
NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS")
#: llama.cpp's fallback when a row does not fit a type's block (tensor_type_fallback).
LLAMA_FALLBACK = {**dict.fromkeys(("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS",
                                   "IQ3_S", "IQ4_XS"), "IQ4_NL"),
                  **dict.fromkeys(("Q2_0", "Q2_K", "Q3_K", "TQ1_0", "TQ2_0"), "Q4_0"),
                  "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
#: Ours, for block-64+ types llama.cpp has no fallback for: the next 32-block step up.
EDGEEVAL_FALLBACK = {"NVFP4": "Q5_0"}
TOKEN_EMBD = ("token_embd.weight", "per_layer_token_embd.weight")
_RECIPE_KEYS = ("ftype", "overrides", "output_type", "token_embedding_type", "pure",
                "description")
_NOT_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "ssm_conv1d",
                  "per_layer_model_proj", "position_embd", "token_types")
_LLAMA_FALLBACK_LOG = re.compile(
    r"warning: (?P<tensor>\S+)\s+- ncols\s+(?P<ncols>\d+) not divisible by\s+\d+ "
    r"\(required for type\s+(?P<wanted>\S+)\).*-> falling back to\s+(?P<got>\S+)")


@dataclass(frozen=True)
class Recipe:
    """A validated recipe; type names are upper case as llama.cpp spells them."""

    name: str
    ftype: str
    overrides: tuple[tuple[str, str], ...] = ()
    output_type: str | None = None
    token_embedding_type: str | None = None
    pure: bool = False
    description: str = ""

    def spec(self) -> dict[str, Any]:
        """The fields that decide the built file (not the name or description)."""
        return {"ftype": self.ftype, "overrides": [list(o) for o in self.overrides],
                "output_type": self.output_type, "pure": self.pure,
                "token_embedding_type": self.token_embedding_type}

    def digest(self) -> str:
        """16 hex digits of sha256 over `spec()`: half of a build's cache key."""
        blob = json.dumps(self.spec(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Fallback:
    """A tensor that could not take the type it was meant to, because of its row length."""

    tensor: str
    wanted: str
    got: str
    row_length: int
    by: str  # "edgeeval" (chosen before the build) or "llama.cpp" (its mixture, from its log)


@dataclass(frozen=True)
class BuildInfo:
    """What a build produced; stored as the JSON sidecar next to the file."""

    variant: str
    recipe: str
    recipe_hash: str
    recipe_spec: dict[str, Any]
    base: str
    base_quant: str
    source_sha256: str
    source_types: dict[str, int]
    requantized: bool
    path: str
    sha256: str
    size_bytes: int
    n_params: int
    bits_per_weight: float
    type_counts: dict[str, int]
    type_params: dict[str, int]
    fallbacks: tuple[Fallback, ...]
    llama_cpp_python_version: str
    build_s: float
    built_at: str

    @property
    def key(self) -> str:
        """Cache key: source sha256 + recipe hash."""
        return f"{self.source_sha256}:{self.recipe_hash}"


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]  # GGUF order: shape[0] is the row length
    type: str
    n_params: int


@dataclass(frozen=True)
class Plan:
    """What llama.cpp is asked for, after edgeeval's fallbacks; `fixed` maps tensor -> type
    for every tensor whose type the recipe decides (the rest follow llama.cpp's mixture)."""

    overrides: tuple[tuple[str, str], ...]
    output_type: str | None
    token_embedding_type: str | None
    fixed: dict[str, str]
    fallbacks: tuple[Fallback, ...]


# --- recipes ---

@functools.lru_cache(maxsize=1)
def known_types() -> dict[str, int]:
    """Tensor type names -> ggml ids: llama-cpp-python's enum plus llama.cpp's gguf package
    (which also lists BF16, TQ1_0 and TQ2_0)."""
    from gguf import GGMLQuantizationType

    from edgeeval.backend import ggml_type_ids

    return {**{t.name: int(t.value) for t in GGMLQuantizationType}, **ggml_type_ids()}


@functools.lru_cache(maxsize=1)
def block_sizes() -> dict[str, int]:
    """Elements per block of each type the gguf package can read."""
    from gguf import GGML_QUANT_SIZES

    return {t.name: size[0] for t, size in GGML_QUANT_SIZES.items()}


def load_recipes(catalog: Catalog) -> dict[str, Recipe]:
    """The catalog's validated recipes; also checks every derived variant names one."""
    if not isinstance(catalog.recipes, dict):
        raise ConfigError("must be a mapping of recipe name to recipe", path=catalog.path,
                          key="recipes")
    recipes = {str(n): parse_recipe(str(n), raw, path=catalog.path)
               for n, raw in catalog.recipes.items()}
    for variant in catalog.variants.values():
        name = variant.source.recipe
        if variant.source.kind == "derived" and name not in recipes:
            near = suggest(str(name), list(recipes))
            hint = f"did you mean '{near[0]}'?" if near else f"known: {', '.join(recipes)}"
            raise ConfigError(f"unknown recipe '{name}'; {hint}", path=catalog.path,
                              entry=variant.name, key="source.derived.recipe")
    return recipes


def parse_recipe(name: str, raw: Any, *, path: str | Path) -> Recipe:
    """Validate one recipe mapping; every error names the file, the recipe and the key."""
    def fail(message: str, key: str) -> ConfigError:
        return ConfigError(message, path=path, entry=f"recipes.{name}", key=key)

    if not isinstance(raw, dict):
        raise fail("a recipe must be a mapping with at least 'ftype'", "ftype")
    for key in raw:
        if key not in _RECIPE_KEYS:
            near = suggest(str(key), list(_RECIPE_KEYS))
            raise fail("unknown key" + (f"; did you mean '{near[0]}'?" if near else
                                        f"; known keys: {', '.join(_RECIPE_KEYS)}"), str(key))
    if "ftype" not in raw:
        raise fail("missing required key (a llama.cpp file type such as Q8_0 or Q4_K_M)", "ftype")
    ftype = _check_ftype(raw["ftype"], fail)
    if not isinstance(raw.get("pure", False), bool):
        raise fail("must be true or false", "pure")
    overrides = _parse_overrides(raw, fail)
    if overrides and FTYPE_DEFAULT_TYPE[ftype] in FLOAT_TYPES:
        raise fail(f"llama.cpp applies overrides only when the file type is quantized, not "
                   f"{ftype}; use ftype: Q8_0 with pure: true", "overrides")
    types = {k: _check_type(raw[k], fail, k) if raw.get(k) is not None else None
             for k in ("output_type", "token_embedding_type")}
    return Recipe(name=name, ftype=ftype, overrides=overrides, pure=raw.get("pure", False),
                  description=str(raw.get("description") or ""), **types)


def _check_ftype(value: Any, fail: Callable[[str, str], ConfigError]) -> str:
    from edgeeval.backend import llama_ftype_ids

    name = str(value).upper()
    known = llama_ftype_ids()
    if name not in known:
        near = suggest(name, list(known))
        raise fail(f"unknown file type '{value}'" + (f"; did you mean '{near[0]}'?" if near
                   else f"; llama.cpp knows: {', '.join(known)}"), "ftype")
    if name not in FTYPE_DEFAULT_TYPE:
        raise fail(f"llama.cpp knows file type {name} but its quantizer cannot write it as a "
                   f"whole-file type in this version; use ftype: Q8_0, pure: true and "
                   f"overrides that map tensors to {name}", "ftype")
    _check_type(FTYPE_DEFAULT_TYPE[name], fail, "ftype")
    return name


def _check_type(value: Any, fail: Callable[[str, str], ConfigError], key: str) -> str:
    name = str(value).upper()
    if name not in known_types():
        near = suggest(name, list(known_types()))
        raise fail(f"unknown tensor type '{value}'" + (f"; did you mean '{near[0]}'?" if near
                   else "") + f" (llama.cpp knows: {', '.join(known_types())})", key)
    if name in NOT_WEIGHT_TYPES:
        raise fail(f"{name} is not a weight type llama.cpp can quantize to", key)
    if name in NEEDS_IMATRIX:
        raise fail(f"{name} needs an importance matrix, which recipes do not support yet", key)
    if name not in block_sizes():
        raise fail(f"the installed gguf package cannot read {name} tensors, so edgeeval could "
                   f"not check the built file; upgrade gguf (pip install -U gguf)", key)
    return name


def _parse_overrides(raw: dict, fail: Callable[[str, str], ConfigError]
                     ) -> tuple[tuple[str, str], ...]:
    if "overrides" not in raw:
        return ()
    items = raw["overrides"]
    if not isinstance(items, list) or not items:
        raise fail("must be a non-empty list of {regex: type} mappings (or leave the key out)",
                   "overrides")
    out = []
    for index, item in enumerate(items):
        key = f"overrides[{index}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise fail("each override is a one-entry mapping {regex: type}", key)
        pattern, type_name = next(iter(item.items()))
        try:
            re.compile(str(pattern))
        except re.error as exc:
            raise fail(f"bad regex '{pattern}': {exc}", key) from None
        if "(?P" in str(pattern) or "(?<" in str(pattern):
            raise fail(f"'{pattern}' uses Python-only regex syntax; llama.cpp uses ECMAScript "
                       "(std::regex)", key)
        out.append((str(pattern), _check_type(type_name, fail, key)))
    return tuple(out)


# --- planning ---

def read_tensors(path: str | Path) -> list[Tensor]:
    """Every tensor of a GGUF file (checked with bounds first): name, shape, type, size.

    A direct walk of the header: gguf.GGUFReader takes seconds on a 150k-token vocabulary.
    """
    from gguf import GGMLQuantizationType

    check_gguf(path)
    with open(path, "rb") as fh:
        _, n_tensors, n_kv = struct.unpack("<4xIQQ", fh.read(24))
        for _ in range(n_kv):
            fh.seek(struct.unpack("<Q", fh.read(8))[0], os.SEEK_CUR)
            _skip_value(fh, struct.unpack("<I", fh.read(4))[0])
        out = []
        for _ in range(n_tensors):
            name = fh.read(struct.unpack("<Q", fh.read(8))[0]).decode("utf-8", "replace")
            n_dims = struct.unpack("<I", fh.read(4))[0]
            shape = struct.unpack(f"<{n_dims}Q", fh.read(8 * n_dims))
            type_id = struct.unpack("<IQ", fh.read(12))[0]
            out.append(Tensor(name, shape, GGMLQuantizationType(type_id).name,
                              math.prod(shape)))
    return out


_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _skip_value(fh: Any, vtype: int) -> None:
    """Move past one metadata value (check_gguf has already bounded every length)."""
    if vtype in _SCALAR_BYTES:
        fh.seek(_SCALAR_BYTES[vtype], os.SEEK_CUR)
    elif vtype == 8:
        fh.seek(struct.unpack("<Q", fh.read(8))[0], os.SEEK_CUR)
    else:
        item_type, count = struct.unpack("<IQ", fh.read(12))
        if item_type in _SCALAR_BYTES:
            fh.seek(_SCALAR_BYTES[item_type] * count, os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip_value(fh, item_type)


def is_quantizable(tensor: Tensor) -> bool:
    """llama.cpp's generic rule: weights of 2+ dimensions, except norms, routers and tiny ones."""
    return (any(d > 1 for d in tensor.shape[1:]) and tensor.name.endswith("weight")
            and not any(part in tensor.name for part in _NOT_QUANTIZED))


def fit_type(wanted: str, row_length: int) -> str:
    """`wanted` if rows of `row_length` fit its blocks, else its fallback (F16 as last resort).

    Example: NVFP4 (blocks of 64) on rows of 96 -> Q5_0 (blocks of 32); Q6_K on 96 -> Q8_0.
    """
    sizes = block_sizes()
    if row_length % sizes[wanted] == 0:
        return wanted
    alt = LLAMA_FALLBACK.get(wanted) or EDGEEVAL_FALLBACK.get(wanted, "Q8_0")
    return alt if row_length % sizes[alt] == 0 else "F16"


def plan_build(recipe: Recipe, tensors: list[Tensor]) -> Plan:
    """Decide every tensor type the recipe fixes, with fallbacks for rows that do not fit."""
    quantized_default = FTYPE_DEFAULT_TYPE[recipe.ftype] not in FLOAT_TYPES
    pinned: list[tuple[str, str]] = []
    fixed: dict[str, str] = {}
    fallbacks = []
    special = {"output": recipe.output_type, "token": recipe.token_embedding_type}
    for tensor in filter(is_quantizable, tensors):
        wanted = _recipe_type(recipe, tensor.name, quantized_default)
        if wanted is None:
            continue
        got = fit_type(wanted, tensor.shape[0])
        fixed[tensor.name] = got
        if got == wanted:
            continue
        fallbacks.append(Fallback(tensor.name, wanted, got, tensor.shape[0], "edgeeval"))
        if tensor.name == "output.weight" and recipe.output_type:
            special["output"] = got
        elif tensor.name in TOKEN_EMBD and recipe.token_embedding_type:
            special["token"] = got
        else:
            pinned.append((f"^{re.escape(tensor.name)}$", got))
    return Plan(overrides=tuple(pinned) + recipe.overrides, output_type=special["output"],
                token_embedding_type=special["token"], fixed=fixed, fallbacks=tuple(fallbacks))


def _recipe_type(recipe: Recipe, name: str, quantized_default: bool) -> str | None:
    """The type the recipe names for a tensor, in llama.cpp's order of precedence."""
    if name in TOKEN_EMBD and recipe.token_embedding_type:
        return recipe.token_embedding_type
    if name == "output.weight" and recipe.output_type:
        return recipe.output_type
    if quantized_default:
        for pattern, type_name in recipe.overrides:
            if re.search(pattern, name):
                return type_name
    return None


def llama_fallbacks(log: str) -> list[Fallback]:
    """The fallbacks llama.cpp applied on its own, parsed from its quantize log."""
    return [Fallback(m["tensor"], m["wanted"].upper(), m["got"].upper(), int(m["ncols"]),
                     "llama.cpp") for m in _LLAMA_FALLBACK_LOG.finditer(log)]


def check_against_plan(plan: Plan, source: list[Tensor], built: list[Tensor]) -> list[str]:
    """Tensors whose built type differs from what the plan fixed (empty when all match).

    A tensor llama.cpp left exactly as in the source is not a mismatch: some architectures keep
    specific weights unquantized on purpose.
    """
    before = {t.name: t.type for t in source}
    return [f"{t.name}: recipe says {plan.fixed[t.name]}, file has {t.type}" for t in built
            if t.name in plan.fixed and t.type not in (plan.fixed[t.name], before.get(t.name))]


def histogram(tensors: list[Tensor]) -> tuple[dict[str, int], dict[str, int]]:
    """(tensor count, parameter count) per type."""
    counts, params = Counter[str](), Counter[str]()
    for tensor in tensors:
        counts[tensor.type] += 1
        params[tensor.type] += tensor.n_params
    return dict(sorted(counts.items())), dict(sorted(params.items()))


# --- building ---

def derived_dir() -> Path:
    return settings.models_dir() / "derived"


def sidecar_path(target: Path) -> Path:
    return target.with_name(target.name + ".build.json")


def cached_build(target: Path, key: str) -> BuildInfo | None:
    """The sidecar of a finished build with cache key `key`, if the file is still intact."""
    info = read_build_info(target)
    if info is None or info.key != key or not target.exists():
        return None
    return info if target.stat().st_size == info.size_bytes else None


def read_build_info(path: str | Path) -> BuildInfo | None:
    """The build sidecar next to a derived file (None for any other file)."""
    try:
        return rec.from_dict(BuildInfo, json.loads(sidecar_path(Path(path)).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def ensure_file(variant: Variant, catalog: Catalog, *, progress: Progress = lambda m: None,
                nthread: int = 0) -> LocalFile:
    """The verified local file of any variant: fetched, or built when it is derived."""
    if variant.source.kind != "derived":
        return fetch(variant, progress=progress)
    info = build_variant(variant, catalog, progress=progress, nthread=nthread)
    return LocalFile(Path(info.path), info.sha256, info.size_bytes)


def build_variant(variant: Variant, catalog: Catalog, *, progress: Progress = lambda m: None,
                  nthread: int = 0, force: bool = False, _seen: tuple[str, ...] = ()
                  ) -> BuildInfo:
    """Build (or find cached) the file of derived `variant`; its base is fetched or built."""
    if variant.name in _seen:
        raise ConfigError(f"derived variants form a loop: {' -> '.join(_seen + (variant.name,))}",
                          path=catalog.path, entry=variant.name, key="source.derived.base")
    recipe = load_recipes(catalog)[str(variant.source.recipe)]
    base = catalog.get(str(variant.source.base))
    if base.source.kind == "derived":
        built = build_variant(base, catalog, progress=progress, nthread=nthread,
                              _seen=_seen + (variant.name,))
        source = LocalFile(Path(built.path), built.sha256, built.size_bytes)
    else:
        source = fetch(base, progress=progress)
    target = derived_dir() / variant.filename
    cached = None if force else cached_build(target, f"{source.sha256}:{recipe.digest()}")
    if cached is not None:
        progress(f"{variant.name}: cached build at {target}")
        return cached
    info = _build(variant, recipe, base, source, target, progress, nthread)
    if variant.size_bytes is not None or variant.sha256 is not None:
        verify_file(target, size_bytes=variant.size_bytes, sha256=variant.sha256,
                    remove_on_mismatch=False)
    return info


def _build(variant: Variant, recipe: Recipe, base: Variant, source: LocalFile, target: Path,
           progress: Progress, nthread: int) -> BuildInfo:
    tensors = read_tensors(source.path)
    plan = plan_build(recipe, tensors)
    n_params = sum(t.n_params for t in tensors)
    ensure_free_space(target.parent, n_params * (4 if recipe.ftype == "F32" else 2))
    requantized = any(t.type not in FLOAT_TYPES for t in tensors if is_quantizable(t))
    progress(f"{variant.name}: building from {base.name} with recipe '{recipe.name}'"
             + (f" (requantizing {base.quant}: quality is capped by it)" if requantized else ""))
    part = target.with_name(target.name + ".part")
    start = time.monotonic()
    try:
        log = _run_quantizer(source.path, part, recipe, plan, nthread or hostinfo.physical_cores())
        built = read_tensors(part)
        wrong = check_against_plan(plan, tensors, built)
        if wrong:
            raise FetchError(f"{variant.name}: llama.cpp did not apply recipe '{recipe.name}': "
                             + "; ".join(wrong[:5]))
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    counts, params = histogram(built)
    size = target.stat().st_size
    info = BuildInfo(
        variant=variant.name, recipe=recipe.name, recipe_hash=recipe.digest(),
        recipe_spec=recipe.spec(), base=base.name, base_quant=base.quant,
        source_sha256=source.sha256, source_types=histogram(tensors)[0], requantized=requantized,
        path=str(target), sha256=sha256_file(target), size_bytes=size, n_params=n_params,
        bits_per_weight=size * 8 / n_params, type_counts=counts, type_params=params,
        fallbacks=plan.fallbacks + tuple(llama_fallbacks(log)),
        llama_cpp_python_version=_llama_version(), build_s=time.monotonic() - start,
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    sidecar_path(target).write_text(json.dumps(asdict(info), indent=1, sort_keys=True))
    progress(f"{variant.name}: {size / settings.GB:.3f} GB, {info.bits_per_weight:.2f} bits per "
             f"weight, {len(info.fallbacks)} fallback(s)")
    return info


def _llama_version() -> str:
    from importlib.metadata import version

    return version("llama-cpp-python")


def _run_quantizer(src: Path, dst: Path, recipe: Recipe, plan: Plan, nthread: int) -> str:
    """Run llama_model_quantize in a child process; return its log or raise FetchError."""
    ids = known_types()
    from edgeeval.backend import llama_ftype_ids

    spec = {"src": str(src), "dst": str(dst), "ftype": llama_ftype_ids()[recipe.ftype],
            "tensor_overrides": [[p, ids[t]] for p, t in plan.overrides],
            "output_tensor_type": ids.get(plan.output_type or ""),
            "token_embedding_type": ids.get(plan.token_embedding_type or ""),
            "pure": recipe.pure, "nthread": nthread}
    with tempfile.TemporaryDirectory(prefix="edgeeval-quantize-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        done = subprocess.run([sys.executable, "-m", "edgeeval.quantize", str(spec_path),
                               str(out_path)], capture_output=True, text=True)
        result = json.loads(out_path.read_text()) if out_path.exists() else None
    if done.returncode < 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise FetchError(f"{dst.name}: llama.cpp's quantizer died from "
                         f"{signal.Signals(-done.returncode).name}:\n{tail}")
    if result is None or result.get("error"):
        reason = result["error"] if result else done.stderr.strip()[-500:]
        raise FetchError(f"{dst.name}: llama.cpp could not quantize {src.name} with recipe "
                         f"'{recipe.name}': {reason}. Check the recipe in models.yaml.")
    return str(result["log"])


def _child(spec_path: str, out_path: str) -> int:
    """Child entry point: run the quantizer as the spec says; write {log} or {error}."""
    from edgeeval.backend import quantize_model

    spec = json.loads(Path(spec_path).read_text())
    try:
        log = quantize_model(spec["src"], spec["dst"], ftype=spec["ftype"],
                             tensor_overrides=[tuple(o) for o in spec["tensor_overrides"]],
                             output_tensor_type=spec["output_tensor_type"],
                             token_embedding_type=spec["token_embedding_type"],
                             pure=spec["pure"], nthread=spec["nthread"])
        result = {"log": log}
    except RuntimeError as exc:
        result = {"error": str(exc)}
    Path(out_path).write_text(json.dumps(result))
    return 0


# --- command line ---

def register(sub: Any) -> None:
    """Add `edgeeval quantize` to the CLI's subparsers."""
    p = sub.add_parser("quantize", help="build derived variants from their recipes (llama.cpp)")
    p.add_argument("models", nargs="*", help="derived variant or set names, e.g. quant-compare")
    p.add_argument("--list", action="store_true", help="list the catalog's recipes and exit")
    p.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    p.add_argument("--force", action="store_true", help="rebuild even when a cached build fits")
    p.set_defaults(func=_cmd_quantize)


def _cmd_quantize(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    recipes = load_recipes(catalog)
    if args.list:
        for r in recipes.values():
            print(f"{r.name:18} {json.dumps(r.spec(), sort_keys=True)}  {r.description}")
        return 0
    if not args.models:
        raise EdgeevalError("name derived variants or a set to build, e.g. `edgeeval quantize "
                            "quant-compare`; `edgeeval quantize --list` shows the recipes")
    targets = _derived_targets(catalog, args.models)
    print(f"{'variant':36} {'recipe':16} {'size MB':>8} {'bits/w':>6} {'fallbacks':>9}  types")
    for variant in targets:
        info = build_variant(variant, catalog, progress=_stderr, nthread=args.threads,
                             force=args.force)
        types = ", ".join(f"{t}:{n}" for t, n in info.type_counts.items())
        print(f"{variant.name:36} {info.recipe:16} {info.size_bytes / 1e6:8.1f} "
              f"{info.bits_per_weight:6.2f} {len(info.fallbacks):9d}  {types}")
    return 0


def _derived_targets(catalog: Catalog, names: list[str]) -> list[Variant]:
    for name in names:
        if name in catalog.variants and catalog.variants[name].source.kind != "derived":
            raise EdgeevalError(f"'{name}' is not a derived variant (its source is "
                                f"{catalog.variants[name].source.kind}); `edgeeval fetch {name}` "
                                "gets it")
    return [v for v in catalog.select(names) if v.source.kind == "derived"]


def _stderr(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(_child(*sys.argv[1:]))
