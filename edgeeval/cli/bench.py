"""`edgeeval models | fetch | bench`: the catalog, verified files, and the measuring run."""

from __future__ import annotations

import argparse
import dataclasses
import time

from edgeeval import settings
from edgeeval.cli.console import progress
from edgeeval.cli.options import int_list, positive_gb
from edgeeval.text import safe_text


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `models`, `fetch` and `bench`."""
    sub.add_parser("models", help="list the catalog and what is downloaded").set_defaults(
        func=cmd_models
    )
    p = sub.add_parser("fetch", help="download and verify model files")
    p.add_argument("models", nargs="*", help="variant or set names (default: the default set)")
    p.set_defaults(func=cmd_fetch)
    p = sub.add_parser("bench", help="measure variants and write a ranked report")
    p.add_argument("--models", nargs="*", help="variant or set names (default: the default set)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN, redoing only what is missing")
    p.add_argument("--force", action="store_true", help="skip the memory pre-flight check")
    p.add_argument(
        "--budget-gb",
        type=positive_gb,
        metavar="GB",
        help="rank only variants whose peak memory fits in GB (10^9 bytes)",
    )
    p.add_argument("--profile", help="named settings from benchmarks/profiles/speed.yaml")
    p.add_argument("--n-ctx", type=int, help="context size (default 2048)")
    p.add_argument(
        "--threads",
        type=int_list,
        help="threads, or a list to sweep: 1,2,4 (default: physical cores)",
    )
    p.add_argument("--n-batch", type=int_list, help="batch size(s) (default 512)")
    p.add_argument(
        "--n-gpu-layers",
        type=int_list,
        help="layers offloaded to Metal/CUDA (99 = all), or a list to sweep",
    )
    p.add_argument("--flash-attn", type=int_list, help="0, 1 or 0,1 to sweep")
    p.add_argument("--depth", type=int_list, help="KV cache depth(s) for the speed tests")
    p.add_argument("--pp-tg", action="store_true", help="also run the combined pp N + tg M test")
    p.add_argument("--no-ttft", action="store_true", help="skip the time-to-first-token test")
    p.add_argument("--no-mmap", action="store_true")
    p.add_argument("--mlock", action="store_true")
    p.add_argument("--pp", type=int, help="prompt tokens per pp test (default 128)")
    p.add_argument("--tg", type=int, help="generated tokens per tg test (default 32)")
    p.add_argument("--reps", type=int, help="timed repetitions per test (default 5)")
    p.add_argument("--suite", help="task suite in benchmarks/suites.yaml (default offline)")
    p.add_argument("--limit", type=int, help="items per task (default: all)")
    p.add_argument("--seed", type=int)
    p.add_argument("--timeout", type=float, help="seconds per model (default 900)")
    p.add_argument(
        "--eval-batch",
        type=int,
        metavar="B",
        help="questions decoded together in the accuracy phase (default: measured per "
        "backend, 8 on CPU; 1 = one at a time); speed tests always use one sequence",
    )
    p.add_argument(
        "--allow-code-exec",
        action="store_true",
        help="run model-generated code for code tasks (HumanEval), each program in "
        "an OS sandbox (bubblewrap on Linux, sandbox-exec on macOS); without it those tasks "
        "are skipped",
    )
    p.add_argument(
        "--unsafe-code-exec",
        action="store_true",
        help="like --allow-code-exec but without an OS sandbox (only rlimits and an audit "
        "hook, not a security boundary); the task score records it",
    )
    p.set_defaults(func=cmd_bench)


def cmd_models(args: argparse.Namespace) -> int:
    from edgeeval.catalog.models import load_catalog
    from edgeeval.fetch.quantize import derived_dir, read_build_info
    from edgeeval.fetch.sources import is_cached

    catalog = load_catalog(args.catalog)
    print(f"{'name':44} {'family':9} {'quant':7} {'kind':8} {'size GB':>8}  {'source':7} local")
    for v in catalog.variants.values():
        size_bytes, mark = v.size_bytes, "yes" if is_cached(v) else "-"
        if v.source.kind == "derived":  # built, not downloaded: its size is known once built
            info = read_build_info(derived_dir() / v.filename)
            size_bytes, mark = (info.size_bytes, "built") if info else (None, "-")
        size = f"{size_bytes / settings.GB:.3f}" if size_bytes else "?"
        name, quant = safe_text(v.name, 60), safe_text(v.quant, 20)  # strings from the file
        print(f"{name:44} {v.family:9} {quant:7} {v.kind:8} {size:>8}  {v.source.kind:7} {mark}")
    print("\nsets: " + "; ".join(f"{safe_text(k, 40)} ({len(m)})" for k, m in catalog.sets.items()))
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from edgeeval.catalog.models import load_catalog
    from edgeeval.fetch.sources import fetch

    catalog = load_catalog(args.catalog)
    for variant in catalog.select(args.models):
        file = fetch(variant, progress=progress)
        print(f"{safe_text(variant.name)}\t{safe_text(file.path, 4096)}\t{file.sha256}")
    return 0


# CLI option -> RunSettings field; a list value becomes a sweep when it has several entries.
_SCALAR_OPTIONS = {
    "n_ctx": "n_ctx",
    "pp": "pp_tokens",
    "tg": "tg_tokens",
    "reps": "repetitions",
    "suite": "suite",
    "limit": "task_limit",
    "seed": "seed",
    "timeout": "timeout_s",
    "eval_batch": "eval_batch",
}
_SWEEP_OPTIONS = {
    "threads": ("n_threads", "sweep_threads"),
    "n_gpu_layers": ("n_gpu_layers", "sweep_n_gpu_layers"),
    "n_batch": ("n_batch", "sweep_n_batch"),
    "flash_attn": ("flash_attn", "sweep_flash_attn"),
}


def run_settings_from_args(args: argparse.Namespace):
    """RunSettings from a --profile (if any) overridden by the options given explicitly."""
    from edgeeval.catalog.profiles import load_profile
    from edgeeval.records import RunSettings

    values = load_profile(args.profile) if args.profile else {}
    for option, field in _SCALAR_OPTIONS.items():
        if getattr(args, option) is not None:
            values[field] = getattr(args, option)
    for option, (field, sweep_field) in _SWEEP_OPTIONS.items():
        given = getattr(args, option)
        if given is not None:
            cast = bool if option == "flash_attn" else int
            values[field] = cast(given[0])
            values[sweep_field] = tuple(cast(x) for x in given) if len(given) > 1 else ()
    if args.depth is not None:
        values["depths"] = args.depth
    if args.pp_tg:
        values["pp_tg"] = True
    if args.no_mmap:
        values["use_mmap"] = False
    if args.mlock:
        values["use_mlock"] = True
    if args.no_ttft:
        values["ttft"] = False
    if args.allow_code_exec or args.unsafe_code_exec:
        values["allow_code_exec"] = True
    if args.unsafe_code_exec:
        values["unsafe_code_exec"] = True
    settings_ = RunSettings(**values)
    return dataclasses.replace(settings_, n_ubatch=min(settings_.n_ubatch, settings_.n_batch))


def cmd_bench(args: argparse.Namespace) -> int:
    from edgeeval.catalog.models import load_catalog
    from edgeeval.pipeline import bench
    from edgeeval.report.render import ranking_table

    catalog = load_catalog(args.catalog)
    variants = catalog.select(args.models)
    start = time.monotonic()
    outcome = bench(
        variants,
        run_settings_from_args(args),
        run_id=args.resume,
        force=args.force,
        budget_gb=args.budget_gb,
        progress=progress,
        catalog=catalog,
    )
    print(ranking_table(outcome.rows))
    print(
        f"\nrun {outcome.run_id} finished in {time.monotonic() - start:.0f} s; report: "
        f"{outcome.paths['md']}"
    )
    return 0 if any(r.rank for r in outcome.rows) else 3
