"""A run's report as one self-contained HTML page: inline CSS and JS, plots as data URIs.

The page needs no network to open. Every table is sortable (click a header; click again to
reverse). Numeric cells carry their raw value in `data-sort`, so "64.4 ± 12.6" sorts as 64.4,
and missing values ("-") stay at the bottom either way.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from html import escape, unescape
from typing import TYPE_CHECKING, Any

from edgeeval import records as rec
from edgeeval.report.fidelity import fidelity_markdown
from edgeeval.report.mdhtml import markdown_html
from edgeeval.report.plots import Plot
from edgeeval.report.protocols import COLUMNS, PROTOCOL_NOTE, protocol_rows
from edgeeval.report.sections import (
    failed_markdown,
    host_markdown,
    memory_markdown,
    preamble_markdown,
)
from edgeeval.report.summarize import HostGroup, RankRow, rank_label, verdict
from edgeeval.settings import GB
from edgeeval.text import safe_text

if TYPE_CHECKING:  # render imports this module when it writes a report
    from edgeeval.report.render import ReportMeta

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;
max-width:1320px;padding:0 16px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 6px}.sub{color:#555;margin:0 0 16px}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;margin:6px 0 10px;
font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:4px 7px;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
th{background:#f4f5f7;cursor:pointer;user-select:none}
th:hover{background:#e8eaee}td.t,th.t{text-align:left}td.wrap{white-space:normal;min-width:16em}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.dominated td,tr.unranked td{color:#777}tr.front td.name{font-weight:600}
th.key,td.key{background:#eef4ff}td.key{font-weight:600}.legend{color:#444;font-size:13px}
.legend b.grey{color:#777;font-weight:400}nav.toc{font-size:13px;margin:0 0 8px}
nav.toc a{margin-right:10px;white-space:nowrap}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:12px}
figure{margin:0;border:1px solid #e5e5e5;border-radius:6px;padding:8px}
figure img{width:100%;height:auto}figcaption{color:#555;font-size:13px}
code{font-size:12px;word-break:break-all}.notes p{max-width:960px}
"""

# Sorting: numbers by data-sort, text by its content; blank keys last in both directions.
_JS = """
(function () {
  function key(row, col) {
    var cell = row.cells[col];
    if (!cell) { return {blank: true}; }
    var raw = cell.getAttribute("data-sort");
    if (raw === null) { return {text: cell.textContent.trim(), blank: false}; }
    return raw === "" ? {blank: true} : {num: parseFloat(raw), blank: false};
  }
  function compare(a, b, dir) {
    if (a.blank || b.blank) { return (a.blank ? 1 : 0) - (b.blank ? 1 : 0); }
    if (a.num !== undefined && b.num !== undefined) { return (a.num - b.num) * dir; }
    return String(a.text).localeCompare(String(b.text)) * dir;
  }
  function sortBy(th) {
    var table = th.closest("table"), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) { return compare(key(a, col), key(b, col), dir); });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
  });
})();
"""

Cell = tuple[str, float | None | str]  # (shown text, sort key; None = text sort)
Column = tuple[str, Callable[[RankRow], Cell]]


def _num(value: float | None, digits: int = 2) -> Cell:
    return ("-", "") if value is None else (f"{value:.{digits}f}", value)


def _pm(mean: float | None, sd: float | None, digits: int = 1) -> Cell:
    return ("-", "") if mean is None else (f"{mean:.{digits}f} ± {(sd or 0):.{digits}f}", mean)


def _rank(row: RankRow) -> Cell:
    return rank_label(row), "" if row.rank is None else row.rank


