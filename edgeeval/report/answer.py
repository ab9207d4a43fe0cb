"""The answer first, then the evidence: which variant to run per budget (or memory class) and
how sure that is; settled and unsettled pairs; paired vs unpaired SEs; power per task.

Each section is built once as plain data (`Section`: a title, sentences, tables of text) and
written as Markdown here and as HTML by report.html, so both pages say the same thing.

The recommendation within a memory limit is the most capable variant whose peak fits (on a
draw, the smaller); "how sure" is its comparison with the next most capable one that fits:
settled when the difference is at least 1.96 of its SEs (paired where the items are shared).
Without a budget the limits are memory classes (0.5, 1, 2, 4, ... GB), one sentence for each
class whose answer differs from the class below.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from edgeeval.report.cells import md
from edgeeval.report.paired import NO_DIFFERENCE, PAIRED, Pair, Pairing, TaskPair, oriented
from edgeeval.report.summarize import RankRow
from edgeeval.stats import TARGET_POINTS, items_needed, min_detectable
from edgeeval.text import safe_text

NO_SPREAD = "no item differed"
SAME = "the same answer on every shared item: more or other items are needed to tell them apart"
CLASSES_GB = (0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
Table = tuple[tuple[str, ...], list[tuple[str, ...]]]


@dataclass
class Section:
    """A titled block of sentences and tables, rendered alike in Markdown and HTML."""

    title: str
    sentences: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def _pm(value: float, se: float) -> str:
    return f"{value + 0.0:.1f} ± {se:.1f}"  # + 0.0: never "-0.0"


def _p(p: float) -> str:
    """A p-value as shown (Markdown escapes '<', so small ones read "≤ 0.001").

    >>> _p(0.0412), _p(0.00001)
    ('0.0412', '≤ 0.001')
    """
    return "≤ 0.001" if p < 0.001 else f"{p:.3g}"


def _shown(p: float) -> str:
    """ "= 0.0412" or "≤ 0.001", after a "p"."""
    text = _p(p)
    return text if text.startswith("≤") else "= " + text


def _detectable(se: float, digits: int = 1) -> str:
    """The minimum detectable difference, or NO_SPREAD when no item differed: a paired SE of 0
    says nothing about the difference these items could detect.

    >>> _detectable(1.0), _detectable(0.0)
    ('2.8', 'no item differed')
    """
    return f"{min_detectable(se):.{digits}f}" if se > 0 else NO_SPREAD


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _classes(measured: Sequence[RankRow]) -> list[float]:
    """The memory classes that hold at least one variant, up to the first that holds all."""
    peaks = [r.peak_rss_gb or 0.0 for r in measured]
    out = []
    for limit in CLASSES_GB:
        if any(p <= limit for p in peaks):
            out.append(float(limit))
        if all(p <= limit for p in peaks):
            break
    return out or [max(peaks)]


def _sure(best: RankRow, runner: RankRow, pair: Pair | None) -> str:
    if pair is None:
        return f"{runner.name} was measured on another host: not compared"
    p = oriented(pair, best.name)
    verb = "leads" if p.diff > 0 else "trails" if p.diff < 0 else "ties with"
    lead = (
        f"it {verb} {runner.name} {'at' if not p.diff else 'by'} {_pm(abs(p.diff), p.se)} points "
        f"({p.method} SE{'' if p.method == PAIRED else ': ' + p.reason}, p {_shown(p.p_value)})"
    )
    if p.settled:
        return lead + ": settled"
    smaller = (runner.peak_rss_gb or 0) < (best.peak_rss_gb or 0)
    if p.equal:
        tail = f"; {runner.name} is as good and smaller" if smaller else ""
        return lead + f": {_equal(p)}{tail}"
    if not p.se and not p.diff:
        return lead + f": not settled, {SAME}"
    more = p.items_to_settle
    tail = f"; {runner.name} is as good within noise and smaller" if smaller else ""
    return lead + f": not settled{_need(p, more)}{tail}"


def answer_for(limit: float, measured: Sequence[RankRow], pairing: Pairing) -> tuple[str, str]:
    """(the recommended row's name or "", the sentence) for one memory limit in GB."""
    fit = [r for r in measured if (r.peak_rss_gb or 0.0) <= limit]
    if not fit:
        smallest = min(r.peak_rss_gb or 0.0 for r in measured)
        return (
            "",
            f"Within {limit:g} GB: no variant fits (the smallest peaks at {smallest:.2f} GB).",
        )
    ordered = sorted(fit, key=lambda r: (-(r.capability or 0.0), r.peak_rss_gb or 0.0, r.name))
    best = ordered[0]
    head = (
        f"Within {limit:g} GB, run **{best.name}** (capability "
        f"{_pm(best.capability or 0.0, best.capability_se or 0.0)}, peak "
        f"{best.peak_rss_gb or 0.0:.2f} GB)"
    )
    if len(ordered) == 1:
        return best.name, head + ": the only measured variant that fits."
    return best.name, head + ": " + _sure(
        best, ordered[1], pairing.between(best.name, ordered[1].name)
    ) + "."


def answer_section(rows: Sequence[RankRow], pairing: Pairing, budget_gb: float | None) -> Section:
    """One sentence per budget (or memory class), then the settled and unsettled pairs."""
    section = Section("The answer")
    measured = [r for r in rows if r.measured]
    if not measured:
        section.sentences.append("No variant was measured: there is nothing to recommend.")
        return section
    hosts = sorted({r.host_id for r in measured})
    for host in hosts:
        on_host = [r for r in measured if r.host_id == host]
        prefix = f"On host {host}: " if len(hosts) > 1 else ""
        previous = None
        for limit in [budget_gb] if budget_gb else _classes(on_host):
            name, sentence = answer_for(limit, on_host, pairing)
            if name != previous or budget_gb:
                section.sentences.append(prefix + sentence)
            previous = name
    settled = [p for p in pairing.pairs if p.settled]
    equal = [p for p in pairing.pairs if p.equal]
    unsettled = [p for p in pairing.pairs if not p.settled and not p.equal]
    if pairing.pairs:
        groups = [
            ("Settled pairs", settled),
            (f"Pairs equal within {TARGET_POINTS:g} points", equal),
        ]
        for label, group in [*groups, ("Unsettled pairs", unsettled)]:
            if group or label != groups[1][0]:
                listed = "; ".join(_pair_line(p) for p in group) or "none"
                section.sentences.append(
                    f"{label} ({len(group)} of {len(pairing.pairs)}): {listed}."
                )
    if pairing.note:
        section.sentences.append(pairing.note)
    return section


def _ahead_first(pair: Pair) -> Pair:
    """The pair with the more capable row as A (A - B >= 0)."""
    return oriented(pair, pair.a if pair.diff >= 0 else pair.b)


def _pair_line(pair: Pair) -> str:
    p = _ahead_first(pair)
    text = f"{p.a} vs {p.b}: {_pm(p.diff, p.se)} ({p.method})"
    if p.settled:
        return text + f", p {_shown(p.p_value)}"
    if p.equal:
        return text + f", {_equal(p)}"
    if not p.se and not p.diff:
        return text + f", {SAME}"
    return text + _need(p, p.items_to_settle)


def _equal(p: Pair) -> str:
    """ "equal within 2 points (p = 0.0014)": the pair's TOST verdict, in words."""
    same = "; the same answer on every shared item" if not p.se and not p.diff else ""
    return f"equal within {TARGET_POINTS:g} points (p {_shown(p.equal_p or 0.0)}){same}"


def _need(p: Pair, more: int | None) -> str:
    """What would settle an unsettled pair: more items for the difference seen, or, when
    none was seen, the items a TARGET_POINTS difference would need."""
    if more:
        return f", about {more:,} more items would settle it"
    if abs(p.diff) < NO_DIFFERENCE and p.items_for_target:
        return (
            f", no difference seen; about {p.items_for_target:,} items would detect "
            f"{TARGET_POINTS:g} points"
        )
    return ""


#: What the comparison tables' columns mean (the section's first sentence).
COMPARISON_KEY = (
    "Capability A - B in points, with the paired SE (over the items both answered; the "
    "ranking's ties and dominance use it) and the unpaired sqrt(se_A^2 + se_B^2). "
    f"'equal within {TARGET_POINTS:g} (p)': for a pair not apart beyond noise, the p of "
    f"two one-sided tests that the two differ by less than {TARGET_POINTS:g} points "
    "(TOST; below 0.05 they are equal within that, not merely too few items apart; the SE "
    "floored at the least one such a gap can have on these items). "
    "'detectable': the smallest difference found with 80 % power at 5 % two-sided; "
    f"'items for {TARGET_POINTS:g} points': the items (same task mix) that a "
    f"{TARGET_POINTS:g}-point difference would need. Per task, A - B is in points of "
    "accuracy, with McNemar's exact test on the items only one of the two got right; "
    "'clustered': the task's paired SE is cluster-robust over the clusters its shared "
    "items fall in (subjects, pages), '-' where it is not."
)
PAIR_HEAD = (
    "A",
    "B",
    "A - B",
    "paired SE",
    "unpaired SE",
    "SE used",
    "p",
    f"equal within {TARGET_POINTS:g} (p)",
    "detectable",
    f"items for {TARGET_POINTS:g} points",
    "why unpaired",
)
TASK_HEAD = (
    "A",
    "B",
    "task",
    "n",
    "A - B",
    "paired SE",
    "unpaired SE",
    "clustered",
    "only A right",
    "only B right",
    "McNemar p",
)


def comparison_section(pairing: Pairing) -> Section:
    """Every pair with both SEs of its capability difference, which one the ranking used,
    and the per-task paired differences with McNemar's exact test."""
    section = Section("Comparisons: paired vs unpaired standard errors")
    if pairing.pairs:
        section.sentences.append(COMPARISON_KEY)
    else:
        section.sentences.append("One measured variant per host: no pair to compare.")
    if pairing.cluster_note:
        section.sentences.append(pairing.cluster_note)
    if not pairing.pairs:
        return section
    ahead = [_ahead_first(p) for p in pairing.pairs]
    section.tables.append((PAIR_HEAD, [_pair_cells(p) for p in ahead]))
    tasks = [_task_cells(p, t) for p in ahead for t in p.tasks]
    if tasks:
        section.tables.append((TASK_HEAD, tasks))
    return section


def _pair_cells(pair: Pair) -> tuple[str, ...]:
    """One row of the pairs table (PAIR_HEAD)."""
    paired = pair.method == PAIRED
    return (
        pair.a,
        pair.b,
        f"{pair.diff:.2f}",
        f"{pair.se:.2f}" if paired else "-",
        f"{pair.se_unpaired:.2f}",
        pair.method,
        _p(pair.p_value),
        "-" if pair.settled or pair.equal_p is None else _p(pair.equal_p),
        _detectable(pair.se, 2),
        _count(pair.items_for_target),
        pair.reason,
    )


def _task_cells(pair: Pair, t: TaskPair) -> tuple[str, ...]:
    """One row of the per-task table (TASK_HEAD)."""
    return (
        pair.a,
        pair.b,
        t.task,
        str(t.n),
        f"{t.diff:.1f}",
        f"{t.se:.2f}",
        f"{t.se_unpaired:.2f}",
        t.clustering.removeprefix("clustered ") or "-",
        str(t.only_a),
        str(t.only_b),
        _p(t.p_mcnemar),
    )


def power_section(pairing: Pairing) -> Section:
    """Per task and for capability: the smallest detectable difference (80 % power, 5 %
    two-sided) at this run's item count, the largest over the pairs, and the items a
    TARGET_POINTS difference would need."""
    section = Section("Power: what this many items can tell apart")
    if not pairing.pairs:
        section.sentences.append("One measured variant per host: no pair to size.")
        return section
    section.sentences.append(
        "The largest over the pairs (the SE used by each pair): a difference below "
        "'detectable' may be real yet read as a tie; 'items needed' is the item count that "
        f"would detect {TARGET_POINTS:g} points."
    )
    if any(t.n_clusters for p in pairing.pairs for t in p.tasks):
        section.sentences.append(
            "Where a task's SE is clustered, 'items needed' scales it as if the extra items "
            "came in more clusters of the same sizes; more items within the same clusters "
            "(subjects, pages) narrow it less."
        )
    by_task: dict[str, list[tuple[int, float]]] = {}
    for p in pairing.pairs:
        for t in p.tasks:
            by_task.setdefault(t.task, []).append((t.n, t.se))
    body: list[tuple[str, ...]] = []
    for task, seen in sorted(by_task.items()):
        n, se = max(seen, key=lambda x: x[1])
        body.append((task, str(n), _detectable(se), _count(items_needed(se, n, TARGET_POINTS))))
    worst = max(pairing.pairs, key=lambda p: p.se)
    body.append(
        (
            "capability",
            str(worst.n_items),
            _detectable(worst.se),
            _count(worst.items_for_target),
        )
    )
    section.tables.append(
        (
            ("task", "items", "detectable (points)", f"items needed for {TARGET_POINTS:g} points"),
            body,
        )
    )
    return section


def sections_markdown(sections: Sequence[Section]) -> list[str]:
    """The sections as Markdown lines."""
    out: list[str] = []
    for s in sections:
        out += [f"## {s.title}", ""]
        out += [f"- {md(x, 2000)}" if s.title == "The answer" else md(x, 2000) for x in s.sentences]
        for head, body in s.tables:
            out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            out += ["| " + " | ".join(md(c, 300) for c in row) + " |" for row in body]
        out.append("")
    return out


def _bold(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escape(safe_text(text, 2000)))


def sections_html(sections: Sequence[Section]) -> str:
    """The sections as HTML (plain tables; names and reasons escaped)."""
    out = []
    for s in sections:
        out.append(f"<h2>{escape(s.title)}</h2>")
        if s.title == "The answer":
            out.append("<ul>" + "".join(f"<li>{_bold(x)}</li>" for x in s.sentences) + "</ul>")
        else:
            out += [f"<p>{_bold(x)}</p>" for x in s.sentences]
        for head, body in s.tables:
            cells = "".join(f"<th>{escape(h)}</th>" for h in head)
            rows = "".join(
                "<tr>" + "".join(f"<td>{escape(safe_text(c, 300))}</td>" for c in row) + "</tr>"
                for row in body
            )
            out.append(
                f'<div class="scroll"><table><thead><tr>{cells}</tr></thead>'
                f"<tbody>{rows}</tbody></table></div>"
            )
    return "".join(out)
