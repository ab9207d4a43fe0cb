"""The fleet report: one run's variants on every host that measured them, side by side, and
which variant to ship to which device.

Built from stored records only (the run's own, plus the store's records of the same files and
settings from other runs or `edgeeval import`), grouped by host fingerprint. On each host the
latest ok record of a file wins, and the run's own records win over older ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeeval import records as rec
from edgeeval.report.render import stored_records
from edgeeval.report.summarize import RankRow, rank_label, rank_rows
from edgeeval.settings import GB
from edgeeval.store import runs as store
from edgeeval.text import safe_text

FLEET_FILE = "fleet.md"


@dataclass(frozen=True)
class Device:
    """One host of the fleet: its fingerprint, its rows ranked under its own memory."""

    host: rec.HostInfo
    rows: list[RankRow]

    @property
    def memory_gb(self) -> float:
        return self.host.ram_bytes / GB

    @property
    def best(self) -> RankRow | None:
        """The top-ranked variant that fits in this host's memory, if any."""
        return next((r for r in self.rows if r.rank == 1), None)


def _latest(records: Sequence[rec.ModelRecord]) -> list[rec.ModelRecord]:
    return sorted(records, key=lambda r: (r.status == rec.STATUS_OK, r.started_at))


def fleet_devices(
    run_records: Sequence[rec.ModelRecord], stored: Sequence[rec.ModelRecord] = ()
) -> list[Device]:
    """Every host that measured the run's files with the run's settings, each ranked by
    capability per GB within its own memory (sorted by hostname, then host id)."""
    wanted = {(r.variant.sha256, r.settings.key()) for r in run_records if r.variant.sha256}
    same = [r for r in stored if (r.variant.sha256, r.settings.key()) in wanted]
    latest: dict[tuple[str, str], rec.ModelRecord] = {}
    for r in [*_latest(same), *_latest(run_records)]:
        latest[(r.host.host_id, r.variant.sha256 or r.variant.name)] = r
    hosts: dict[str, list[rec.ModelRecord]] = {}
    for r in latest.values():
        hosts.setdefault(r.host.host_id, []).append(r)
    devices = [
        Device(rs[0].host, rank_rows(rs, budget_gb=rs[0].host.ram_bytes / GB or None))
        for rs in hosts.values()
    ]
    return sorted(devices, key=lambda d: (d.host.hostname, d.host.host_id))


def _cell(row: RankRow | None) -> str:
    if row is None:
        return "-"
    if not row.measured:
        return safe_text(row.status, 40)
    per_gb = f"{row.capability_per_gb:.3f}/GB" if row.capability_per_gb is not None else "?"
    tg = f", tg {row.tg_ts:.1f} t/s" if row.tg_ts is not None else ""
    return f"{rank_label(row)}: {per_gb}{tg}"


def _name(device: Device) -> str:
    return f"{safe_text(device.host.hostname, 40)} ({device.host.host_id})"


def side_by_side(devices: Sequence[Device]) -> str:
    """Markdown: one line per variant, one column per host (rank: capability per GB, tg)."""
    variants = sorted({r.name for d in devices for r in d.rows})
    lines = [
        "| variant | " + " | ".join(_name(d) for d in devices) + " |",
        "|---" * (len(devices) + 1) + "|",
    ]
    for name in variants:
        cells = [_cell(next((r for r in d.rows if r.name == name), None)) for d in devices]
        lines.append(f"| {safe_text(name, 60)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def choice_table(devices: Sequence[Device]) -> str:
    """Markdown: for each host, the variant with the best capability per GB among those whose
    peak memory fits in the host's memory."""
    lines = [
        "| device | CPU / backend | memory GB | best variant | capability | peak GB "
        "| capability per GB | tg t/s | ranked |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for d in devices:
        best, h = d.best, d.host
        ranked = sum(r.rank is not None for r in d.rows)
        cpu = f"{safe_text(h.cpu_model, 40)} / {safe_text(h.backend, 10)}"
        if best is None:
            lines.append(f"| {_name(d)} | {cpu} | {d.memory_gb:.1f} | none fits | | | | | 0 |")
            continue
        lines.append(
            f"| {_name(d)} | {cpu} | {d.memory_gb:.1f} | {safe_text(best.name, 60)} "
            f"| {best.capability:.3f} | {best.peak_rss_gb:.2f} | {best.capability_per_gb:.3f} "
            f"| {'' if best.tg_ts is None else f'{best.tg_ts:.1f}'} | {ranked} |"
        )
    return "\n".join(lines)


def fleet_markdown(run_id: str, devices: Sequence[Device]) -> str:
    """The whole fleet report of a run."""
    if not devices:
        return f"# Fleet: run {run_id}\n\nNo records yet.\n"
    return "\n".join(
        [
            f"# Fleet: run {run_id}",
            "",
            f"{len(devices)} host(s). Each cell: rank on that host (capability per GB of peak "
            "memory, within the host's memory), and generation speed. A variant without "
            "memory (sharded accuracy only) is listed, not ranked.",
            "",
            "## Ranking per host, side by side",
            "",
            side_by_side(devices),
            "",
            "## Which variant for which device",
            "",
            choice_table(devices),
            "",
        ]
    )


def write_fleet(run: str, root: Path | None = None) -> tuple[Path, str]:
    """Write the run's fleet.md from the store; return (its path, the markdown)."""
    run_id = store.resolve_run(run, root)
    records = list(store.load_records(run_id, root))
    directory = store.run_dir(run_id, root)
    devices = fleet_devices(records, stored_records(directory.parent))
    text = fleet_markdown(run_id, devices)
    return store.write_atomic(directory / FLEET_FILE, text), text
