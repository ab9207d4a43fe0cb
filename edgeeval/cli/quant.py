"""`edgeeval quantize | fidelity`: derived variants built by recipes, and their quant fidelity."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from edgeeval import settings
from edgeeval.cli.bench import gpu_layers_default
from edgeeval.cli.console import progress
from edgeeval.cli.models import SPEC_HELP, load_selection
from edgeeval.errors import EdgeevalError
from edgeeval.fidelity import MAX_CHUNKS, N_CTX


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `quantize` and `fidelity`."""
    p = sub.add_parser("quantize", help="build derived variants from their recipes (llama.cpp)")
    p.add_argument("models", nargs="*", help="derived variant or set names, e.g. quant-compare")
    p.add_argument("--list", action="store_true", help="list the catalog's recipes and exit")
    p.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    p.add_argument("--force", action="store_true", help="rebuild even when a cached build fits")
    p.set_defaults(func=cmd_quantize)
    p = sub.add_parser("fidelity", help="KLD / PPL of variants against a reference variant")
    p.add_argument("models", nargs="+", help=SPEC_HELP + " (e.g. quant-compare)")
    p.add_argument(
        "--ref", help="reference variant or model spec (default: the F32/BF16/F16 one named)"
    )
    p.add_argument(
        "--corpus",
        default="pydoc",
        help="pydoc (offline, the default), domains[:code,chat,...] (offline: samples rendered "
        "through the model's chat template, KLD per domain), wikitext-2, or a file",
    )
    p.add_argument("--n-ctx", type=int, default=N_CTX, help=f"tokens per chunk (default {N_CTX})")
    p.add_argument(
        "--chunks",
        type=int,
        default=MAX_CHUNKS,
        help=f"at most this many chunks (default {MAX_CHUNKS}; 0 = the whole corpus)",
    )
    p.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    p.add_argument(
        "--n-gpu-layers", type=int, help="default: all when the build can offload, else 0"
    )
    p.add_argument("--run", help="add the results to this run (id or 'latest'; default: new)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per model pass")
    _knob_options(p)
    p.set_defaults(func=cmd_fidelity)


def _knob_options(parser: argparse.ArgumentParser) -> None:
    """The context knobs the variants are measured at, named and swept as `bench` does (each
    point its own result; the reference always runs with an F16 KV cache, -fa off)."""
    from edgeeval.cli.bench import _cache_type_list, _flash_list, _swa_list

    p = parser.add_argument_group(
        "context knobs of the variants", "each point its own result; the reference: F16 KV, -fa off"
    )
    p.add_argument(
        "--flash-attn", "-fa", type=_flash_list, help="on, off (default) or auto, or a list: off,on"
    )
    for flag, short, part in (("--cache-type-k", "-ctk", "K"), ("--cache-type-v", "-ctv", "V")):
        p.add_argument(
            flag, short, type=_cache_type_list, help=f"KV cache type for {part}, or a list"
        )
    p.add_argument(
        "--cache-type",
        "-ctkv",
        dest="cache_type_kv",
        type=_cache_type_list,
        help="KV cache type for K and V together, or a list of K=V points: f16,q8_0,q4_0 "
        "(quantized, it needs --flash-attn on/auto)",
    )
    p.add_argument(
        "--swa-cache", type=_swa_list, metavar="full,windowed", help="sliding-window cache(s)"
    )


def knob_settings(args: argparse.Namespace, n_gpu_layers: int) -> list[Any]:
    """The knob points of `edgeeval fidelity`'s options (run.speed.knob_points), refused as
    `bench` refuses them before anything loads: an unknown type, a quantized V cache without
    flash attention, -fa on where this build's devices cannot run it."""
    from edgeeval.engine.backend import flash_attn_support
    from edgeeval.engine.doctor import check_flash_attn
    from edgeeval.records import RunSettings
    from edgeeval.run.speed import knob_points

    values: dict[str, Any] = {"n_gpu_layers": n_gpu_layers}
    lists = (
        ("flash_attn", args.flash_attn),
        ("cache_type_k", args.cache_type_k),
        ("cache_type_v", args.cache_type_v),
        ("swa_full", args.swa_cache),
    )
    for field, given in lists:
        if given is not None:
            values[field] = given[0]
            values["sweep_" + field] = given if len(given) > 1 else ()
    if args.cache_type_kv is not None:
        kv = args.cache_type_kv
        values.update(cache_type_k=kv[0], cache_type_v=kv[0])
        values["sweep_cache_type_kv"] = kv if len(kv) > 1 else ()
    settings = RunSettings(**values)  # ConfigError for the combinations llama.cpp refuses
    check_flash_attn(settings, flash_attn_support)
    return knob_points(settings)


