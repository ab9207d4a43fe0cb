"""Energy per token, per variant, from the speed tests' energy fields (engine/energy.py).

For each variant's headline prompt and generation tests (summarize.main_speed): joules per
prompt token, joules per generated token, and tokens per joule, with the method and the
domains measured. Where the host exposed no counter the section says "not available here" and
why, never 0 J; runs stored before energy was read get no section at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeeval import records as rec
from edgeeval.report.cells import md
from edgeeval.report.summarize import main_speed


def joules_per_token(speed: rec.SpeedResult | None) -> float | None:
    """Joules per token of a test over all its timed repetitions; None when not measured.

    >>> s = rec.SpeedResult("tg32", 0, 32, 0, (1, 1), (1.0, 1.0), 1.0, 0.0, energy_j=3.2)
    >>> joules_per_token(s)
    0.05
    """
    if speed is None or speed.energy_j is None or not speed.tokens_timed:
        return None
    return speed.energy_j / speed.tokens_timed


def energy_rows(records: Sequence[rec.ModelRecord]) -> list[dict[str, object]]:
    """One row per measured variant: J per prompt token, J per generated token, tokens/J."""
    rows: list[dict[str, object]] = []
    for record in records:
        pp, tg = main_speed(record, "pp"), main_speed(record, "tg")
        if pp is None and tg is None:
            continue
        j_pp, j_tg = joules_per_token(pp), joules_per_token(tg)
        either = tg if tg is not None and tg.energy_method else pp
        rows.append(
            {
                "variant": record.variant.name,
                "j_per_prompt_token": j_pp,
                "j_per_gen_token": j_tg,
                "prompt_tokens_per_j": 1 / j_pp if j_pp else None,
                "gen_tokens_per_j": 1 / j_tg if j_tg else None,
                "method": either.energy_method if either else "",
                "domains": either.energy_domains if either else "",
            }
        )
    return rows


def _cell(value: object, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def energy_markdown(records: Sequence[rec.ModelRecord]) -> list[str]:
    """The "Energy" section's lines; [] when no record carries an energy field at all."""
    rows = [r for r in energy_rows(records) if r["method"]]
    if not rows:
        return []
    measured = [r for r in rows if r["j_per_gen_token"] is not None or r["j_per_prompt_token"]]
    lines = ["## Energy", ""]
    if not measured:
        return [*lines, f"Energy: {md(rows[0]['method'], 400)}.", ""]
    lines += [
        "Read around the timed decode calls only (not the warmup or the depth refill), summed "
        "over the repetitions; the domains are what the counters cover (a package includes its "
        "cores; the rest of the machine is not counted).",
        "",
        "| variant | J / prompt token | J / generated token | prompt tok / J | gen tok / J "
        "| method | domains |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {md(r['variant'])} | {_cell(r['j_per_prompt_token'], '.4g')} "
            f"| {_cell(r['j_per_gen_token'], '.4g')} | {_cell(r['prompt_tokens_per_j'], '.1f')} "
            f"| {_cell(r['gen_tokens_per_j'], '.1f')} | {md(r['method'], 200)} "
            f"| {md(r['domains'] or '-', 200)} |"
        )
    return [*lines, ""]
