"""`edgeeval compare` (noise of the repetitions) and `edgeeval import` (no duplicates)."""

import dataclasses
import json
import math
import shutil
import sqlite3
from contextlib import closing

import pytest

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.cli.main import main
from edgeeval.report.compare import NothingToCompareError, compare_runs, diff, speed_diff
from edgeeval.report.render import render_run
from edgeeval.store import runs as store
from edgeeval.store.exchange import ImportFileError, import_files
from tests.builders import host, record, speed


def save_run(run_id, records, root=None):
    """Store `records` as run `run_id` (their run_id is set to it)."""
    root = root or settings.reports_dir()
    store.write_manifest(run_id, {"run_id": run_id}, root)
    for r in records:
        store.save_record(dataclasses.replace(r, run_id=run_id), root=root)


@pytest.mark.parametrize(
    ("a", "b", "beyond"),
    [
        ((10.0, 11.0, 12.0), (13.0, 14.0, 15.0), True),  # gap 3 > 2 * sqrt(1/3 + 1/3) = 1.63
        ((10.0, 12.0, 11.0), (10.5, 11.5, 11.2), False),  # gap 0.07, within the noise
        ((10.0, 10.0, 10.0), (10.0, 10.0, 10.0), False),  # identical
        ((10.0,), (20.0,), None),  # one sample each: cannot tell
    ],
)
def test_speed_difference_against_the_noise_of_the_repetitions(a, b, beyond):
    d = speed_diff("tg", speed("tg32", a), speed("tg32", b))
    assert d.beyond_noise is beyond
    assert d.ratio == pytest.approx((sum(b) / len(b)) / (sum(a) / len(a)))


def test_noise_rule_is_welch_standard_error_times_two():
    d = speed_diff("tg", speed("tg32", (10.0, 11.0, 12.0)), speed("tg32", (13.0, 14.0, 15.0)))
    assert d.noise == pytest.approx(2 * math.sqrt(1 / 3 + 1 / 3))


def test_missing_side_has_no_ratio_and_no_verdict():
    d = diff("x", 1.0, None, threshold=0.1)
    assert d.ratio is None and d.beyond_noise is None


def test_compare_flags_a_change_beyond_noise_and_not_one_within_it():
    save_run(
        "a",
        [
            record("fast", peak_gb=0.5, acc=0.6, tg_samples=(10.0, 11.0, 12.0)),
            record("same", peak_gb=0.5, acc=0.6, tg_samples=(10.0, 12.0, 11.0)),
        ],
    )
    save_run(
        "b",
        [
            record("fast", peak_gb=0.5, acc=0.6, tg_samples=(20.0, 21.0, 22.0)),
            record("same", peak_gb=0.51, acc=0.62, tg_samples=(10.5, 11.5, 11.2)),
        ],
    )
    c = compare_runs("a", "b")
    metrics = {(v.name, m.metric): m for v in c.variants for m in v.metrics}
    assert metrics[("fast", "tg32 t/s")].beyond_noise is True
    assert metrics[("fast", "tg32 t/s")].ratio == pytest.approx(21 / 11)
    assert metrics[("same", "tg32 t/s")].beyond_noise is False
    assert metrics[("same", "peak GB")].beyond_noise is False  # 2 % < 3 %
    assert metrics[("same", "capability")].beyond_noise is False  # 2.7 points, SE 5.3 each
    assert metrics[("fast", "capability")].ratio == pytest.approx(1.0)


def test_compare_matches_on_name_and_sha_and_lists_the_rest():
    m = record("m", peak_gb=0.5, acc=0.6)
    save_run("a", [m, record("gone", peak_gb=0.5, acc=0.6)])
    save_run("b", [m, record("new", peak_gb=0.5, acc=0.6)])
    c = compare_runs("a", "b")
    assert [v.name for v in c.variants] == ["m"]
    assert (c.only_a, c.only_b) == (["gone"], ["new"])
    rebuilt = dataclasses.replace(m.variant, sha256="f" * 64)
    save_run("c", [dataclasses.replace(m, variant=rebuilt)])
    with pytest.raises(NothingToCompareError, match="share no variant"):
        compare_runs("a", "c")  # same name, other file: not the same variant


