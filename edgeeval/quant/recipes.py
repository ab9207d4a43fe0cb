"""Recipes and per-tensor planning: which type each tensor of a derived variant gets.

A recipe (models.yaml `recipes:`) names a llama.cpp file type (`ftype`: the default tensor type
plus llama.cpp's own per-tensor mixture, e.g. Q4_K_M), an ordered list of per-tensor overrides
(regex -> type, searched in tensor names, first match wins), the output and token-embedding types
and a `pure` flag (no mixture: every other quantizable tensor gets the file type's default).
Types are whatever this llama.cpp knows (Q8_0, Q4_K, MXFP4, NVFP4, ...); there is no FP8 weight
type in this version, so Q8_0 is the 8-bit point.

FP8 is emulated (edgeeval.quant.fp8): `fp8-e4m3[:block=128x128|channel|tensor]` is accepted as
an `ftype` (every quantizable tensor but the token embedding and output, which stay as in the
16-bit source unless output_type / token_embedding_type name FP8 too) or as an override,
output or token-embedding type next to llama.cpp types. Those tensors are rounded to E4M3 and
stored as F16; in a mixed recipe llama.cpp then quantizes the rest with the FP8 tensors pinned
to F16 (see edgeeval.quant.build).

A tensor whose row length is not a multiple of its type's block size cannot hold that type.
For the types a recipe names, edgeeval picks the fallback before llama.cpp runs (llama.cpp's own
table, e.g. Q6_K -> Q8_0; NVFP4, which llama.cpp has no fallback for, -> Q5_0; F16 when nothing
fits); llama.cpp falls back for its mixture itself and its log is parsed. Both are reported.

No I/O here: edgeeval.quant.build reads the tensors, runs llama.cpp and caches the result.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeeval.catalog.models import Catalog
from edgeeval.errors import ConfigError, suggest
from edgeeval.quant.fp8 import FP8_PREFIX, is_fp8, parse_fp8

#: llama.cpp's default tensor type for each file type it can write (llama_ftype_get_default_type).
FTYPE_DEFAULT_TYPE = {
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "Q4_0": "Q4_0",
    "Q4_1": "Q4_1",
    "Q5_0": "Q5_0",
    "Q5_1": "Q5_1",
    "Q8_0": "Q8_0",
    "Q1_0": "Q1_0",
    "Q2_0": "Q2_0",
    "MXFP4_MOE": "MXFP4",
    "Q2_K": "Q2_K",
    "Q2_K_S": "Q2_K",
    "Q3_K_S": "Q3_K",
    "Q3_K_M": "Q3_K",
    "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K",
    "Q4_K_M": "Q4_K",
    "Q5_K_S": "Q5_K",
    "Q5_K_M": "Q5_K",
    "Q6_K": "Q6_K",
    "TQ1_0": "TQ1_0",
    "TQ2_0": "TQ2_0",
    "IQ2_XXS": "IQ2_XXS",
    "IQ2_XS": "IQ2_XS",
    "IQ2_S": "IQ2_XS",
    "IQ2_M": "IQ2_S",
    "IQ3_XS": "IQ3_S",
    "IQ3_XXS": "IQ3_XXS",
    "IQ1_S": "IQ1_S",
    "IQ1_M": "IQ1_M",
    "IQ4_NL": "IQ4_NL",
    "IQ4_XS": "IQ4_XS",
    "IQ3_S": "IQ3_S",
    "IQ3_M": "IQ3_S",
}
FLOAT_TYPES = ("F32", "F16", "BF16")
#: Types ggml cannot quantize weights to (activations, integers).
NOT_WEIGHT_TYPES = ("Q8_1", "Q8_K", "I8", "I16", "I32", "I64", "F64")
#: Types llama.cpp refuses to write without an importance matrix (recipes have none).
NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS")
#: llama.cpp's fallback when a row does not fit a type's block (tensor_type_fallback).
LLAMA_FALLBACK = {
    **dict.fromkeys(
        ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"), "IQ4_NL"
    ),
    **dict.fromkeys(("Q2_0", "Q2_K", "Q3_K", "TQ1_0", "TQ2_0"), "Q4_0"),
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
}
#: Ours, for block-64+ types llama.cpp has no fallback for: the next 32-block step up.
EDGEEVAL_FALLBACK = {"NVFP4": "Q5_0"}
TOKEN_EMBD = ("token_embd.weight", "per_layer_token_embd.weight")
_RECIPE_KEYS = ("ftype", "overrides", "output_type", "token_embedding_type", "pure", "description")
_NOT_QUANTIZED = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "altup",
    "laurel",
    "ssm_conv1d",
    "per_layer_model_proj",
    "position_embd",
    "token_types",
)
_LLAMA_FALLBACK_LOG = re.compile(
    r"warning: (?P<tensor>\S+)\s+- ncols\s+(?P<ncols>\d+) not divisible by\s+\d+ "
    r"\(required for type\s+(?P<wanted>\S+)\).*-> falling back to\s+(?P<got>\S+)"
)


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
        return {
            "ftype": self.ftype,
            "overrides": [list(o) for o in self.overrides],
            "output_type": self.output_type,
            "pure": self.pure,
            "token_embedding_type": self.token_embedding_type,
        }

    @property
    def fp8_only(self) -> bool:
        """True when the recipe's file type is FP8: no llama.cpp pass runs."""
        return is_fp8(self.ftype)

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
class Tensor:
    """One tensor of a GGUF file, as read from its header."""

    name: str
    shape: tuple[int, ...]  # GGUF order: shape[0] is the row length
    type: str
    n_params: int


