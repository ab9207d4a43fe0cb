"""The quant-fidelity section of a report (KLD, PPL ratio, same-top-p per variant)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from edgeeval import records as rec
from edgeeval.metrics import bits_per_weight
from edgeeval.report.cells import md, num, pm
from edgeeval.report.summarize import RankRow, label_knob_points
from edgeeval.settings import GB


def _knobs(settings: rec.RunSettings | rec.FidelityResult) -> tuple[object, ...]:
    """The context knobs a fidelity result is measured at (its chunk sets the context size)."""
    return (settings.cache_type_k, settings.cache_type_v, settings.flash_attn, settings.swa_full)


def label_fidelity(
    fidelity: Sequence[rec.FidelityResult], records: Sequence[rec.ModelRecord]
) -> list[rec.FidelityResult]:
    """The fidelity results named as the report's rows: a result measured at a record's
    KV cache types, flash attention and windowing gets that record's row name ("q4_k_m + KV
    q8_0"), once per such record (an n_ctx sweep's points share a chunk's KLD: the context
    size does not change the logits of a chunk that fits); a result that matches no record is
    named by its own knob point ("q4_k_m + KV q4_0 + FA on"), with its knobs spelled out when
    that name is a row measured at other knobs (an F16-KV result beside an -fa on run)."""
    labelled = label_knob_points(records)
    rows = {r.variant.name for r in labelled}
    out = []
    for result in fidelity:
        names = [
            row.variant.name
            for record, row in zip(records, labelled, strict=True)
            if record.variant.name == result.variant and _knobs(record.settings) == _knobs(result)
        ]
        if not names:
            name = result.point_name
            if name in rows:
                fa = "auto" if result.flash_attn == "auto" else "on" if result.flash_attn else "off"
                kv = f"{result.cache_type_k}/{result.cache_type_v}"
                name += f" (measured at KV {kv}, FA {fa})"
            names = [name]
        out += [replace(result, variant=name) for name in dict.fromkeys(names)]
    return out


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
        + domain_markdown(results)
    )


def domain_markdown(results: Sequence[rec.FidelityResult]) -> str:
    """Per-domain fidelity (`--corpus domains`): one row per domain, one column per variant
    (mean KLD ± SE, same top p ± SE). A domain a result lacks is "missing", never 0; the
    domains where the variants' order by mean KLD differs from the overall order are named."""
    names = _domain_names(results)
    if not names:
        return ""
    head = "| domain | tokens | " + " | ".join(md(r.variant) for r in results) + " |\n"
    head += "|---|---:|" + "---|" * len(results) + "\n"
    rows, notes = [], set()
    for name in names:
        cells, tokens = [], ""
        for r in results:
            d = _domain(r, name)
            if r.status != rec.STATUS_OK:
                cells.append(r.status)
            elif d is None or d.status != rec.STATUS_OK or d.kld_mean is None:
                cells.append("missing")
                notes.add(
                    f"- {name}: missing for {r.variant}: "
                    + (d.note if d else "not measured on this domain")
                )
            else:
                tokens = tokens or str(d.n_tokens)
                cells.append(
                    f"{d.kld_mean:.5f} ± {d.kld_se or 0:.5f} · {d.same_top_pct:.1f} ± "
                    f"{d.same_top_se_pct or 0:.1f} %"
                )
        rows.append(f"| {md(name)} | {tokens or '-'} | " + " | ".join(cells) + " |")
    return (
        "\n### Fidelity per domain\n\nEach sample rendered through the reference's own chat "
        "template; a domain's chunks hold only its text. Cells: mean KLD ± SE (nats per token) "
        "· same top p ± SE. The overall figures above are these, weighted by tokens.\n\n"
        + head
        + "\n".join(rows)
        + "\n"
        + _order_changes(results, names)
        + ("\n" + "\n".join(sorted(notes)) + "\n" if notes else "")
        + _sources(results, names)
    )


def _sources(results: Sequence[rec.FidelityResult], names: list[str]) -> str:
    """Where each domain's samples came from (the shipped file, or a Hub dataset, or the
    shipped file because the Hub's could not be read, and why); nothing for results stored
    before domains named their source."""
    lines = []
    for name in names:
        found = dict.fromkeys(d.source for r in results if (d := _domain(r, name)) and d.source)
        if found:
            lines.append(f"- {md(name)}: {md('; '.join(found), 600)}")
    return "\nSamples per domain, from:\n\n" + "\n".join(lines) + "\n" if lines else ""


def _domain_names(results: Sequence[rec.FidelityResult]) -> list[str]:
    """The domains any result was measured on, in the order they first appear."""
    names: dict[str, None] = {}
    for r in results:
        for d in r.domains:
            names.setdefault(d.domain)
    return list(names)


def _domain(r: rec.FidelityResult, name: str) -> rec.DomainFidelity | None:
    return next((d for d in r.domains if d.domain == name), None)


def _order_changes(results: Sequence[rec.FidelityResult], names: list[str]) -> str:
    """A line per domain where ranking the variants by mean KLD gives another order than the
    overall figures (among the variants measured on that domain)."""
    ok = [r for r in results if r.status == rec.STATUS_OK and r.kld_mean is not None]
    if len(ok) < 2:
        return ""
    lines = []
    for name in names:
        pairs = [(d.kld_mean, r) for r in ok if (d := _domain(r, name)) and d.kld_mean is not None]
        if len(pairs) < 2:
            continue
        here = [r.variant for _, r in sorted(pairs, key=lambda p: p[0])]
        overall = [
            r.variant for r in sorted((r for _, r in pairs), key=lambda r: r.kld_mean or 0.0)
        ]
        if here != overall:
            lines.append(f"- {name}: {' < '.join(here)} (overall: {' < '.join(overall)})")
    if not lines:
        return "\nThe variants rank the same on every domain as overall (by mean KLD).\n"
    return "\nDomains where the variants' order by mean KLD changes:\n\n" + "\n".join(lines) + "\n"


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
