"""Capability per joule as an optional ranking axis (`edgeeval report --rank-by
capability_per_joule`), only where energy was measured, and `edgeeval plan`'s section in
report.html as in report.md (issue 23)."""

from __future__ import annotations

import dataclasses
import json
import re
from html import unescape

import pytest

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.cli.main import main
from edgeeval.errors import ConfigError
from edgeeval.report.render import render_run
from edgeeval.report.summarize import PER_JOULE, rank_rows, verdict
from edgeeval.store import plans
from edgeeval.store import runs as store
from tests.builders import record, speed
from tests.test_plan import measured, prediction

NOT_HERE = "not available here (no readable RAPL counter in /sys/class/powercap)"


def with_energy(r: rec.ModelRecord, joules: float | None, method: str = "rapl") -> rec.ModelRecord:
    """`r` whose tg test (32 tokens x 2 repetitions = 64 timed tokens) spent `joules`."""
    tg = dataclasses.replace(
        speed("tg32", [10.0, 12.0]),
        energy_j=joules,
        energy_method=method if joules is not None else NOT_HERE,
        energy_domains="package-0" if joules is not None else "",
    )
    return dataclasses.replace(r, speed=(tg,))


# big: capability 40 at 1.0 GB (40 per GB), 6.4 J for 64 tokens: 10 tok/J -> 400 cap/J
# small: capability 20 at 0.4 GB (50 per GB), 1.6 J for 64 tokens: 40 tok/J -> 800 cap/J
# frugal-gb: capability 30 at 0.5 GB (60 per GB), 12.8 J: 5 tok/J -> 150 cap/J
def energy_records() -> list[rec.ModelRecord]:
    return [
        with_energy(record("big", peak_gb=1.0, acc=0.55, acc_se=0.01), 6.4),
        with_energy(record("small", peak_gb=0.4, acc=0.40, acc_se=0.01), 1.6),
        with_energy(record("frugal-gb", peak_gb=0.5, acc=0.475, acc_se=0.01), 12.8),
    ]


def test_capability_per_joule_is_capability_times_generated_tokens_per_joule():
    rows = {r.name: r for r in rank_rows(energy_records())}
    assert rows["big"].capability == pytest.approx(40.0)
    assert rows["big"].gen_tokens_per_j == pytest.approx(10.0)
    assert rows["big"].capability_per_joule == pytest.approx(400.0)
    se = 100 * 0.01 / 0.75  # the capability's SE, scaled by the tokens per joule
    assert rows["small"].capability_per_joule_se == pytest.approx(se * 40.0)


def test_the_axis_reorders_the_ranking():
    by_gb = [r.name for r in rank_rows(energy_records())]
    by_j = [r.name for r in rank_rows(energy_records(), rank_by=PER_JOULE)]
    assert by_gb == ["frugal-gb", "small", "big"]
    assert by_j == ["small", "big", "frugal-gb"]
    with pytest.raises(ValueError, match="rank_by must be one of"):
        rank_rows(energy_records(), rank_by="tokens")


def test_a_row_without_energy_is_unranked_never_zero():
    records = [*energy_records(), with_energy(record("vm", peak_gb=0.1, acc=0.9), None)]
    rows = rank_rows(records, rank_by=PER_JOULE)
    vm = rows[-1]
    assert vm.name == "vm" and vm.rank is None
    assert vm.capability_per_joule is None and vm.gen_tokens_per_j is None
    assert verdict(vm).startswith("no energy measured: not ranked per joule")
    assert [r.rank for r in rows[:3]] == [1, 2, 3]
    # by GB it ranks first as before (the axis changes nothing else)
    assert rank_rows(records)[0].name == "vm"


def save(records: list[rec.ModelRecord], run_id: str = "r1") -> None:
    root = settings.reports_dir()
    store.write_manifest(run_id, {"run_id": run_id}, root)
    for r in records:
        store.save_record(dataclasses.replace(r, run_id=run_id), root=root)


def test_no_energy_anywhere_refuses_the_axis_in_one_line_before_writing(capsys):
    save([with_energy(record(n, peak_gb=0.5, acc=0.5), None) for n in ("a", "b")])
    with pytest.raises(ConfigError) as info:
        render_run("r1", rank_by=PER_JOULE)
    text = str(info.value)
    assert "--rank-by capability_per_joule" in text and NOT_HERE in text
    assert "allowed here: --rank-by capability_per_gb" in text and "never as 0" in text
    assert not (store.run_dir("r1", settings.reports_dir()) / "report.md").exists()
    assert main(["report", "r1", "--rank-by", "capability_per_joule"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no variant has energy measured" in err
    _, rows, _ = render_run("r1")  # the default axis still renders
    assert {r.name for r in rows} == {"a", "b"}


def test_the_report_ranks_per_joule_in_every_format():
    save(energy_records())
    _, rows, paths = render_run("r1", rank_by=PER_JOULE)
    assert [r.name for r in rows] == ["small", "big", "frugal-gb"]
    text = paths["md"].read_text()
    assert "Ranked by cap/J" in text
    assert "| 1 | small | 800.0 ± 53.3 | 40.0 |" in text
    page = unescape(re.sub(r"<[^>]+>", " ", paths["html"].read_text()))
    assert "Ranking by cap/J" in page and "800.0 ± 53.3" in page
    data = json.loads(paths["json"].read_text())
    assert data["rank_by"] == PER_JOULE
    assert data["rows"][0]["capability_per_joule"] == pytest.approx(800.0)
    _, _, paths = render_run("r1")  # the default: no per-joule column, the JSON key absent
    assert "cap/J" not in paths["md"].read_text()
    assert "rank_by" not in json.loads(paths["json"].read_text())


def test_the_plan_section_is_in_report_html_as_in_report_md():
    root = settings.reports_dir()
    store.write_manifest("r1", {"run_id": "r1"}, root)
    store.save_record(measured("m", 10**8, 40.0, pp=250.0), root=root)
    plans.append_predictions([prediction("m", "2025-12-31T00:00:00+0000")], root)
    _, _, paths = render_run("r1")
    assert "## Predicted before download" in paths["md"].read_text()
    html = paths["html"].read_text()
    assert '<h2 id="predicted-before-download-edgeeval-plan">' in html or re.search(
        r"<h2[^>]*>Predicted before download", html
    )
    page = unescape(re.sub(r"<[^>]+>", " ", html))
    assert "50.0 / 40.0 (+25%)" in page and "200 / 250 (-20%)" in page
    toc = re.search(r'<nav class="toc".*?</nav>', html, re.S)
    assert toc and "Predicted before download" in unescape(toc.group())


def test_the_report_command_says_which_axis_ranked(capsys):
    save(energy_records())
    assert main(["report", "r1", "--rank-by", "capability_per_joule"]) == 0
    out = capsys.readouterr().out
    assert "ranked by capability per joule" in out
    assert out.index("small") < out.index("big") < out.index("frugal-gb")
