"""The quant-fidelity section of a report (KLD, PPL ratio, same-top-p per variant)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgeeval import records as rec
from edgeeval.metrics import bits_per_weight
from edgeeval.report.cells import md, num, pm
from edgeeval.report.summarize import RankRow
from edgeeval.settings import GB


def fidelity_markdown(results: Sequence[rec.FidelityResult]) -> str:
    """A markdown section: one row per variant, the method and the corpus underneath."""
    if not results:
        return ""
    head = (
        "| variant | reference | PPL | ln(PPL(Q)/PPL(ref)) | mean KLD | KLD 99.9% | KLD 99% "
        "| KLD 90% | KLD median | same top p | RMS Δp | tokens |\n" + "|---" * 12 + "|\n"
    )
    rows = [_row(r) for r in results]
    first = results[0]
    notes = sorted(
        {f"- {r.variant}: {r.notes}" for r in results if r.notes}
        | {f"- {r.variant}: {r.status}: {r.error}" for r in results if r.error}
    )
    return (
        "## Quant fidelity\n\n" + head + "\n".join(rows) + "\n\n"
        f"Corpus `{first.corpus}` (sha256 {first.corpus_sha256[:12]}), {first.n_chunks} "
        f"chunks of {first.n_ctx} tokens, second half of each scored (llama-perplexity's "
        "method). KLD(ref || Q) in nats per token, mean ± standard error; same top p = how "
        "often both rank the same token first; Δp = p(Q) - p(ref) of the actual token.\n"
        + ("\n" + "\n".join(notes) + "\n" if notes else "")
    )


def _row(r: rec.FidelityResult) -> str:
    if r.status != rec.STATUS_OK:
        return f"| {r.variant} | {r.reference} | {r.status} |" + " |" * 9
    return (
        f"| {r.variant} | {r.reference} | {r.ppl:.4f} ± {r.ppl_se:.4f} | "
        f"{r.ln_ppl_ratio:.5f} ± {r.ln_ppl_ratio_se:.5f} | {r.kld_mean:.6f} ± {r.kld_se:.6f} "
        f"| {r.kld_p999:.4f} | {r.kld_p99:.4f} | {r.kld_p90:.5f} | {r.kld_median:.6f} | "
        f"{r.same_top_pct:.2f} ± {r.same_top_se_pct:.2f} % | {r.rms_dp_pct:.3f} ± "
        f"{r.rms_dp_se_pct:.3f} % | {r.n_tokens} |"
    )


def variant_rows(
    rows: Sequence[RankRow],
    records: Sequence[rec.ModelRecord],
    fidelity: Sequence[rec.FidelityResult],
) -> list[dict[str, Any]]:
    """Size, bits per weight, speed, capability and fidelity of each variant side by side."""

    by_name = {r.variant.name: r for r in records}
    results = {f.variant: f for f in fidelity}
    out = []
    for row in rows:
        record, fid = by_name.get(row.name), results.get(row.name)
        out.append(
            {
                "variant": row.name,
                # an emulated (FP8) row: its storage's size and bits, marked as such
                "quant": row.quant + (" (emulated)" if row.emulated else ""),
                "file_gb": row.file_gb,
                "bits_per_weight": _bits(row, record) if record else None,
                "tg_ts": row.tg_ts,
                "tg_stddev_ts": row.tg_stddev_ts,
                "capability": row.capability,
                "capability_se": row.capability_se,
                "kld_mean": fid.kld_mean if fid else None,
                "kld_se": fid.kld_se if fid else None,
                "ln_ppl_ratio": fid.ln_ppl_ratio if fid else None,
                "same_top_pct": fid.same_top_pct if fid else None,
                "reference": fid.reference if fid else "",
            }
        )
    return out


def _bits(row: RankRow, record: rec.ModelRecord) -> float | None:
    """Bits per weight of the file, or of the storage an emulated format would take."""
    bits = bits_per_weight(record)
    if bits is None or not row.emulated or not record.variant.size_bytes:
        return bits
    return bits * row.file_gb * GB / record.variant.size_bytes


def variants_markdown(table: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| variant | quant | file GB | bits/weight | tg t/s | capability | mean KLD "
        "| ln PPL ratio | same top p % | reference |",
        "|---|---|" + "---:|" * 7 + "---|",
    ]
    for v in table:
        kld = "-" if v["kld_mean"] is None else f"{v['kld_mean']:.5f} ± {v['kld_se'] or 0:.5f}"
        lines.append(
            f"| {md(v['variant'])} | {md(v['quant'])} | {num(v['file_gb'], 3)} "
            f"| {num(v['bits_per_weight'])} | {pm(v['tg_ts'], v['tg_stddev_ts'])} "
            f"| {pm(v['capability'], v['capability_se'])} | {kld} "
            f"| {num(v['ln_ppl_ratio'], 4)} | {num(v['same_top_pct'])} "
            f"| {md(v['reference'])} |"
        )
    return "\n".join(lines)
