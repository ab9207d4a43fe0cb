"""The report's plots as PNG bytes, drawn with matplotlib's Agg renderer (no display needed).

Figures are built with `matplotlib.figure.Figure` directly, not pyplot, so no global state or
GUI backend is involved. A plot without data is not drawn: it comes back with `has_data`
False and a note saying why, which the HTML page gives in one sentence instead of an empty
image.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from edgeeval import records as rec
from edgeeval.metrics import bits_per_weight
from edgeeval.report.summarize import RankRow, ThreadPoint


@dataclass(frozen=True)
class Plot:
    """One rendered plot: `key` names the PNG file (plot-<key>.png) and the HTML element."""

    key: str
    title: str
    png: bytes
    has_data: bool
    note: str = ""


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No "Software" metadata: the same data gives the same bytes across matplotlib versions.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    return fig, fig.add_subplot()


def _empty(key: str, title: str, message: str) -> Plot:
    """A plot left out for lack of data: no image, the reason in `note`."""
    return Plot(key=key, title=title, png=b"", has_data=False, note=message)


def per_gb_guides(low: float, high: float, most: int = 6) -> list[float]:
    """Round capability-per-GB values (1, 2, 5 x 10^k) from `low` to `high`, for the guide
    rays; at most `most`, every other one dropped (from the top) while there are more.

    >>> per_gb_guides(40, 600)
    [50.0, 100.0, 200.0, 500.0]
    >>> per_gb_guides(1, 1000)
    [1.0, 5.0, 20.0, 100.0, 500.0]
    >>> per_gb_guides(3, 4)
    []
    """
    values = [m * 10.0**k for k in range(-3, 7) for m in (1, 2, 5) if low <= m * 10.0**k <= high]
    while len(values) > most:
        values = values[::2]
    return values


def _per_gb_rays(ax: Axes, x_max: float, y_max: float, per_gb: Sequence[float]) -> None:
    """Dotted rays from the origin where capability / peak GB is constant, labelled where
    they leave the plot, spanning the variants' own capability per GB (`per_gb`): a variant
    on a steeper ray scores more per GB."""
    visible = (0.1 * y_max / x_max, y_max / (0.04 * x_max))  # leaves the plot at 4 %+ of it
    spread = (min(per_gb) / 3, max(per_gb) * 3) if per_gb else visible
    for k in per_gb_guides(max(visible[0], spread[0]), min(visible[1], spread[1])):
        x_end = min(x_max, y_max / k)
        ax.plot([0, x_end], [0, k * x_end], ":", color="0.7", lw=0.8, zorder=0)
        ax.annotate(
            f"{k:g}/GB",
            (x_end, k * x_end),
            xytext=(-2, -2),
            textcoords="offset points",
            ha="right",
            va="top",
            fontsize=6.5,
            color="0.45",
        )


def _colors(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per model family, from matplotlib's default cycle."""
    return {name: f"C{i % 10}" for i, name in enumerate(sorted(set(names)))}


def _label(ax: Axes, x: float, y: float, text: str) -> None:
    ax.annotate(text, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)


def _point(r: RankRow, y: float | None) -> tuple[float, float]:
    """(peak GB, y) of a row the caller kept because it has both."""
    assert r.peak_rss_gb is not None and y is not None  # measured rows have a peak memory
    return r.peak_rss_gb, y


def capability_vs_memory(rows: Sequence[RankRow], *, budget_gb: float | None = None) -> Plot:
    """Capability (± 1 SE) against peak GB from the origin; the Pareto front as a dashed line,
    dominated variants hollow, variants over the budget as crosses, and dotted rays of equal
    capability per GB (the ranked metric: the steeper the ray a variant sits on, the better)."""
    key, title = "capability-memory", "Capability vs peak memory"
    points = [r for r in rows if r.measured]
    if not points:
        return _empty(key, title, "no variant was measured successfully")
    fig, ax = _figure()
    colors = _colors([r.family for r in points])
    for r in points:
        face = "none" if r.dominated_by or r.over_budget else colors[r.family]
        x, y = _point(r, r.capability)
        ax.errorbar(
            x,
            y,
            yerr=r.capability_se,
            fmt="x" if r.over_budget else "o",
            color=colors[r.family],
            mfc=face,
            capsize=3,
        )
        _label(ax, x, y, r.name)
    front = sorted((r for r in points if r.pareto), key=lambda r: r.peak_rss_gb or 0.0)
    line = [_point(r, r.capability) for r in front]
    ax.plot(
        [x for x, _ in line],
        [y for _, y in line],
        "--",
        color="0.4",
        label="Pareto front",
    )
    if budget_gb is not None:
        ax.axvline(budget_gb, color="C3", linestyle=":", label=f"budget {budget_gb:g} GB")
    # from the origin, so that the rays of equal capability per GB (the ranking) read as rays
    x_max = 1.15 * max([r.peak_rss_gb or 0.0 for r in points] + [budget_gb or 0.0]) or 1.0
    y_max = min(105.0, 1.15 * max((r.capability or 0) + (r.capability_se or 0) for r in points))
    ax.set(xlim=(0, x_max), ylim=(0, y_max or 10.0))
    per_gb = [r.capability_per_gb for r in points if r.capability_per_gb]
    _per_gb_rays(ax, x_max, y_max or 10.0, per_gb)
    ax.plot([], [], ":", color="0.6", label="equal capability per GB")
    if any(r.dominated_by for r in points):
        ax.plot([], [], "o", mfc="none", color="0.4", label="dominated")
    ax.set(
        title=title,
        xlabel="peak memory (GB, 10^9 bytes)",
        ylabel="capability (0-100, ± 1 SE)",
    )
    ax.legend(fontsize=8, loc="lower right")
    return Plot(key=key, title=title, png=_png(fig), has_data=True)


