"""`edgeeval plan --budget-gb N [--ctx N] [NAMES]`: what should fit, and how fast, before any
download (edgeeval/plan.py has the method)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from edgeeval import settings
from edgeeval.cli.console import progress
from edgeeval.text import safe_text


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `plan`."""
    p = sub.add_parser(
        "plan",
        help="list the variants that should fit in a memory budget at a context, with "
        "predicted prompt and generation speed, before downloading them",
    )
    p.add_argument(
        "names",
        nargs="*",
        help="catalog variants, sets or model specs (a .gguf path, hf:OWNER/REPO:QUANT, "
        "ollama:, lmstudio:); default: the whole catalog",
    )
    p.add_argument(
        "--budget-gb", type=float, required=True, metavar="N", help="memory budget in GB (10^9 B)"
    )
    p.add_argument(
        "--ctx", type=int, default=2048, metavar="N", help="context length (default 2048)"
    )
    p.add_argument(
        "--no-remote",
        action="store_true",
        help="read only local headers (no ranged Hub reads); others are listed without a figure",
    )
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.set_defaults(func=cmd_plan)


def _variants(args: argparse.Namespace) -> list:
    from edgeeval.catalog.stack import load_catalogs
    from edgeeval.fetch.specs import select
    from edgeeval.plan import hub_spec_variant

    catalog = load_catalogs(getattr(args, "catalog", None))
    if not args.names:
        return [v for v in catalog.variants.values() if v.source.kind != "derived"]
    hub = [n for n in args.names if n.startswith("hf:") and n not in catalog.variants]
    rest = [n for n in args.names if n not in hub]
    chosen = select(catalog, rest, progress=progress)[1] if rest else []
    return [*chosen, *(hub_spec_variant(n) for n in hub)]


def _bandwidth(stored_mine: list) -> float | None:
    """A stored record's bandwidth, else this host's cached (or newly measured) one."""
    if any(r.host.mem_bandwidth_bytes_per_s for r in stored_mine):
        return None  # plan.calibrate takes the newest stored figure
    from edgeeval.engine.backend import library_info
    from edgeeval.engine.host import collect

    progress("measuring this machine's memory bandwidth once (cached afterwards)")
    return collect(library_info()).mem_bandwidth_bytes_per_s


def cmd_plan(args: argparse.Namespace) -> int:
    from functools import partial

    from edgeeval import plan
    from edgeeval.fetch.header import variant_header
    from edgeeval.store.database import all_records
    from edgeeval.store.plans import append_predictions

    plan.check_budget(args.budget_gb, args.ctx)
    variants = _variants(args)
    machine = plan.this_machine()
    stored = all_records()
    bandwidth = _bandwidth(plan.mine(stored, *machine))
    rows, cal = plan.plan(
        variants,
        budget_gb=args.budget_gb,
        n_ctx=args.ctx,
        stored=stored,
        bandwidth=bandwidth,
        machine=machine,
        header_of=partial(variant_header, remote=not args.no_remote),
    )
    if args.names:  # a context the named model was never trained for is a usage error
        for row in rows:
            if row.refused:
                raise plan.PlanInputError(f"{row.variant.name}: {row.refused}")
    predictions = [r.prediction for r in rows if r.prediction]
    if predictions:
        append_predictions(predictions)
    if args.json:
        out = {
            "calibration": asdict(cal),
            "variants": [
                {
                    "variant": r.variant.name,
                    "header": r.header_source,
                    "refused": r.refused,
                    "prediction": asdict(r.prediction) if r.prediction else None,
                }
                for r in rows
            ],
        }
        print(json.dumps(out, indent=1))
        return 0
    gb = settings.GB
    print(
        f"budget {args.budget_gb:g} GB at n_ctx {args.ctx}; bandwidth "
        f"{cal.bandwidth_bytes_per_s / gb:.1f} GB/s x efficiency {cal.efficiency:.2f} "
        f"({cal.efficiency_source})"
    )
    print(f"pp: {cal.pp_source}")
    print(f"runtime memory {cal.overhead_bytes / 1e6:.0f} MB ({cal.overhead_source})")
    print()
    print(
        f"{'variant':44} {'fits':>4} {'peak GB':>8} {'KV GB':>6} {'tg t/s':>7} {'@ctx':>6} "
        f"{'pp t/s':>7}  header"
    )
    for r in rows:
        name = safe_text(r.variant.name, 44)
        p = r.prediction
        if p is None:
            dashes = " ".join(f"{'-':>{w}}" for w in (8, 6, 7, 6, 7))
            print(f"{name:44} {'?':>4} {dashes}  {safe_text(r.header_source, 200)}")
            continue
        fits = "no" if not p.fits else "yes"
        kv = f"{p.kv_bytes / gb:.2f}" if p.kv_bytes is not None else "?"
        pp = f"{p.pp_ts:.0f}" if p.pp_ts else "-"
        note = r.refused or (
            "" if p.fits else f"over budget: {p.peak_bytes / gb:.2f} > {args.budget_gb:g} GB"
        )
        print(
            f"{name:44} {fits:>4} {p.peak_bytes / gb:8.2f} {kv:>6} {p.tg_ts:7.1f} "
            f"{p.tg_full_ctx_ts:6.1f} {pp:>7}  {r.header_source}{'; ' + note if note else ''}"
        )
    fitting = sum(1 for r in rows if r.prediction and r.prediction.fits)
    print(
        f"\n{fitting} of {len(rows)} variants should fit; predictions kept for the report",
        file=sys.stderr,
    )
    return 0