@dataclass(frozen=True)
class Plan:
    """What llama.cpp is asked for, after edgeeval's fallbacks; `fixed` maps tensor -> type
    for every tensor whose type the recipe decides (the rest follow llama.cpp's mixture);
    `fp8` maps each tensor rounded to FP8 -> its fp8 type (stored, and fixed, as F16)."""

    overrides: tuple[tuple[str, str], ...]
    output_type: str | None
    token_embedding_type: str | None
    fixed: dict[str, str]
    fallbacks: tuple[Fallback, ...]
    fp8: dict[str, str] = dataclasses.field(default_factory=dict)


# --- recipes ---


@functools.lru_cache(maxsize=1)
def known_types() -> dict[str, int]:
    """Tensor type names -> ggml ids, from llama.cpp's own `gguf` package.

    Validating the catalog needs no native library: the ids are the GGUF file format's, which
    llama.cpp and gguf-py share. A type the installed llama.cpp is too old to build is refused
    when the quantizer runs, with llama.cpp's own message.
    """
    from gguf import GGMLQuantizationType

    return {t.name: int(t.value) for t in GGMLQuantizationType}


@functools.lru_cache(maxsize=1)
def known_ftypes() -> dict[str, int]:
    """File types llama_model_quantize takes -> ids, from gguf's LlamaFileType:
    {"Q4_K_M": 15, "F32": 0, ...}."""
    from gguf import LlamaFileType

    out = {"F32": int(LlamaFileType.ALL_F32)}
    for ftype in LlamaFileType:
        if ftype.name.startswith("MOSTLY_"):
            out[ftype.name[len("MOSTLY_") :]] = int(ftype.value)
    return out


@functools.lru_cache(maxsize=1)
def block_sizes() -> dict[str, int]:
    """Elements per block of each type the gguf package can read."""
    from gguf import GGML_QUANT_SIZES

    return {t.name: size[0] for t, size in GGML_QUANT_SIZES.items()}


