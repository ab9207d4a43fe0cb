"""Build derived variants: a source GGUF re-typed by a recipe through llama.cpp's quantizer.

What a recipe is, and which type each tensor gets (overrides, fallbacks), is
edgeeval.quant.recipes; this module reads the tensors, runs llama.cpp, checks the result
against the plan and caches it.

The quantizer runs in a child process (`python -m edgeeval.quant.build SPEC OUT`), so a native
abort is a reported failure. The result goes to `<models>/derived/<variant>.gguf` with a JSON
sidecar; a build with the same source sha256 and recipe hash is a cache hit.

FP8 (emulated, edgeeval.quant.fp8) runs first, in this process: the tensors the plan rounds to
FP8 are written as F16 into `<target>.fp8.part`, every other tensor copied. A recipe with only
FP8 types ends there; a mixed one then runs llama.cpp's quantizer on that file with each FP8
tensor pinned to F16 (so it is copied, not requantized) and the other types as planned. The
sidecar records `emulated` and `storage_bytes`, the size FP8 storage would have.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeeval import contracts as ct
from edgeeval import records as rec
from edgeeval import settings
from edgeeval.catalog.models import Catalog, Variant
from edgeeval.engine import host as hostinfo
from edgeeval.errors import ConfigError, EdgeevalError, FetchError
from edgeeval.fetch.files import ensure_free_space, sha256_file
from edgeeval.fetch.sources import LocalFile, fetch, verify_file
from edgeeval.gguf.check import check_gguf
from edgeeval.quant import fp8 as fp8mod
from edgeeval.quant.recipes import (
    FLOAT_TYPES,
    Fallback,
    Plan,
    Recipe,
    Tensor,
    check_against_plan,
    is_quantizable,
    known_types,
    llama_fallbacks,
    load_recipes,
    plan_build,
)
from edgeeval.quant.recipes import (
    _recipe_type as _recipe_type,
)  # re-exported: tests use them here
from edgeeval.quant.recipes import fit_type as fit_type
from edgeeval.quant.recipes import parse_recipe as parse_recipe
from edgeeval.text import Progress

#: How often the launcher looks at the quantizer child (it measures no memory here).
QUANTIZE_POLL_S = 0.2


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
    #: "" for a real build; for FP8 emulation, what was emulated ("FP8 E4M3 (block=128x128) in
    #: 14 tensors, stored as F16"): speed and memory of the file are not FP8's
    emulated: str = ""
    #: bytes the file would take with its FP8 tensors stored as 8 bits per weight plus a
    #: float32 per scale (the rest as built); None when nothing is emulated
    storage_bytes: int | None = None

    @property
    def key(self) -> str:
        """Cache key: source sha256 + recipe hash."""
        return f"{self.source_sha256}:{self.recipe_hash}"


# --- reading tensors ---


def read_tensors(path: str | Path) -> list[Tensor]:
    """Every tensor of a GGUF file (from the bounded header walk): name, shape, type, size."""
    from gguf import GGMLQuantizationType

    return [
        Tensor(t.name, t.shape, GGMLQuantizationType(t.type_id).name, math.prod(t.shape))
        for t in check_gguf(path).tensors
    ]


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


def ensure_file(
    variant: Variant, catalog: Catalog, *, progress: Progress = lambda m: None, nthread: int = 0
) -> LocalFile:
    """The verified local file of any variant: fetched, or built when it is derived."""
    if variant.source.kind != "derived":
        return fetch(variant, progress=progress)
    info = build_variant(variant, catalog, progress=progress, nthread=nthread)
    return LocalFile(
        Path(info.path),
        info.sha256,
        info.size_bytes,
        emulated=info.emulated,
        storage_bytes=info.storage_bytes,
    )


def build_variant(
    variant: Variant,
    catalog: Catalog,
    *,
    progress: Progress = lambda m: None,
    nthread: int = 0,
    force: bool = False,
    _seen: tuple[str, ...] = (),
) -> BuildInfo:
    """Build (or find cached) the file of derived `variant`; its base is fetched or built."""
    if variant.name in _seen:
        raise ConfigError(
            f"derived variants form a loop: {' -> '.join(_seen + (variant.name,))}",
            path=catalog.path,
            entry=variant.name,
            key="source.derived.base",
        )
    recipe = load_recipes(catalog)[str(variant.source.recipe)]
    base = _base_of(variant, catalog, progress)
    if base.source.kind == "derived":
        built = build_variant(
            base, catalog, progress=progress, nthread=nthread, _seen=_seen + (variant.name,)
        )
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
        verify_file(
            target, size_bytes=variant.size_bytes, sha256=variant.sha256, remove_on_mismatch=False
        )
    return info


def _base_of(variant: Variant, catalog: Catalog, progress: Progress) -> Variant:
    """A derived variant's base: a catalog variant, or a model spec (a path, hf:, ollama:...)."""
    from edgeeval.fetch.specs import resolve_one

    return resolve_one(catalog, str(variant.source.base), progress=progress)


