"""Memory per context length: each variant's KV cache at the standard lengths (up to its trained
context) as the run allocated it and with a windowed sliding-window cache, the estimated peak
at each length, a plot, and peaks re-estimated at the length a user ranks by.

Everything comes from the stored records (`ModelRecord.kv_cache`); records written before
these figures existed have none, and then nothing here adds to the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

from edgeeval import records as rec
from edgeeval.metrics import kv_cache_at, peak_at_ctx
from edgeeval.report.cells import gb

if TYPE_CHECKING:
    from edgeeval.report.plots import Plot

MB = 1e6

NOTE = (
    "The KV cache is computed from the GGUF's metadata as llama.cpp lays it out: K and V per "
    "layer with that layer's KV heads (GQA), the latent K only for MLA models (DeepSeek-V2/V3), "
    "the context padded to a multiple of 256, F16 values. 'As run' is what the run allocated: "
    "llama-cpp-python gives sliding-window layers (Gemma 2/3) a full-size cache by default "
    "(llama.cpp's swa_full); 'windowed' is the same model with those layers holding only their "
    "window plus one micro-batch, as llama-server and llama-cli run it. The estimated peak "
    "at a length is the measured peak, less the KV cache at the run's n_ctx, plus the KV cache "
    "at that length; other buffers that grow with the context (compute buffers) are not in it."
)


def has_kv(records: Sequence[rec.ModelRecord]) -> bool:
    """Whether any measured record carries per-context KV figures."""
    return any(r.kv_cache is not None and r.status == rec.STATUS_OK for r in records)


def kv_rows(records: Sequence[rec.ModelRecord]) -> list[dict[str, object]]:
    """One row per (variant, context length): KV bytes as run and windowed, estimated peak."""
    out = []
    for r in records:
        if r.kv_cache is None or r.status != rec.STATUS_OK:
            continue
        for point in r.kv_cache.points:
            out.append(
                {
                    "variant": r.variant.name,
                    "n_ctx": point.n_ctx,
                    "kv_bytes": point.kv_bytes,
                    "windowed_bytes": point.windowed_bytes,
                    "run_ctx": point.n_ctx == (r.settings.n_ctx or r.n_ctx_train),
                    "peak_bytes": peak_at_ctx(r, point.n_ctx),
                }
            )
    return out


def _mb(value: object) -> str:
    return "-" if value is None else f"{value / MB:,.1f}"  # type: ignore[operator]


def kv_markdown(records: Sequence[rec.ModelRecord]) -> str:
    """The memory-vs-context section (markdown), or "" when no record has the figures."""
    rows = kv_rows(records)
    if not rows:
        return ""
    lines = [
        "## Memory per context length",
        "",
        NOTE,
        "",
        "| variant | n_ctx | KV MB as run | KV MB windowed | est. peak GB |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        ctx = f"**{row['n_ctx']}** (run)" if row["run_ctx"] else str(row["n_ctx"])
        lines.append(
            f"| {row['variant']} | {ctx} | {_mb(row['kv_bytes'])} "
            f"| {_mb(row['windowed_bytes'])} | {gb(row['peak_bytes'])} |"
        )
    return "\n".join(lines)


def kv_html(records: Sequence[rec.ModelRecord]) -> str:
    """The memory-vs-context section as HTML, or "" when no record has the figures."""
    rows = kv_rows(records)
    if not rows:
        return ""
    head = "".join(
        f"<th>{h}</th>"
        for h in ("variant", "n_ctx", "KV MB as run", "KV MB windowed", "est. peak GB")
    )
    body = "".join(
        f"<tr><td>{escape(str(r['variant']))}</td><td class=num>{r['n_ctx']}"
        f"{' (run)' if r['run_ctx'] else ''}</td><td class=num>{_mb(r['kv_bytes'])}</td>"
        f"<td class=num>{_mb(r['windowed_bytes'])}</td>"
        f"<td class=num>{gb(r['peak_bytes'])}</td></tr>"
        for r in rows
    )
    return (
        f"<h2>Memory per context length</h2><p>{escape(NOTE)}</p>"
        f"<table id=kv-context><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def records_at_ctx(
    records: Sequence[rec.ModelRecord], n_ctx: int
) -> tuple[list[rec.ModelRecord], list[str]]:
    """Records whose peak memory is re-estimated at `n_ctx` (measured peak - KV at the run's
    n_ctx + KV at `n_ctx`), and the names of those left at their measured peak for want of
    KV figures (older records, architectures the formula does not model)."""
    out, kept = [], []
    for r in records:
        peak = peak_at_ctx(r, n_ctx)
        if peak is None or r.memory is None:
            out.append(r)
            if r.status == rec.STATUS_OK:
                kept.append(r.variant.name)
            continue
        out.append(
            dataclasses.replace(
                r,
                memory=dataclasses.replace(
                    r.memory, peak_rss_bytes=peak, speed_peak_rss_bytes=peak
                ),
            )
        )
    return out, kept


def rank_note(n_ctx: int, kept: Sequence[str]) -> str:
    """The sentence that says the ranking uses estimated peaks at `n_ctx`."""
    text = (
        f"Ranked by estimated peak memory at n_ctx {n_ctx}: the measured peak, less the KV "
        f"cache at the run's n_ctx, plus the KV cache at {n_ctx} (as the run allocates it)."
    )
    if kept:
        text += " Without KV figures, at their measured peak: " + ", ".join(kept) + "."
    return text


def kv_series(record: rec.ModelRecord) -> tuple[list[int], list[int], list[int]]:
    """(contexts, KV bytes as run, windowed) for plotting one record."""
    layout = record.kv_cache
    assert layout is not None
    ctx = [p.n_ctx for p in layout.points]
    return (
        ctx,
        [kv_cache_at(layout, n) for n in ctx],
        [kv_cache_at(layout, n, windowed=True) for n in ctx],
    )


def kv_plot(records: Sequence[rec.ModelRecord]) -> Plot | None:
    """KV cache MB against context length per variant (solid: as run; dashed: windowed, drawn
    only where it differs), as a report Plot; None when no record has the figures."""
    from edgeeval.report.plots import Plot, _figure, _png  # matplotlib: only when drawn  # noqa: F811

    measured = [r for r in records if r.kv_cache is not None and r.status == rec.STATUS_OK]
    if not measured:
        return None
    fig, ax = _figure()
    for i, r in enumerate(measured):
        ctx, as_run, windowed = kv_series(r)
        color = f"C{i % 10}"
        ax.plot(ctx, [b / MB for b in as_run], "o-", color=color, label=r.variant.name)
        if windowed != as_run:
            ax.plot(ctx, [b / MB for b in windowed], "s--", color=color, label="  windowed")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("KV cache (MB)")
    title = "KV cache vs context length"
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return Plot(key="kv-context", title=title, png=_png(fig), has_data=True)