def load_recipes(catalog: Catalog) -> dict[str, Recipe]:
    """The catalog's validated recipes; also checks every derived variant names one."""
    if not isinstance(catalog.recipes, dict):
        raise ConfigError(
            "must be a mapping of recipe name to recipe", path=catalog.path, key="recipes"
        )
    recipes = {
        str(n): parse_recipe(str(n), raw, path=catalog.path) for n, raw in catalog.recipes.items()
    }
    for variant in catalog.variants.values():
        name = variant.source.recipe
        if variant.source.kind == "derived" and name not in recipes:
            near = suggest(str(name), list(recipes))
            hint = f"did you mean '{near[0]}'?" if near else f"known: {', '.join(recipes)}"
            raise ConfigError(
                f"unknown recipe '{name}'; {hint}",
                path=catalog.path,
                entry=variant.name,
                key="source.derived.recipe",
            )
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
            raise fail(
                "unknown key"
                + (
                    f"; did you mean '{near[0]}'?"
                    if near
                    else f"; known keys: {', '.join(_RECIPE_KEYS)}"
                ),
                str(key),
            )
    if "ftype" not in raw:
        raise fail("missing required key (a llama.cpp file type such as Q8_0 or Q4_K_M)", "ftype")
    ftype = _check_ftype(raw["ftype"], fail)
    if not isinstance(raw.get("pure", False), bool):
        raise fail("must be true or false", "pure")
    overrides = _parse_overrides(raw, fail)
    types = {
        k: _check_type(raw[k], fail, k) if raw.get(k) is not None else None
        for k in ("output_type", "token_embedding_type")
    }
    if is_fp8(ftype):
        _check_fp8_only(overrides, types, fail)
    elif overrides and FTYPE_DEFAULT_TYPE[ftype] in FLOAT_TYPES:
        raise fail(
            f"llama.cpp applies overrides only when the file type is quantized, not "
            f"{ftype}; use ftype: Q8_0 with pure: true",
            "overrides",
        )
    return Recipe(
        name=name,
        ftype=ftype,
        overrides=overrides,
        pure=raw.get("pure", False),
        description=str(raw.get("description") or ""),
        **types,
    )


def _check_fp8_only(
    overrides: tuple[tuple[str, str], ...],
    types: dict[str, str | None],
    fail: Callable[[str, str], ConfigError],
) -> None:
    """With an FP8 file type no llama.cpp pass runs: every other type named must be FP8 too."""
    named = [(f"overrides[{i}]", t) for i, (_, t) in enumerate(overrides)]
    for key, type_name in named + [(k, t) for k, t in types.items() if t]:
        if not is_fp8(type_name):
            raise fail(
                f"{type_name} with ftype {FP8_PREFIX}: an FP8 file type takes only FP8 "
                f"overrides; to mix FP8 with llama.cpp types use ftype: Q8_0, pure: true and "
                f"overrides that map tensors to {FP8_PREFIX} and to {type_name}",
                key,
            )


def _check_fp8(value: Any, fail: Callable[[str, str], ConfigError], key: str) -> str:
    try:
        return parse_fp8(str(value))
    except ValueError as exc:
        raise fail(str(exc), key) from None


def _check_ftype(value: Any, fail: Callable[[str, str], ConfigError]) -> str:
    if is_fp8(str(value)):
        return _check_fp8(value, fail, "ftype")
    name = str(value).upper()
    known = known_ftypes()
    if name not in known:
        near = suggest(name, list(known))
        raise fail(
            f"unknown file type '{value}'"
            + (
                f"; did you mean '{near[0]}'?" if near else f"; llama.cpp knows: {', '.join(known)}"
            ),
            "ftype",
        )
    if name not in FTYPE_DEFAULT_TYPE:
        raise fail(
            f"llama.cpp knows file type {name} but its quantizer cannot write it as a "
            f"whole-file type in this version; use ftype: Q8_0, pure: true and "
            f"overrides that map tensors to {name}",
            "ftype",
        )
    _check_type(FTYPE_DEFAULT_TYPE[name], fail, "ftype")
    return name