def _build(
    variant: Variant,
    recipe: Recipe,
    base: Variant,
    source: LocalFile,
    target: Path,
    progress: Progress,
    nthread: int,
) -> BuildInfo:
    tensors = read_tensors(source.path)
    plan = plan_build(recipe, tensors)
    n_params = sum(t.n_params for t in tensors)
    _check_fp8_source(variant, recipe, base, plan, tensors)
    copies = 2 if plan.fp8 and not recipe.fp8_only else 1  # the FP8 pass, then llama.cpp's
    ensure_free_space(target.parent, copies * n_params * (4 if recipe.ftype == "F32" else 2))
    requantized = any(t.type not in FLOAT_TYPES for t in tensors if is_quantizable(t))
    progress(
        f"{variant.name}: building from {base.name} with recipe '{recipe.name}'"
        + (f" (requantizing {base.quant}: quality is capped by it)" if requantized else "")
    )
    start = time.monotonic()
    log, built = _quantize_checked(
        variant,
        recipe,
        plan,
        tensors,
        source.path,
        target,
        rec.resolve_threads(nthread, hostinfo.physical_cores()),
    )
    built_from = _Built(
        tensors, built, plan.fallbacks + tuple(llama_fallbacks(log)), requantized, plan
    )
    info = _build_info(variant, recipe, base, source, target, built_from, start)
    sidecar_path(target).write_text(json.dumps(asdict(info), indent=1, sort_keys=True))
    progress(
        f"{variant.name}: {info.size_bytes / settings.GB:.3f} GB, {info.bits_per_weight:.2f} "
        f"bits per weight, {len(info.fallbacks)} fallback(s)"
        + (
            f"; emulated: {info.emulated}; FP8 storage would take "
            f"{(info.storage_bytes or 0) / settings.GB:.3f} GB"
            if info.emulated
            else ""
        )
    )
    return info


@dataclass(frozen=True)
class _Built:
    """What one quantizer run read and made: the source's tensors, the built file's, the
    fallbacks (planned and llama.cpp's own), and whether a quantized source was requantized."""

    source: list[Tensor]
    built: list[Tensor]
    fallbacks: tuple[Fallback, ...]
    requantized: bool
    plan: Plan


def _check_fp8_source(
    variant: Variant, recipe: Recipe, base: Variant, plan: Plan, tensors: list[Tensor]
) -> None:
    """FP8 rounding needs the 16-bit values: refuse a quantized source, naming its type."""
    types = {t.name: t.type for t in tensors}
    bad = [(n, types[n]) for n in plan.fp8 if types[n] not in fp8mod.SOURCE_TYPES]
    if bad:
        name, type_name = bad[0]
        raise EdgeevalError(
            f"{variant.name}: recipe '{recipe.name}' rounds {len(bad)} tensor(s) to FP8 E4M3, "
            f"which needs a 16-bit source (F16, BF16 or F32), but base '{base.name}' stores "
            f"{name} as {type_name}. Derive it from a BF16/F16 GGUF (llama.cpp's "
            "convert_hf_to_gguf.py --outtype bf16 writes one)."
        )


def _emulation(plan: Plan, built: list[Tensor], size: int) -> tuple[str, int | None]:
    """(what was emulated, the storage size FP8 would have) of a built file."""
    if not plan.fp8:
        return "", None
    shapes = {t.name: tuple(reversed(t.shape)) for t in built}
    saved = sum(
        2 * math.prod(shapes[n]) - fp8mod.storage_bytes(shapes[n], fp8mod.scaling_of(k))
        for n, k in plan.fp8.items()
    )
    kinds = sorted({k.split(":", 1)[1] for k in plan.fp8.values()})
    what = f"FP8 E4M3 ({', '.join(kinds)}) in {len(plan.fp8)} tensors, stored as F16"
    return what, size - saved


def _build_info(
    variant: Variant,
    recipe: Recipe,
    base: Variant,
    source: LocalFile,
    target: Path,
    made: _Built,
    start: float,
) -> BuildInfo:
    """The BuildInfo of a finished build (its sidecar); `start` is when quantizing began."""
    counts, params = histogram(made.built)
    size = target.stat().st_size
    n_params = sum(t.n_params for t in made.source)
    emulated, storage = _emulation(made.plan, made.built, size)
    return BuildInfo(
        variant=variant.name,
        recipe=recipe.name,
        recipe_hash=recipe.digest(),
        recipe_spec=recipe.spec(),
        base=base.name,
        base_quant=base.quant,
        source_sha256=source.sha256,
        source_types=histogram(made.source)[0],
        requantized=made.requantized,
        path=str(target),
        sha256=sha256_file(target),
        size_bytes=size,
        n_params=n_params,
        bits_per_weight=size * 8 / n_params,
        type_counts=counts,
        type_params=params,
        fallbacks=made.fallbacks,
        llama_cpp_python_version=_llama_version(),
        build_s=time.monotonic() - start,
        built_at=time.strftime(settings.ISO_TIME),
        emulated=emulated,
        storage_bytes=storage,
    )


