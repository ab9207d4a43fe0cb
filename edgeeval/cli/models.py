"""`edgeeval models [NAMES] [--discover] [--scan DIR] [--json]`: the catalog, model specs, and
the GGUF files already on this machine; plus the catalog loading every command shares."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeeval import settings
from edgeeval.cli.console import progress
from edgeeval.text import safe_text

SPEC_HELP = (
    "catalog variant or set names, or model specs: a .gguf path, hf:OWNER/REPO:QUANT, "
    "hf:OWNER/REPO/FILE.gguf[@REV], ollama:NAME[:TAG], lmstudio:PUBLISHER/REPO[/FILE]"
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `models`."""
    p = sub.add_parser(
        "models",
        help="list the catalog, describe model specs, or --discover the GGUFs on this machine",
    )
    p.add_argument("names", nargs="*", help=SPEC_HELP + " (default: the whole catalog)")
    p.add_argument(
        "--discover",
        action="store_true",
        help="list the GGUFs in the Hugging Face cache, Ollama and LM Studio",
    )
    p.add_argument(
        "--scan",
        action="append",
        type=Path,
        metavar="DIR",
        default=[],
        help="also list the GGUFs under DIR (repeatable); alone it lists only those",
    )
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.set_defaults(func=cmd_models)


def load_selection(args: argparse.Namespace, names: list[str] | None):  # -> (Catalog, variants)
    """The merged catalog (built-in + user-level + --catalog) extended with the variants made
    from any specs in `names`, and the selected variants (default: the default set)."""
    from edgeeval.catalog.stack import load_catalogs
    from edgeeval.fetch.specs import select

    return select(load_catalogs(getattr(args, "catalog", None)), names, progress=progress)


def cmd_models(args: argparse.Namespace) -> int:
    if args.discover or args.scan:
        return _discover(args)
    from edgeeval.catalog.stack import load_catalogs

    if args.names:
        catalog, variants = load_selection(args, args.names)
        sets = {}
    else:
        catalog = load_catalogs(args.catalog)
        variants, sets = list(catalog.variants.values()), catalog.sets
    problems = {v.name: catalog.problems[v.name] for v in variants if v.name in catalog.problems}
    rows = [_catalog_row(v, problems.get(v.name)) for v in variants]
    if args.json:
        print(json.dumps({"variants": rows, "sets": {k: list(m) for k, m in sets.items()}}))
        return _report_problems(problems)
    print(f"{'name':44} {'family':9} {'quant':7} {'kind':8} {'size GB':>8}  {'source':7} local")
    for row in rows:
        size = f"{row['size_bytes'] / settings.GB:.3f}" if row["size_bytes"] else "?"
        name, quant = safe_text(row["name"], 60), safe_text(row["quant"], 20)
        family = safe_text(row["family"], 20)
        print(
            f"{name:44} {family:9} {quant:7} {row['kind']:8} {size:>8}  "
            f"{row['source']:7} {row['local']}"
        )
    if sets:
        print("\nsets: " + "; ".join(f"{safe_text(k, 40)} ({len(m)})" for k, m in sets.items()))
    return _report_problems(problems)


def _report_problems(problems: dict[str, str]) -> int:
    """One error line per catalog entry that cannot be fetched as written (to stderr); the
    exit code: 2 when there is any, else 0."""
    for message in problems.values():
        print(f"edgeeval: error: {safe_text(message, 2000)}", file=sys.stderr)
    return 2 if problems else 0


def _catalog_row(v, problem: str | None = None) -> dict:
    from edgeeval.fetch.sources import is_cached
    from edgeeval.quant.build import derived_dir, read_build_info

    if problem:  # a Hub name that leaves the repo: nothing to look up
        size_bytes, mark = v.size_bytes, "invalid"
    else:
        size_bytes, mark = v.size_bytes, "yes" if is_cached(v) else "-"
    if v.source.kind == "derived":  # built, not downloaded: its size is known once built
        info = read_build_info(derived_dir() / v.filename)
        size_bytes, mark = (info.size_bytes, "built") if info else (None, "-")
    return {
        "name": v.name,
        "family": v.family,
        "quant": v.quant,
        "kind": v.kind,
        "size_bytes": size_bytes,
        "source": v.source.kind,
        "local": mark,
        "spec": v.spec,
    }


def _discover(args: argparse.Namespace) -> int:
    from edgeeval.fetch.discover import discover

    found = discover(args.scan, stores=args.discover)
    if args.json:
        print(json.dumps([d.to_dict() for d in found], indent=1))
        return 0
    if not found:
        print(
            "no GGUF files found (looked in " + ", ".join(safe_text(p) for p in _places(args)) + ")"
        )
        return 0
    print(f"{'spec':60} {'size GB':>8} {'arch':10} {'params':>8} {'quant':8} runs")
    for d in found:
        params = f"{d.params / 1e9:.2f}B" if d.params else "?"
        runs = "yes" if d.runnable else f"no: {safe_text(d.reason, 120)}"
        print(
            f"{safe_text(d.spec, 60):60} {d.size_bytes / settings.GB:8.3f} "
            f"{safe_text(d.architecture or '?', 10):10} {params:>8} "
            f"{safe_text(d.quant or '?', 8):8} {runs}"
        )
    print("\nbench any of them with `edgeeval bench SPEC ...`")
    return 0


def _places(args: argparse.Namespace) -> list[Path]:
    places = list(args.scan)
    if args.discover:
        places += [settings.hf_hub_cache(), settings.ollama_models_dir()]
        places += settings.lmstudio_models_dirs()
    return places
