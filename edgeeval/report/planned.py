"""How far `edgeeval plan`'s predictions were off, once the variants are measured.

For each measured variant, the newest prediction for it on the same machine made before it was
measured (store/plans.py): predicted against measured generation and prompt speed (the headline
tg and pp tests) and peak memory (the speed phase's peak, what the prediction is of). No
section when no variant of the run was planned.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeeval import records as rec
from edgeeval.metrics import prediction_error
from edgeeval.report.cells import md
from edgeeval.report.summarize import main_speed
from edgeeval.settings import GB
from edgeeval.store.plans import Prediction, prediction_for


def _pair(predicted: float | None, measured: float | None, fmt: str) -> str:
    if predicted is None or not measured:
        return "-"
    error = prediction_error(predicted, measured)
    return f"{predicted:{fmt}} / {measured:{fmt}} ({error:+.0%})"


def planned_rows(
    records: Sequence[rec.ModelRecord], predictions: Sequence[Prediction]
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for record in records:
        p = prediction_for(record, predictions)
        if p is None or record.status != rec.STATUS_OK:
            continue
        tg, pp = main_speed(record, "tg"), main_speed(record, "pp")
        memory = record.memory
        peak = memory and (memory.speed_peak_rss_bytes or memory.peak_rss_bytes)
        rows.append(
            {
                "variant": record.variant.name,
                "made_at": p.made_at,
                "tg": (p.tg_ts, tg.avg_ts if tg else None),
                "pp": (p.pp_ts, pp.avg_ts if pp else None),
                "peak_gb": (p.peak_bytes / GB, peak / GB if peak else None),
                "n_ctx": (p.n_ctx, record.settings.n_ctx),
            }
        )
    return rows


def planned_markdown(
    records: Sequence[rec.ModelRecord], predictions: Sequence[Prediction]
) -> list[str]:
    """The "Predicted before download" section's lines; [] when nothing was planned."""
    rows = planned_rows(records, predictions)
    if not rows:
        return []
    lines = [
        "## Predicted before download (`edgeeval plan`)",
        "",
        "Each cell is predicted / measured (error: + = the prediction was too high). The "
        "prediction is the newest `edgeeval plan` made for the variant on this machine before "
        "it was measured; it used only the other variants' earlier runs.",
        "",
        "| variant | planned at | n_ctx planned / run | tg t/s | pp t/s | peak GB (speed phase) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        tg, pp, peak, ctx = r["tg"], r["pp"], r["peak_gb"], r["n_ctx"]
        assert isinstance(tg, tuple) and isinstance(pp, tuple) and isinstance(peak, tuple)
        assert isinstance(ctx, tuple)
        lines.append(
            f"| {md(r['variant'])} | {md(r['made_at'])} | {ctx[0]} / {ctx[1]} "
            f"| {_pair(tg[0], tg[1], '.1f')} | {_pair(pp[0], pp[1], '.0f')} "
            f"| {_pair(peak[0], peak[1], '.2f')} |"
        )
    return [*lines, ""]
