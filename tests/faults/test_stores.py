"""Stores that lose nothing: a torn line, a corrupt SQLite file, a damaged run.json, a bad
imported record, a run id that climbs out of the reports dir, and a full or read-only disk
each end in a clear outcome, never in lost records or a traceback."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from edgeeval import pipeline, settings
from edgeeval import records as rec
from edgeeval.cli.main import main
from edgeeval.errors import DamagedRunError, InvalidRunIdError, StorageError
from edgeeval.report.render import render_run
from edgeeval.store import files, repair
from edgeeval.store import runs as store
from edgeeval.store.exchange import import_files
from tests.builders import record


def save_run(run_id: str, names: list[str], root: Path | None = None) -> None:
    store.write_manifest(run_id, {"run_id": run_id, "variants": names}, root)
    for i, name in enumerate(names):
        store.save_record(record(name, peak_gb=0.3 + i / 10, acc=0.6, run_id=run_id), root=root)


def db_rows(root: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(root / store.DB_NAME)) as db:
        return sorted(db.execute("SELECT run_id, variant FROM records").fetchall())


def tear(path: Path, fragment: bytes = b'{"run_id": "r1", "variant": {"na') -> None:
    """What a crash mid-write leaves: part of a line and no newline."""
    with open(path, "ab") as fh:
        fh.write(fragment)


# ---- torn and undecodable lines ---------------------------------------------------------


def test_the_record_after_a_torn_line_is_kept_and_the_report_says_a_line_was_skipped():
    save_run("r1", ["a"])
    path = store.run_dir("r1") / "records.jsonl"
    tear(path)
    store.save_record(record("b", peak_gb=0.4, acc=0.7, run_id="r1"))

    loaded = store.load_records("r1")
    assert sorted(r.variant.name for r in loaded) == ["a", "b"] and loaded.skipped == 1
    _, rows, paths = render_run("r1")
    assert sorted(r.name for r in rows) == ["a", "b"]
    text = paths["md"].read_text()
    assert "1 unreadable line skipped in records.jsonl" in text
    assert "| b |" in text
    assert json.loads(paths["json"].read_text())["warnings"]


def test_bad_utf8_bad_json_and_wrong_shapes_are_each_skipped_and_counted(tmp_path):
    path = tmp_path / "records.jsonl"
    good = rec.to_json(record("a", peak_gb=0.3, acc=0.6))
    path.write_bytes(
        b"\xff\xfe not utf-8\n" + b"[1, 2]\n" + b'{"run_id": "r1"}\n' + good.encode() + b"\n\n"
    )
    lines = store.read_jsonl(path, rec.ModelRecord)
    assert [r.variant.name for r in lines] == ["a"]
    assert lines.skipped == 3 and "line 1: not UTF-8" in lines.first_problem


def test_a_clean_run_has_no_warning_in_any_report():
    save_run("r1", ["a"])
    _, _, paths = render_run("r1")
    assert "unreadable" not in paths["md"].read_text()
    assert "Warning" not in paths["html"].read_text()
    assert "warnings" not in json.loads(paths["json"].read_text())


# ---- a corrupt SQLite store ---------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_database_is_set_aside_and_rebuilt_from_every_run(damage, caplog):
    reports = settings.reports_dir()
    save_run("r1", [f"m{i}" for i in range(40)])
    save_run("r2", ["x"])
    path = reports / store.DB_NAME
    if damage == "garbage":
        path.write_bytes(b"\x00garbage, not a database" * 64)
    else:
        with open(path, "r+b") as fh:
            fh.truncate(path.stat().st_size // 2)
    damaged = path.read_bytes()

    # what `bench` does after its next model: append, insert, then render
    with caplog.at_level(logging.WARNING, logger="edgeeval.store"):
        store.save_record(record("y", peak_gb=0.2, acc=0.5, run_id="r2"))
        _, rows, _ = render_run("r2")

    aside = list(reports.glob(f"{store.DB_NAME}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged
    assert len(db_rows(reports)) == 42
    assert sorted(r.name for r in rows) == ["x", "y"]
    assert "edgeeval.sqlite is damaged" in caplog.text and aside[0].name in caplog.text


def test_repair_all_rebuilds_the_rows_and_reports_counts(capsys):
    reports = settings.reports_dir()
    save_run("r1", ["a", "b"])
    save_run("r2", ["c"])
    tear(store.run_dir("r2") / "records.jsonl")
    (reports / store.DB_NAME).write_bytes(b"not sqlite at all" * 100)

    assert main(["repair", "--all"]) == 0
    out = capsys.readouterr().out
    assert "edgeeval.sqlite was damaged" in out
    assert "r1: 2 record(s) and 0 fidelity result(s) restored; 0 unreadable" in out
    assert "r2: 1 record(s) and 0 fidelity result(s) restored; 1 unreadable line(s) skipped" in out
    assert db_rows(reports) == [("r1", "a"), ("r1", "b"), ("r2", "c")]


def test_repair_of_one_run_replaces_only_its_rows():
    reports = settings.reports_dir()
    save_run("r1", ["a"])
    save_run("r2", ["b"])
    with closing(sqlite3.connect(reports / store.DB_NAME)) as db, db:
        db.execute("DELETE FROM records")
    outcome = repair.repair(["r1"])
    assert outcome.database == "" and outcome.runs[0].records == 1
    assert db_rows(reports) == [("r1", "a")]


# ---- a damaged run.json -------------------------------------------------------------------


@pytest.mark.parametrize("content", [b'{"run_id": "r1", "host": {"cpu', b'{"run_id": "r\xff1"}'])
def test_a_damaged_manifest_names_the_file_and_the_repair_command(content):
    save_run("r1", ["a"])
    manifest = store.run_dir("r1") / "run.json"
    manifest.write_bytes(content)
    with pytest.raises(DamagedRunError) as info:
        store.read_manifest("r1")
    assert str(manifest) in str(info.value) and "edgeeval repair r1" in str(info.value)


def test_a_run_with_a_damaged_manifest_still_reports_and_repair_rewrites_it(capsys):
    save_run("r1", ["a", "b"])
    manifest = store.run_dir("r1") / "run.json"
    manifest.write_bytes(b'{"run_id": "r1", "ho')

    _, rows, paths = render_run("r1")
    assert sorted(r.name for r in rows) == ["a", "b"]
    assert "run.json is damaged" in paths["md"].read_text()
    assert json.loads(paths["json"].read_text())["host"]["hostname"] == "box"

    assert main(["repair", "r1"]) == 0
    assert "run.json rewritten from records.jsonl" in capsys.readouterr().out
    assert store.read_manifest("r1")["variants"] == ["a", "b"]
    kept = list(manifest.parent.glob("run.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b'{"run_id": "r1", "ho'


def test_an_import_into_a_run_with_a_damaged_manifest_rebuilds_it(tmp_path):
    save_run("r1", ["a"])
    manifest = store.run_dir("r1") / "run.json"
    manifest.write_bytes(b"\x00\x01")
    export = tmp_path / "export"
    store.save_record(record("b", peak_gb=0.4, acc=0.7, run_id="r1"), root=export)
    assert len(import_files([export / "r1"]).added) == 1
    assert store.read_manifest("r1")["variants"] == ["a", "b"]
    assert len(list(manifest.parent.glob("run.json.corrupt-*"))) == 1


# ---- bad imported records -----------------------------------------------------------------


def _bad_records() -> list[tuple[str, dict]]:
    good = rec.to_dict(record("good", peak_gb=0.3, acc=0.6, run_id="ext"))

    def variant(name: str, **changes: object) -> dict:
        data = json.loads(json.dumps(good))
        data["variant"]["name"] = name
        data["variant"]["sha256"] = name.ljust(64, "0")
        for path, value in changes.items():
            *parents, last = path.split("__")
            node = data
            for key in parents:
                node = node[int(key)] if key.isdigit() else node[key]
            node[last] = value
        return data

    return [
        ("good", good),
        ("chance 1", variant("c1", tasks__0__chance=1.0)),
        ("string acc", variant("s1", tasks__0__acc="0.9")),
        ("negative size", variant("n1", variant__size_bytes=-5)),
        ("NaN speed", variant("nan1", speed__0__avg_ts=float("nan"))),
        ("escaping run id", variant("esc", run_id="../../escape")),
    ]


def test_import_rejects_unfit_records_with_counts_and_the_first_reason(tmp_path, capsys):
    export = tmp_path / "export.jsonl"
    export.write_text("".join(json.dumps(d) + "\n" for _, d in _bad_records()))

    result = import_files([export])
    assert [r.variant.name for r in result.added] == ["good"] and result.rejected == 5
    assert "tasks[0].chance = 1.0: not in [0, 1)" in result.reasons[0]
    reasons = "\n".join(result.reasons)
    assert "tasks[0].acc = '0.9': not a number" in reasons
    assert "variant.size_bytes = -5: negative" in reasons
    assert "speed[0].avg_ts = nan: not a finite number" in reasons
    assert "not a valid run id" in reasons
    _, rows, _ = render_run("ext")  # the good record still reports
    assert [r.name for r in rows] == ["good"]

    assert main(["import", str(export)]) == 0  # the good one is now a duplicate
    out = capsys.readouterr().out
    assert "imported 0 new record(s); 1 already present; rejected 5: first reason:" in out
    assert "chance" in out


def test_an_import_of_only_bad_records_exits_non_zero(tmp_path, capsys):
    export = tmp_path / "export.jsonl"
    export.write_text(json.dumps(_bad_records()[1][1]) + "\n")
    assert main(["import", str(export)]) == 1
    assert "imported 0 new record(s); 0 already present; rejected 1" in capsys.readouterr().out


# ---- run ids that name paths --------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../..", "..", ".", ".hidden", "a/b", "", "x" * 101])
def test_run_ids_that_could_leave_the_reports_dir_are_refused(bad):
    with pytest.raises(InvalidRunIdError) as info:
        store.run_dir(bad)
    assert info.value.run_id == bad and repr(bad) in str(info.value)


def test_new_run_ids_and_plain_names_are_accepted():
    for good in (store.new_run_id(), "r1", "laptop_run-2.b"):
        assert store.run_dir(good).name == good


def test_import_and_resume_write_nothing_outside_the_reports_dir(tmp_path, capsys):
    reports = settings.reports_dir()
    before = {p for p in tmp_path.rglob("*")}
    escaping = rec.to_dict(record("m", peak_gb=0.3, acc=0.6, run_id="../.."))
    export = tmp_path / "export.jsonl"
    export.write_text(json.dumps(escaping) + "\n")

    assert main(["import", str(export)]) == 1
    assert "not a valid run id" in capsys.readouterr().out
    with pytest.raises(InvalidRunIdError, match=r"'\.\./\.\.'"):
        pipeline.bench([], rec.RunSettings(), run_id="../..")
    assert main(["bench", "--resume", "../.."]) == 2
    assert "invalid run id '..'" in capsys.readouterr().err  # its last part, as resolved
    with pytest.raises(InvalidRunIdError):
        store.save_record(dataclasses.replace(record("m", peak_gb=0.3, acc=0.6), run_id=".."))

    created = {p for p in tmp_path.rglob("*")} - before - {export}
    assert all(reports in p.parents or p == reports for p in created), created
    assert not (tmp_path.parent / "records.jsonl").exists()


# ---- full or read-only disk ---------------------------------------------------------------


def _fail_replace(code: int):
    def replace(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code))

    return replace


def test_disk_full_while_rendering_keeps_the_old_report_and_is_one_clear_error(monkeypatch):
    save_run("r1", ["a"])
    _, _, paths = render_run("r1")
    old = paths["md"].read_bytes()
    paths["html"].unlink()  # no old file: it must stay absent, never become 0 bytes
    records_before = (store.run_dir("r1") / "records.jsonl").read_bytes()

    with monkeypatch.context() as patch, pytest.raises(StorageError) as info:
        patch.setattr(os, "replace", _fail_replace(errno.ENOSPC))
        render_run("r1")

    message = str(info.value)
    assert message.startswith(f"cannot write {paths['md']}: no space left on device")
    assert "EDGEEVAL_REPORTS" in message
    assert paths["md"].read_bytes() == old and not paths["html"].exists()
    assert not list(store.run_dir("r1").glob(".*.tmp"))
    assert (store.run_dir("r1") / "records.jsonl").read_bytes() == records_before


def test_a_read_only_reports_dir_is_one_line_from_the_cli(monkeypatch, capsys):
    save_run("r1", ["a"])
    monkeypatch.setattr(os, "replace", _fail_replace(errno.EROFS))
    assert main(["report", "r1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "cannot write" in err and "report.md: read-only file system" in err


def test_a_read_only_disk_while_saving_keeps_what_was_appended(monkeypatch):
    save_run("r1", ["a"])
    path = store.run_dir("r1") / "records.jsonl"
    before = path.read_bytes()

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as patch:
        patch.setattr(files, "open", read_only, raising=False)
        with pytest.raises(StorageError, match=f"cannot write {path}: read-only file system"):
            store.save_record(record("b", peak_gb=0.4, acc=0.7, run_id="r1"))
    assert path.read_bytes() == before
    assert [r.variant.name for r in store.load_records("r1")] == ["a"]


def test_a_full_disk_under_sqlite_is_a_storage_error(monkeypatch):
    save_run("r1", ["a"])
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # SQLITE_FULL

    def executemany(*args: object) -> None:
        raise full

    real_connect = store.database.connect

    def connect(root: Path | None = None) -> sqlite3.Connection:
        db = real_connect(root)

        class Wrapped:  # sqlite3.Connection's methods cannot be patched on the instance
            def __getattr__(self, name: str) -> object:
                return executemany if name == "executemany" else getattr(db, name)

            def __enter__(self) -> Wrapped:
                return self

            def __exit__(self, *exc: object) -> None:
                db.__exit__(*exc)

        return Wrapped()  # type: ignore[return-value]

    with monkeypatch.context() as patch:
        patch.setattr(store.database, "connect", connect)
        with pytest.raises(StorageError, match="edgeeval.sqlite: no space left on device"):
            store.save_record(record("b", peak_gb=0.4, acc=0.7, run_id="r1"))
    assert [r.variant.name for r in store.load_records("r1")] == ["a", "b"]