# The ranked metric (RANKED) comes right after the variant, so a laptop-width window shows it
# without scrolling sideways (tests/test_report_html measures that at 800 px).
RANKED = "cap/GB"
RANK_COLUMNS: list[Column] = [
    ("rank", _rank),
    ("variant", lambda r: (r.name, None)),
    (RANKED, lambda r: _pm(r.capability_per_gb, r.capability_per_gb_se)),
    ("capability", lambda r: _pm(r.capability, r.capability_se)),
    ("peak GB", lambda r: _num(r.peak_rss_gb, 3)),
    ("tg t/s", lambda r: _pm(r.tg_ts, r.tg_stddev_ts)),
    ("pp t/s", lambda r: _pm(r.pp_ts, r.pp_stddev_ts)),
    ("status", lambda r: (verdict(r), None)),
    ("file GB", lambda r: _num(r.file_gb, 3)),
    ("cap/file GB", lambda r: _num(r.capability_per_file_gb, 1)),
    ("load s", lambda r: _num(r.load_s)),
    ("family", lambda r: (r.family, None)),
    ("quant", lambda r: (r.quant, None)),
]
LEGEND = (
    f"Ranked by <b>{RANKED}</b> (capability per GB of peak memory; higher is better). "
    "<b>Bold name</b>: on the Pareto front, no other variant is both smaller and more "
    'capable. <b class="grey">Grey row</b>: dominated (another variant is as capable, beyond '
    "noise, with no more memory), over the memory budget, or failed; the status column says "
    "which. Rank <b>=2</b>: a shared rank (tied within noise); <b>-</b>: not ranked. "
    "<b>±</b>: standard error (capability, cap/GB) or sample standard deviation (speed). "
    '<a href="#how-to-read-this">How to read this</a> gives the formulas.'
)


def _td(cell: Cell, *, kind: str = "") -> str:
    """A cell; text cells (no sort key) are left-aligned, `kind` adds "name", "wrap" or
    "key" (the ranked metric)."""
    text, sort = cell
    classes = " ".join(filter(None, ["t" if sort is None else "", kind]))
    cls = f' class="{classes}"' if classes else ""
    data = "" if sort is None else f' data-sort="{escape(str(sort))}"'
    return f"<td{cls}{data}>{escape(safe_text(text, 500))}</td>"


def _row_class(row: RankRow) -> str:
    if not row.measured or row.over_budget:
        return "unranked"
    return "dominated" if row.dominated_by else "front"


def sortable_table(
    table_id: str,
    headers: Sequence[tuple[str, bool]],
    body: Sequence[tuple[str, Sequence[str]]],
    key: str = "",
) -> str:
    """A <table class="sortable">; headers are (label, is_text), body rows (class, <td>s);
    the header named `key` is marked as the ranked metric."""
    head = "".join(
        f"<th{' class=t' if is_text else ' class=key' if h == key else ''}>{escape(h)}</th>"
        for h, is_text in headers
    )
    rows = "".join(f'<tr class="{cls}">{"".join(cells)}</tr>' for cls, cells in body)
    return (
        f'<div class="scroll"><table class="sortable" id="{escape(table_id)}"><thead>'
        f"<tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
    )


#: Ranked by capability per joule (--rank-by capability_per_joule): that column takes the
#: ranked place, the generated tokens per joule beside it.
RANKED_J = "cap/J"
J_COLUMNS: list[Column] = [
    (RANKED_J, lambda r: _pm(r.capability_per_joule, r.capability_per_joule_se)),
    ("gen tok/J", lambda r: _num(r.gen_tokens_per_j, 1)),
]
LEGEND_J = (
    f"Ranked by <b>{RANKED_J}</b> (capability per joule: capability x generated tokens per "
    "joule of the tg test; higher is better). Rows without an energy figure are listed "
    "unranked, never as 0. <b>±</b>: standard error (energy taken as exact). "
    '<a href="#how-to-read-this">How to read this</a> gives the formulas.'
)


def ranking_html(table_id: str, rows: Sequence[RankRow], *, per_joule: bool = False) -> str:
    """The ranking as a sortable table, one row per variant; `per_joule`: ranked by
    capability per joule (its column in the ranked place)."""
    columns = [*RANK_COLUMNS[:2], *J_COLUMNS, *RANK_COLUMNS[2:]] if per_joule else RANK_COLUMNS
    key = RANKED_J if per_joule else RANKED
    headers = [(h, h in ("variant", "family", "quant", "status")) for h, _ in columns]
    kinds = {"variant": "name", "status": "wrap", key: "key"}
    body = [(_row_class(r), [_td(fn(r), kind=kinds.get(h, "")) for h, fn in columns]) for r in rows]
    return sortable_table(table_id, headers, body, key=key)