def cmd_quantize(args: argparse.Namespace) -> int:
    """`edgeeval quantize NAMES | --list`: build (or list) derived variants."""
    from edgeeval.catalog.stack import load_catalogs
    from edgeeval.quant.build import build_variant, derived_targets
    from edgeeval.quant.recipes import load_recipes

    catalog = load_catalogs(args.catalog)
    recipes = load_recipes(catalog)
    if args.list:
        for r in recipes.values():
            print(f"{r.name:18} {json.dumps(r.spec(), sort_keys=True)}  {r.description}")
        return 0
    if not args.models:
        raise EdgeevalError(
            "name derived variants or a set to build, e.g. `edgeeval quantize "
            "quant-compare`; `edgeeval quantize --list` shows the recipes"
        )
    print(f"{'variant':36} {'recipe':16} {'size MB':>8} {'bits/w':>6} {'fallbacks':>9}  types")
    for variant in derived_targets(catalog, args.models):
        info = build_variant(
            variant, catalog, progress=progress, nthread=args.threads, force=args.force
        )
        types = ", ".join(f"{t}:{n}" for t, n in info.type_counts.items())
        print(
            f"{variant.name:36} {info.recipe:16} {info.size_bytes / settings.MB:8.1f} "
            f"{info.bits_per_weight:6.2f} {len(info.fallbacks):9d}  {types}"
        )
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    """`edgeeval fidelity NAMES [--ref R]`: KLD and PPL ratio of each variant against R."""
    from edgeeval import records as rec
    from edgeeval.fetch.specs import resolve_one
    from edgeeval.fidelity.orchestrate import load_corpus, pick_reference, run_fidelity
    from edgeeval.report.fidelity import fidelity_markdown
    from edgeeval.store import runs as store

    catalog, named = load_selection(args, args.models)
    ref = args.ref
    if ref is not None:  # a spec becomes a variant of the catalog, found by name
        ref_variant = resolve_one(catalog, ref, progress=progress)
        catalog, ref = catalog.with_variants([ref_variant]), ref_variant.name
    reference = pick_reference(named, ref, catalog)
    variants = [v for v in named if v.name != reference.name] or [reference]
    for variant in variants:
        if variant.model != reference.model:
            raise EdgeevalError(
                f"{variant.name} is {variant.model}, the reference "
                f"{reference.name} is {reference.model}: compare variants of "
                "one model (pass --ref)"
            )
    gpu_layers = gpu_layers_default() if args.n_gpu_layers is None else args.n_gpu_layers
    points = knob_settings(args, gpu_layers)
    run_id = store.resolve_run(args.run) if args.run else store.new_run_id()
    if not (store.run_dir(run_id) / "run.json").exists():
        store.write_manifest(
            run_id,
            {
                "run_id": run_id,
                "kind": "fidelity",
                "reference": reference.name,
                "variants": [v.name for v in variants],
            },
        )
    results = run_fidelity(
        reference,
        variants,
        catalog,
        corpus=load_corpus(args.corpus),
        run_id=run_id,
        n_ctx=args.n_ctx,
        max_chunks=args.chunks,
        n_threads=args.threads,
        n_gpu_layers=gpu_layers,
        timeout_s=args.timeout,
        progress=progress,
        points=points,
    )
    named_results = [replace(r, variant=r.point_name) for r in results]
    print(fidelity_markdown(named_results))
    print(f"run {run_id}: {store.run_dir(run_id) / 'fidelity.jsonl'}")
    return 0 if all(r.status == rec.STATUS_OK for r in results) else 3
