"""Parity check: edgeeval fidelity against llama.cpp's own llama-perplexity, side by side.

Both run on the same corpus file, context, chunk count and thread count: llama-perplexity first
writes the reference's log-probabilities (`--kl-divergence-base`), then scores every variant
against them (`--kl-divergence`); edgeeval runs `run_fidelity` on the same files. The script
prints both results and the targets: mean KLD and mean ln(PPL(Q)/PPL(ref)) within 2 % relative,
Same-top-p on exactly the same number of tokens (both use llama-perplexity's definition), and
edgeeval's wall time at most 1.25 x llama-perplexity's. It also checks the stored reference
itself: edgeeval's reference rows of the first chunk against llama-perplexity's base file
(the same layout), entry by entry.

    .venv/bin/python benchmarks/perplexity_parity.py --models quant-compare   # 20 chunks

llama-perplexity must be built from the llama.cpp that llama-cpp-python 0.3.36 vendors (the
sdist's vendor/llama.cpp; build the `llama-perplexity` target with cmake) and placed at
.bench-tools/llama-perplexity (or left in .bench-tools/build/bin/), or passed with --tool.
This is a benchmark, not a unit test.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeeval import contracts as ct
from edgeeval.catalog.models import load_catalog
from edgeeval.engine import host as hostinfo
from edgeeval.fidelity import child, kld
from edgeeval.fidelity import orchestrate as fidelity
from edgeeval.quant.build import ensure_file

ROOT = Path(__file__).resolve().parent.parent

# llama-perplexity's summary lines (tools/perplexity/perplexity.cpp), value then optional error.
_LINES = {
    "ppl": r"Mean PPL\(Q\)\s*:\s*([-\d.]+)",
    "ppl_ref": r"Mean PPL\(base\)\s*:\s*([-\d.]+)",
    "ln_ppl_ratio": r"Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s*([-\d.]+)",
    "kld_mean": r"Mean\s+KLD:\s*([-\d.]+)",
    "kld_p99": r"99\.0%\s+KLD:\s*([-\d.]+)",
    "kld_median": r"Median\s+KLD:\s*([-\d.]+)",
    "rms_dp_pct": r"RMS Δp\s*:\s*([-\d.]+)",
    "same_top_pct": r"Same top p:\s*([-\d.]+)",
}


def _default_tool() -> Path:
    """.bench-tools/llama-perplexity, or where the cmake build in .bench-tools leaves it."""
    tools = ROOT / ".bench-tools"
    for candidate in (tools / "llama-perplexity", tools / "build" / "bin" / "llama-perplexity"):
        if candidate.exists():
            return candidate
    return tools / "llama-perplexity"


def run_tool(tool: Path, args: list[str]) -> tuple[str, float]:
    start = time.monotonic()
    done = subprocess.run([str(tool), *args], capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"llama-perplexity failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr, elapsed


def parse(output: str) -> dict[str, float]:
    found = {}
    for key, pattern in _LINES.items():
        match = re.search(pattern, output)
        if match:
            found[key] = float(match.group(1))
    return found


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else abs(a - b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["quant-compare"])
    parser.add_argument("--catalog", type=Path, help="models.yaml (default: the built-in one)")
    parser.add_argument("--ref", help="reference variant (default: the F16 one)")
    parser.add_argument("--corpus", default="pydoc")
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--threads", type=int, default=hostinfo.physical_cores())
    parser.add_argument("--tool", type=Path, default=_default_tool())
    args = parser.parse_args()
    if not args.tool.exists():
        sys.exit(
            f"{args.tool} is missing: build llama-perplexity from llama-cpp-python's "
            "vendored llama.cpp (cmake --build build --target llama-perplexity) and copy "
            "it there, or pass --tool"
        )
    catalog = load_catalog(args.catalog)
    named = catalog.select(args.models)
    reference = fidelity.pick_reference(named, args.ref, catalog)
    variants = [v for v in named if v.name != reference.name]
    files = {v.name: ensure_file(v, catalog) for v in [reference, *variants]}
    with tempfile.TemporaryDirectory(prefix="ppl-parity-") as tmp:
        # llama-perplexity drops one trailing newline of -f files; give both the same bytes.
        text = fidelity.load_corpus(args.corpus).text.rstrip("\n")
        corpus_path = Path(tmp) / "corpus.txt"
        corpus_path.write_text(text, encoding="utf-8")
        common = [
            "-c",
            str(args.n_ctx),
            "-b",
            str(args.n_ctx),
            "--chunks",
            str(args.chunks),
            "-t",
            str(args.threads),
            "-fa",
            "off",
            "-ngl",
            "0",
        ]
        base = Path(tmp) / "base.kld"
        _, tool_s = run_tool(
            args.tool,
            [
                "-m",
                str(files[reference.name].path),
                "-f",
                str(corpus_path),
                "--kl-divergence-base",
                str(base),
                *common,
            ],
        )
        theirs = {}
        for variant in variants:
            out, seconds = run_tool(
                args.tool,
                [
                    "-m",
                    str(files[variant.name].path),
                    "--kl-divergence-base",
                    str(base),
                    "--kl-divergence",
                    *common,
                ],
            )
            theirs[variant.name] = parse(out)
            tool_s += seconds
        rows_line = check_reference_rows(base, files[reference.name].path, args)
        start = time.monotonic()
        ours = fidelity.run_fidelity(
            reference,
            variants,
            catalog,
            corpus=fidelity.load_corpus(str(corpus_path)),
            run_id="parity-" + time.strftime("%Y%m%d-%H%M%S"),
            n_ctx=args.n_ctx,
            max_chunks=args.chunks,
            n_threads=args.threads,
        )
        ours_s = time.monotonic() - start
    report(ours, theirs, ours_s, tool_s)
    print(rows_line)
    return 0


def read_base_file(path: Path) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(n_ctx, n_vocab, tokens (n_chunk, n_ctx), first chunk's rows) of llama-perplexity's
    --kl-divergence-base file: b"_logits_", int32 n_ctx, n_vocab, n_chunk, the tokens, then
    per chunk its scored rows in edgeeval's reference layout (kld.ref_dtype)."""
    with open(path, "rb") as fh:
        if fh.read(8) != b"_logits_":
            sys.exit(f"{path} is not a llama-perplexity --kl-divergence-base file")
        n_ctx, n_vocab, n_chunk = np.frombuffer(fh.read(12), "<i4")
        tokens = np.frombuffer(fh.read(4 * n_chunk * n_ctx), "<i4").reshape(n_chunk, n_ctx)
        rows = np.frombuffer(
            fh.read(kld.ref_dtype(n_vocab).itemsize * kld.scored(n_ctx)[1]),
            kld.ref_dtype(n_vocab),
        )
    return int(n_ctx), int(n_vocab), tokens, rows