def _check_type(value: Any, fail: Callable[[str, str], ConfigError], key: str) -> str:
    if is_fp8(str(value)):
        return _check_fp8(value, fail, key)
    name = str(value).upper()
    if name not in known_types():
        near = suggest(name, list(known_types()))
        raise fail(
            f"unknown tensor type '{value}'"
            + (f"; did you mean '{near[0]}'?" if near else "")
            + f" (llama.cpp knows: {', '.join(known_types())})",
            key,
        )
    if name in NOT_WEIGHT_TYPES:
        raise fail(f"{name} is not a weight type llama.cpp can quantize to", key)
    if name in NEEDS_IMATRIX:
        raise fail(f"{name} needs an importance matrix, which recipes do not support yet", key)
    if name not in block_sizes():
        raise fail(
            f"the installed gguf package cannot read {name} tensors, so edgeeval could "
            f"not check the built file; upgrade gguf (pip install -U gguf)",
            key,
        )
    return name


def _parse_overrides(
    raw: dict, fail: Callable[[str, str], ConfigError]
) -> tuple[tuple[str, str], ...]:
    if "overrides" not in raw:
        return ()
    items = raw["overrides"]
    if not isinstance(items, list) or not items:
        raise fail(
            "must be a non-empty list of {regex: type} mappings (or leave the key out)", "overrides"
        )
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
            raise fail(
                f"'{pattern}' uses Python-only regex syntax; llama.cpp uses ECMAScript "
                "(std::regex)",
                key,
            )
        out.append((str(pattern), _check_type(type_name, fail, key)))
    return tuple(out)


# --- planning ---


def is_quantizable(tensor: Tensor) -> bool:
    """llama.cpp's generic rule: weights of 2+ dimensions, except norms, routers and tiny ones."""
    return (
        any(d > 1 for d in tensor.shape[1:])
        and tensor.name.endswith("weight")
        and not any(part in tensor.name for part in _NOT_QUANTIZED)
    )


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
    quantized_default = recipe.fp8_only or FTYPE_DEFAULT_TYPE[recipe.ftype] not in FLOAT_TYPES
    pinned: list[tuple[str, str]] = []
    fixed: dict[str, str] = {}
    fp8: dict[str, str] = {}
    fallbacks = []
    special = {"output": recipe.output_type, "token": recipe.token_embedding_type}
    for tensor in filter(is_quantizable, tensors):
        wanted = _recipe_type(recipe, tensor.name, quantized_default)
        if wanted is None:
            continue
        if is_fp8(wanted):  # any row length: edge blocks are partial; llama.cpp keeps it F16
            fp8[tensor.name] = wanted
            pinned.append((f"^{re.escape(tensor.name)}$", "F16"))
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
    fixed.update(dict.fromkeys(fp8, "F16"))
    return Plan(
        overrides=tuple(pinned) + tuple(o for o in recipe.overrides if not is_fp8(o[1])),
        output_type=None if is_fp8(special["output"]) else special["output"],
        token_embedding_type=None if is_fp8(special["token"]) else special["token"],
        fixed=fixed,
        fallbacks=tuple(fallbacks),
        fp8=fp8,
    )


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
    if recipe.fp8_only and name not in TOKEN_EMBD and name != "output.weight":
        return recipe.ftype
    return None


def llama_fallbacks(log: str) -> list[Fallback]:
    """The fallbacks llama.cpp applied on its own, parsed from its quantize log."""
    return [
        Fallback(m["tensor"], m["wanted"].upper(), m["got"].upper(), int(m["ncols"]), "llama.cpp")
        for m in _LLAMA_FALLBACK_LOG.finditer(log)
    ]


def check_against_plan(plan: Plan, source: list[Tensor], built: list[Tensor]) -> list[str]:
    """Tensors whose built type differs from what the plan fixed (empty when all match).

    A tensor llama.cpp left exactly as in the source is not a mismatch: some architectures keep
    specific weights unquantized on purpose.
    """
    before = {t.name: t.type for t in source}
    return [
        f"{t.name}: recipe says {plan.fixed[t.name]}, file has {t.type}"
        for t in built
        if t.name in plan.fixed and t.type not in (plan.fixed[t.name], before.get(t.name))
    ]