def tasks_html(rows: Sequence[RankRow], tasks: Sequence[str]) -> str:
    """Accuracy per task (%, ± SE) as a sortable table."""
    headers = [("variant", True)] + [(t, False) for t in tasks]
    body = []
    for r in rows:
        cells = [_td((r.name, None), kind="name")]
        cells += [
            _td(
                _pm(100 * r.task_acc[t], 100 * r.task_acc_se.get(t, 0.0))
                if t in r.task_acc
                else ("-", "")
            )
            for t in tasks
        ]
        body.append((_row_class(r), cells))
    return sortable_table("tasks", headers, body)


def _text_or_number(text: str) -> Cell:
    try:
        return text, float(text)
    except ValueError:
        return text, None


def protocols_html(records: Sequence[rec.ModelRecord]) -> str:
    """How each task was asked (protocol, thinking, what was not counted); "" for records
    made before protocols were recorded."""
    rows = protocol_rows(records)
    if not rows:
        return ""
    headers = [(c, c in ("variant", "task", "protocol", "thinking")) for c in COLUMNS]
    body = [("", [_td(_text_or_number(r[c]), kind="name" if c == "variant" else "")
                  for c in COLUMNS]) for r in rows]  # fmt: skip
    return f"<h2>How each task was asked</h2><p>{escape(PROTOCOL_NOTE)}</p>" + sortable_table(
        "protocols", headers, body
    )


def plots_html(plots: Sequence[Plot]) -> str:
    """Each plot with data as an <img> with a base64 PNG data URI (the same bytes as the .png
    file); the plots without data in one sentence that says why."""
    figures = []
    for p in (p for p in plots if p.has_data):
        data = base64.b64encode(p.png).decode("ascii")
        caption = escape(p.title + (f": {p.note}" if p.note else ""))
        figures.append(
            f'<figure><img id="plot-{escape(p.key)}" alt="{escape(p.title)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{caption} '
            f"(plot-{escape(p.key)}.png)</figcaption></figure>"
        )
    missing = "; ".join(f"{escape(p.title)} ({escape(p.note)})" for p in plots if not p.has_data)
    return (
        '<div class="plots">'
        + "".join(figures)
        + "</div>"
        + (
            f'<p id="plots-not-drawn">Not drawn, for lack of data: {missing}.</p>'
            if missing
            else ""
        )
    )


def hosts_html(groups: Sequence[HostGroup]) -> str:
    """One ranking per host, for the run's variants as measured on several machines."""
    parts = [
        "<h2>By host</h2><p>The same files with the same settings, measured on each "
        "host in the local store (latest ok record per host and variant).</p>"
    ]
    for index, g in enumerate(groups, 1):
        h = g.host
        parts.append(
            f"<h3>{escape(h.hostname)} ({escape(h.host_id)}): {escape(h.cpu_model)}, "
            f"{h.cores_physical} cores, {h.ram_bytes / GB:.1f} GB RAM, "
            f"{escape(h.backend)}; runs {escape(', '.join(g.run_ids))}</h3>"
        )
        parts.append(ranking_html(f"host-{index}", g.rows))
    return "".join(parts)


_VARIANT_COLUMNS = [
    ("variant", "variant", 0),
    ("quant", "quant", 0),
    ("file GB", "file_gb", 3),
    ("bits/weight", "bits_per_weight", 2),
    ("tg t/s", "tg_ts", 1),
    ("capability", "capability", 1),
    ("mean KLD", "kld_mean", 5),
    ("ln PPL ratio", "ln_ppl_ratio", 4),
    ("same top p %", "same_top_pct", 2),
    ("reference", "reference", 0),
]