def _quantize_checked(
    variant: Variant,
    recipe: Recipe,
    plan: Plan,
    tensors: list[Tensor],
    src: Path,
    target: Path,
    nthread: int,
) -> tuple[str, list[Tensor]]:
    """Quantize into `<target>.part`, check it against the plan, then move it to `target`;
    (llama.cpp's log, the built tensors). The part file never survives a failure."""
    part = target.with_name(target.name + ".part")
    rounded = target.with_name(target.name + ".fp8.part")
    try:
        log = ""
        if plan.fp8:  # FP8 first, in this process; llama.cpp then reads its output
            try:
                fp8mod.write_fp8_gguf(src, part if recipe.fp8_only else rounded, plan.fp8)
            except ValueError as exc:
                raise FetchError(f"{variant.name}: FP8 rounding failed: {exc}") from None
            src = rounded
        if not recipe.fp8_only:
            log = _run_quantizer(src, part, recipe, plan, nthread)
        built = read_tensors(part)
        wrong = check_against_plan(plan, tensors, built)
        if wrong:
            raise FetchError(
                f"{variant.name}: llama.cpp did not apply recipe '{recipe.name}': "
                + "; ".join(wrong[:5])
            )
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
        rounded.unlink(missing_ok=True)
    return log, built


def _llama_version() -> str:
    from importlib.metadata import version

    return version("llama-cpp-python")


def _run_quantizer(src: Path, dst: Path, recipe: Recipe, plan: Plan, nthread: int) -> str:
    """Run llama_model_quantize in a child process; return its log or raise FetchError."""
    ids = known_types()
    from edgeeval.engine.backend import llama_ftype_ids

    spec = ct.QuantizeSpec(
        src=str(src),
        dst=str(dst),
        ftype=llama_ftype_ids()[recipe.ftype],
        tensor_overrides=tuple((p, ids[t]) for p, t in plan.overrides),
        output_tensor_type=ids.get(plan.output_type or ""),
        token_embedding_type=ids.get(plan.token_embedding_type or ""),
        pure=recipe.pure,
        nthread=nthread,
    )
    from edgeeval.engine.process import owned_tempdir, run_child

    # through the one launcher: the child dies with this process (PDEATHSIG), and its scratch
    # directory is owned, so a killed build leaves nothing a later bench does not sweep
    with owned_tempdir() as tmp:
        spec_path, out_path = tmp / "spec.json", tmp / "out.json"
        ct.write_contract(spec_path, spec)
        done = run_child(
            [sys.executable, "-m", "edgeeval.quant.build", str(spec_path), str(out_path)],
            timeout_s=math.inf,  # a build ends when llama.cpp does; Ctrl-C still stops it
            interval_s=QUANTIZE_POLL_S,
        )
        result = ct.read_contract(ct.QuantizeResult, out_path) if out_path.exists() else None
    if done.signal is not None:
        tail = "\n".join(done.stderr_tail.strip().splitlines()[-5:])
        raise FetchError(
            f"{dst.name}: llama.cpp's quantizer died from "
            f"{signal.Signals(done.signal).name}:\n{tail}"
        )
    if result is None or result.error:
        reason = result.error if result else done.stderr_tail.strip()[-500:]
        raise FetchError(
            f"{dst.name}: llama.cpp could not quantize {src.name} with recipe "
            f"'{recipe.name}': {reason}. Check the recipe in models.yaml."
        )
    return result.log


def _child(spec_path: str, out_path: str) -> int:
    """Child entry point: run the quantizer as the QuantizeSpec says; write a QuantizeResult
    with llama.cpp's log or its error."""
    from edgeeval.engine.backend import quantize_model
    from edgeeval.orphans import die_with_parent

    die_with_parent()
    spec = ct.read_contract(ct.QuantizeSpec, spec_path)
    try:
        log = quantize_model(
            spec.src,
            spec.dst,
            ftype=spec.ftype,
            tensor_overrides=list(spec.tensor_overrides),
            output_tensor_type=spec.output_tensor_type,
            token_embedding_type=spec.token_embedding_type,
            pure=spec.pure,
            nthread=spec.nthread,
        )
        result = ct.QuantizeResult(log=log)
    except RuntimeError as exc:
        result = ct.QuantizeResult(error=str(exc))
    ct.write_contract(out_path, result)
    return 0


# --- command line ---


def derived_targets(catalog: Catalog, names: list[str]) -> list[Variant]:
    """The derived variants among `names` (variants or sets); a downloaded one named
    explicitly is an error that says how to get it instead."""
    for name in names:
        if name in catalog.variants and catalog.variants[name].source.kind != "derived":
            raise EdgeevalError(
                f"'{name}' is not a derived variant (its source is "
                f"{catalog.variants[name].source.kind}); `edgeeval fetch {name}` "
                "gets it"
            )
    return [v for v in catalog.select(names) if v.source.kind == "derived"]


if __name__ == "__main__":
    raise SystemExit(_child(*sys.argv[1:]))