def test_compare_command_prints_ratios_and_the_rule(capsys):
    other = host("h2", "laptop")
    save_run("a", [record("m", peak_gb=0.5, acc=0.6, tg_samples=(10.0, 11.0, 12.0))])
    save_run(
        "b",
        [
            record(
                "m",
                peak_gb=0.5,
                acc=0.6,
                host_info=other,
                tg_samples=(20.0, 21.0, 22.0),
                settings=rec.RunSettings(n_ctx=512),
            )
        ],
    )
    assert main(["compare", "a", "b"]) == 0
    out = capsys.readouterr().out
    assert "on box" in out and "on laptop" in out
    assert "settings differ: n_ctx 2048 (A) vs 512 (B)" in out
    assert "| m | tg32 t/s | 11.000 ± 1.000 | 21.000 ± 1.000 | 1.909 | yes |" in out
    assert "2 * sqrt(sd_A^2/n_A + sd_B^2/n_B)" in out
    assert main(["compare", "a", "b", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_b"] == "b"


def test_compare_unknown_run_is_an_error_naming_the_command(capsys):
    save_run("a", [record("m", peak_gb=0.5, acc=0.6)])
    assert main(["compare", "a", "nope"]) != 0
    assert "edgeeval runs" in capsys.readouterr().err


# ---- import -------------------------------------------------------------------------------


@pytest.fixture()
def laptop_export(tmp_path):
    """Another machine's reports directory with one run of two variants (one failed)."""
    other = tmp_path / "laptop-reports"
    laptop = host("h2", "laptop")
    save_run(
        "l1",
        [
            record("m", peak_gb=0.4, acc=0.7, host_info=laptop),
            record("x", peak_gb=0.1, acc=0.0, host_info=laptop, status=rec.STATUS_CRASH),
        ],
        root=other,
    )
    return other


def test_import_of_the_same_file_twice_adds_nothing(laptop_export):
    jsonl = laptop_export / "l1" / "records.jsonl"
    first = import_files([jsonl])
    assert sorted(r.variant.name for r in first.added) == ["m", "x"] and first.runs == ["l1"]
    again = import_files([jsonl])
    assert again.added == [] and again.duplicates == 2
    # the same records through the other machine's SQLite store: still nothing new
    assert import_files([laptop_export / store.DB_NAME]).added == []
    lines = (store.run_dir("l1") / "records.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_imported_sqlite_run_can_be_reported(laptop_export):
    result = import_files([laptop_export / store.DB_NAME])
    assert len(result.added) == 2
    manifest = store.read_manifest("l1")
    assert manifest["host"]["hostname"] == "laptop" and sorted(manifest["variants"]) == ["m", "x"]
    _, rows, paths = render_run("l1")
    assert [r.name for r in rows] == ["m", "x"] and rows[0].rank == 1
    assert paths["html"].exists()


def test_a_good_record_is_not_shadowed_by_a_stored_failure(tmp_path):
    failed = record("m", peak_gb=0.4, acc=0.0, status=rec.STATUS_CRASH)
    save_run("r1", [failed])
    good = record("m", peak_gb=0.4, acc=0.7, run_id="r2")
    export = tmp_path / "export"
    save_run("r2", [good], root=export)
    assert len(import_files([export / "r2" / "records.jsonl"]).added) == 1
    # but an ok measurement of the same file, settings and host is not imported twice
    again = tmp_path / "again"
    save_run("r3", [record("m", peak_gb=0.4, acc=0.7, run_id="r3")], root=again)
    assert import_files([again / "r3"]).added == []


def test_reports_group_by_host_after_an_import(laptop_export):
    save_run("mine", [record("m", peak_gb=0.5, acc=0.7, run_id="mine")])
    import_files([laptop_export / "l1" / "records.jsonl"])
    _, _, paths = render_run("mine")
    text = paths["md"].read_text()
    assert "## By host" in text and "### box (h1)" in text and "### laptop (h2)" in text
    hosts = json.loads(paths["json"].read_text())["hosts"]
    assert [h["host"]["hostname"] for h in hosts] == ["box", "laptop"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("not json\n", "no edgeeval records"),
        ('{"run_id": "x"}\n', "no edgeeval records"),
    ],
)
def test_bad_import_files_are_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "export.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ImportFileError, match=message) as info:
        import_files([path])
    assert info.value.path == str(path)


def test_a_sqlite_file_that_is_not_an_edgeeval_store_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(ImportFileError, match="not an edgeeval store"):
        import_files([path])


def test_a_bad_file_among_good_ones_imports_nothing(laptop_export, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("garbage\n")
    with pytest.raises(ImportFileError):
        import_files([laptop_export / "l1" / "records.jsonl", bad])
    assert store.list_runs() == []


def test_import_command(laptop_export, capsys, tmp_path):
    copy = tmp_path / "copy.sqlite"
    shutil.copy(laptop_export / store.DB_NAME, copy)
    assert main(["import", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "imported 2 new record(s); 0 already present" in out and "edgeeval report l1" in out
    assert main(["import", str(copy)]) == 0
    assert "imported 0 new record(s); 2 already present" in capsys.readouterr().out