def variants_html(table: Sequence[dict[str, Any]]) -> str:
    """Size, bits per weight, speed, capability and fidelity per variant, sortable."""
    if not table:
        return ""
    headers = [(label, digits == 0) for label, _, digits in _VARIANT_COLUMNS]
    body = []
    for v in table:
        cells = [
            _td((str(v[key]), None)) if digits == 0 else _td(_num(v[key], digits))
            for _, key, digits in _VARIANT_COLUMNS
        ]
        body.append(("front", cells))
    return (
        "<h2>Variants: size, bits per weight, speed, accuracy and fidelity</h2>"
        + sortable_table("variants", headers, body)
    )


def _with_ids(body: str) -> tuple[str, list[tuple[str, str]]]:
    """`body` with an id on every <h2> (its title, slugged as GitHub slugs Markdown headings,
    so "#how-to-read-this" works in report.md and here), and the (id, title) list."""
    found: list[tuple[str, str]] = []

    def add_id(m: re.Match[str]) -> str:
        title = re.sub(r"<[^>]+>", "", m.group(1))
        base = re.sub(r"[^\w\- ]", "", unescape(title).lower()).strip().replace(" ", "-")
        slug, n = base, 1
        while slug in {s for s, _ in found}:  # the same title twice: -2, -3, ...
            n += 1
            slug = f"{base}-{n}"
        found.append((slug, title))
        return f'<h2 id="{escape(slug)}">{m.group(1)}</h2>'

    return re.sub(r"<h2>(.*?)</h2>", add_id, body), found


def _toc(found: Sequence[tuple[str, str]]) -> str:
    links = " ".join(f'<a href="#{escape(slug)}">{title}</a>' for slug, title in found)
    return f'<nav class="toc" aria-label="sections">Sections: {links}</nav>'


def render_html(
    rows: Sequence[RankRow],
    records: Sequence[rec.ModelRecord],
    meta: ReportMeta,
    plots: Sequence[Plot],
    *,
    tasks: Sequence[str],
    notes: Sequence[str],
    host_groups: Sequence[HostGroup] = (),
    variants: Sequence[dict[str, Any]] = (),
    extra: str = "",
    first: str = "",
    fidelity: Sequence[rec.FidelityResult] = (),
) -> str:
    """The whole page as a string: every section of report.md, with a list of links to them
    at the top. `notes` are the "how to read this" paragraphs; `extra` is further sections'
    HTML (comparisons, the memory-per-context table), placed after the task table; `first`
    (the answer) comes before the ranking; `fidelity` gives the quant fidelity section."""
    run_id = escape(meta.run_id)
    budget = meta.budget_gb
    per_joule = meta.rank_by == "capability_per_joule"
    sub = f"{len(rows)} variant{'' if len(rows) == 1 else 's'}" + (
        f"; memory budget {budget:g} GB" if budget else ""
    )
    body = [
        first,
        markdown_html("\n".join(preamble_markdown(meta, records))),
        f"<h2>Ranking by {RANKED_J if per_joule else RANKED}</h2>",
        f'<p class="legend" id="legend">{LEGEND_J if per_joule else LEGEND}</p>',
        ranking_html("ranking", rows, per_joule=per_joule),
        "<h2>Plots</h2>",
        plots_html(plots),
        "<h2>Accuracy per task (%, ± standard error)</h2>",
        tasks_html(rows, tasks),
        extra,
        protocols_html(records),
        markdown_html("\n".join(memory_markdown(records, kv=False))),
        variants_html(variants),
        markdown_html(fidelity_markdown(fidelity)),
        hosts_html(host_groups) if host_groups else "",
        markdown_html("\n".join(failed_markdown(rows, records))),
        '<h2>How to read this</h2><div class="notes">'
        + "".join(f"<p>{escape(n)}</p>" for n in notes)
        + "</div>",
        markdown_html("\n".join(host_markdown(records))),
    ]
    text, found = _with_ids("".join(body))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width,initial-scale=1"><title>edgeeval {run_id}</title>'
        f"<style>{_CSS}</style></head><body><h1>edgeeval report — run {run_id}</h1>"
        f"<p class=sub>{escape(sub)}. Click a column header to sort.</p>{_toc(found)}"
        f"{text}<script>{_JS}</script></body></html>\n"
    )