def check_reference_rows(base: Path, model: Path, args: argparse.Namespace) -> str:
    """Decode the first chunk of llama-perplexity's tokens with edgeeval's reference pass code
    and compare the rows it would store with the ones llama-perplexity stored."""
    n_ctx, n_vocab, tokens, theirs = read_base_file(base)
    spec = ct.FidelitySpec(
        role="reference",
        model=str(model),
        work=str(base.parent),
        n_ctx=n_ctx,
        max_chunks=1,
        n_threads=args.threads,
        n_gpu_layers=0,
    )
    backend = child._load(spec)
    try:
        logits = child._chunk_logits(backend, tokens[0], kld.scored(n_ctx)[0])
    finally:
        backend.close()
    mine = kld.reference_rows(logits)
    same_rows = int(
        np.sum((mine["scale"] == theirs["scale"]) & (mine["min_logp"] == theirs["min_logp"]))
    )
    diff = np.abs(mine["level"].astype(np.int64) - theirs["level"])
    return (
        f"reference rows, chunk 1: scale and min log-p identical in {same_rows}/{len(mine)} "
        f"rows; levels identical in {int(np.sum(diff == 0))}/{diff.size} entries "
        f"(largest difference {int(diff.max())} levels); {n_vocab} tokens per row"
    )


def report(ours: list, theirs: dict[str, dict[str, float]], ours_s: float, tool_s: float) -> None:
    keys = (
        "ppl",
        "ln_ppl_ratio",
        "kld_mean",
        "kld_p99",
        "kld_median",
        "same_top_pct",
        "rms_dp_pct",
    )
    print(f"{'variant':38} {'metric':14} {'edgeeval':>12} {'llama-ppl':>12}  check")
    for result in ours:
        tool = theirs.get(result.variant, {})
        for key in keys:
            mine, other = getattr(result, key), tool.get(key)
            check = _check(key, mine, other, result.n_tokens)
            print(f"{result.variant:38} {key:14} {_fmt(mine):>12} {_fmt(other):>12}  {check}")
    ratio = ours_s / tool_s
    print(
        f"\nwall time: edgeeval {ours_s:.1f} s, llama-perplexity {tool_s:.1f} s, ratio "
        f"{ratio:.2f} ({'ok' if ratio <= 1.25 else 'FAIL'}: target <= 1.25)"
    )


def _check(key: str, mine: float | None, other: float | None, n_tokens: int) -> str:
    """The target for this metric: 2 % relative for KLD and ln ratio, the same number of
    agreeing tokens for Same-top-p."""
    if mine is None or other is None:
        return ""
    if key in ("kld_mean", "ln_ppl_ratio"):
        return f"{100 * rel(mine, other):.2f} % {'ok' if rel(mine, other) <= 0.02 else 'FAIL'}"
    if key == "same_top_pct":  # llama-perplexity prints 3 decimals: a token is 100/n points
        tokens = round(abs(mine - other) / 100 * n_tokens)
        return f"{abs(mine - other):.3f} pt, {tokens} token(s) {'ok' if tokens == 0 else 'FAIL'}"
    return ""


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


if __name__ == "__main__":
    raise SystemExit(main())
