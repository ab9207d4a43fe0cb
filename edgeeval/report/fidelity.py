"""The quant-fidelity section of a report (KLD, PPL ratio, same-top-p per variant)."""

from __future__ import annotations

from collections.abc import Sequence

from edgeeval import records as rec


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
