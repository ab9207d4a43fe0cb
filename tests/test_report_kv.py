"""The memory-per-context section (table, HTML, plot) from stored KV figures, ranking by the
peak estimated at another context length, and old records without the figures."""

from __future__ import annotations

import dataclasses
import json

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.cli.main import main
from edgeeval.metrics import kv_points
from edgeeval.report.render import render_run
from edgeeval.store import runs as store
from tests.builders import record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def layout(full: int, swa: int = 0, n_swa: int = 0) -> rec.KvCacheLayout:
    """A layout with its points at 512, 2048 (the run) and 32768."""
    base = rec.KvCacheLayout(full_bytes_per_cell=full, swa_bytes_per_cell=swa, n_swa=n_swa)
    return dataclasses.replace(base, points=kv_points(base, (512, 2048, 32768)))


def build(run_id: str, *, with_kv: bool = True) -> None:
    """Two variants with equal accuracy: 'small' (0.5 GB peak, a full-attention cache of 100 kB
    per token) and 'windowed' (0.8 GB peak; 3 kB full + 15 kB sliding-window layers per token,
    window 512, like Gemma 3 270M)."""
    root = settings.reports_dir()
    records = [
        record("small", peak_gb=0.5, acc=0.6, run_id=run_id),
        record("windowed", peak_gb=0.8, acc=0.6, run_id=run_id, family="gemma"),
    ]
    if with_kv:
        records = [
            dataclasses.replace(records[0], kv_cache=layout(100_000), n_ctx_train=32768),
            dataclasses.replace(records[1], kv_cache=layout(3072, 15360, 512), n_ctx_train=32768),
        ]
    store.write_manifest(run_id, {"run_id": run_id, "host": rec.to_dict(records[0].host)}, root)
    for r in records:
        store.save_record(r, root=root)


def test_the_table_shows_each_length_as_run_and_windowed():
    build("kv1")
    _, _, paths = render_run("kv1")
    md = paths["md"].read_text(encoding="utf-8")
    assert "## Memory per context length" in md
    # small: 100 kB * 2048 = 204.8 MB at the run's n_ctx; estimated peak there = measured
    assert "| small | **2048** (run) | 204.8 | 204.8 | 0.500 |" in md
    # at 32768: 3276.8 MB; peak 0.5 GB - 204.8 MB + 3276.8 MB = 3.572 GB
    assert "| small | 32768 | 3,276.8 | 3,276.8 | 3.572 |" in md
    # windowed: as run 18432 B/token * 32768 = 604.0 MB; windowed 3072 * 32768 + 15360 * 1024
    # = 116.4 MB; peak 0.8 GB - 18432 * 2048 (37.7 MB) + 604.0 MB = 1.366 GB
    assert "| windowed | 32768 | 604.0 | 116.4 | 1.366 |" in md
    html = paths["html"].read_text(encoding="utf-8")
    assert "<table id=kv-context>" in html and 'id="plot-kv-context"' in html
    assert paths["png-kv-context"].read_bytes().startswith(PNG_MAGIC)


def test_ranking_at_a_named_context_uses_the_estimated_peak(capsys):
    build("kv2")
    _, rows, _ = render_run("kv2")
    assert [r.name for r in rows] == ["small", "windowed"]  # 0.5 GB beats 0.8 GB
    _, rows, paths = render_run("kv2", rank_at_ctx=32768)
    assert [r.name for r in rows] == ["windowed", "small"]  # 1.366 GB beats 3.572 GB
    assert rows[1].peak_rss_gb == 3.572
    md = paths["md"].read_text(encoding="utf-8")
    assert "Ranked by estimated peak memory at n_ctx 32768" in md
    assert main(["report", "kv2", "--rank-at-ctx", "32768", "--budget-gb", "2"]) == 0
    out = capsys.readouterr().out
    assert "estimated at n_ctx 32768" in out and "over budget" in out


def test_records_without_kv_figures_render_no_section_and_rank_as_measured():
    build("kv3", with_kv=False)
    _, rows, paths = render_run("kv3", rank_at_ctx=32768)
    assert [r.name for r in rows] == ["small", "windowed"]
    md = paths["md"].read_text(encoding="utf-8")
    assert "## Memory per context length" not in md
    assert "at their measured peak: small, windowed" in md
    assert "png-kv-context" not in paths


def test_an_old_record_line_without_the_field_loads():
    build("kv4", with_kv=False)
    path = store.run_dir("kv4", settings.reports_dir()) / "records.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        line.pop("kv_cache")
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    loaded = store.load_records("kv4")
    assert [r.kv_cache for r in loaded] == [None, None]