def speed_vs_memory(rows: Sequence[RankRow]) -> Plot:
    """Generation tokens/s (± 1 sample stddev) against peak GB."""
    key, title = "speed-memory", "Generation speed vs peak memory"
    points = [r for r in rows if r.measured and r.tg_ts is not None]
    if not points:
        return _empty(key, title, "no generation speed was measured")
    fig, ax = _figure()
    colors = _colors([r.family for r in points])
    for family in sorted(colors):
        mine = [r for r in points if r.family == family]
        xy = [_point(r, r.tg_ts) for r in mine]
        ax.errorbar(
            [x for x, _ in xy],
            [y for _, y in xy],
            yerr=[r.tg_stddev_ts or 0.0 for r in mine],
            fmt="o",
            capsize=3,
            color=colors[family],
            label=family,
        )
    for r in points:
        _label(ax, *_point(r, r.tg_ts), r.name)
    ax.set(title=title, xlabel="peak memory (GB)", ylabel="tg tokens/s (± 1 sd)")
    ax.legend(fontsize=8)
    return Plot(key=key, title=title, png=_png(fig), has_data=True)


def fidelity_points(
    records: Sequence[rec.ModelRecord], fidelity: Sequence[rec.FidelityResult]
) -> list[tuple[str, str, tuple]]:
    """(family, variant, (bits per weight, mean KLD)) for variants with both a record and an
    ok fidelity result in this run."""
    by_name = {r.variant.name: r for r in records}
    points = []
    for result in fidelity:
        record = by_name.get(result.variant)
        bpw = bits_per_weight(record) if record else None
        if record and bpw and result.kld_mean is not None:
            points.append((record.variant.family, result.variant, (bpw, result.kld_mean)))
    return points


def kld_vs_bits(
    records: Sequence[rec.ModelRecord], fidelity: Sequence[rec.FidelityResult] = ()
) -> Plot:
    """Mean KLD against the reference, by bits per weight, one line per model family."""
    key, title = "kld-bpw", "KLD vs bits per weight"
    points = fidelity_points(records, fidelity)
    if not points:
        return _empty(key, title, "no fidelity data in this run")
    fig, ax = _figure()
    for family in sorted({f for f, _, _ in points}):
        mine = sorted(p for f, _, p in points if f == family)
        ax.plot([b for b, _ in mine], [k for _, k in mine], "o-", label=family)
    for _, name, (bpw, kld) in points:
        _label(ax, bpw, kld, name)
    if all(k > 0 for _, _, (_, k) in points):
        ax.set_yscale("log")  # KLD spans orders of magnitude between 8 and 4 bits
    ax.set(title=title, xlabel="bits per weight", ylabel="mean KLD vs reference")
    ax.legend(fontsize=8)
    return Plot(key=key, title=title, png=_png(fig), has_data=True)


def speed_vs_threads(series: Mapping[str, Sequence[ThreadPoint]]) -> Plot:
    """pp and tg tokens/s against thread count, one line per variant (this host's runs)."""
    key, title = "speed-threads", "Speed vs threads"
    lines = {name: pts for name, pts in series.items() if len({p.threads for p in pts}) > 1}
    if not lines:
        used = ", ".join(str(n) for n in sorted({p.threads for v in series.values() for p in v}))
        return _empty(
            key,
            title,
            f"only one thread count measured ({used or 'none'}); bench "
            "with --threads 1,2,4 (a sweep) to see scaling",
        )
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, attr, label in ((axes[0], "pp", "pp tokens/s"), (axes[1], "tg", "tg tokens/s")):
        for name, pts in sorted(lines.items()):
            got = [p for p in pts if getattr(p, f"{attr}_ts") is not None]
            ax.errorbar(
                [p.threads for p in got],
                [getattr(p, f"{attr}_ts") for p in got],
                yerr=[getattr(p, f"{attr}_stddev_ts") or 0.0 for p in got],
                fmt="o-",
                capsize=3,
                label=name,
            )
        ax.set(xlabel="threads", ylabel=label)
        ax.set_xticks(sorted({p.threads for pts in lines.values() for p in pts}))
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    return Plot(key=key, title=title, png=_png(fig), has_data=True)


def all_plots(
    rows: Sequence[RankRow],
    records: Sequence[rec.ModelRecord],
    threads: Mapping[str, Sequence[ThreadPoint]],
    *,
    budget_gb: float | None = None,
    fidelity: Sequence[rec.FidelityResult] = (),
) -> list[Plot]:
    """Every plot of a report, in the order the HTML page shows them; those without data
    (`has_data` False) carry only the reason, and are not drawn."""
    return [
        capability_vs_memory(rows, budget_gb=budget_gb),
        speed_vs_memory(rows),
        kld_vs_bits(records, fidelity),
        speed_vs_threads(threads),
    ]
