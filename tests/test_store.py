import sqlite3

import pytest

from edgeeval import records as rec
from edgeeval.errors import RunNotFoundError
from edgeeval.store import runs as store
from tests.builders import record


def test_record_round_trips_through_jsonl_and_sqlite(tmp_path):
    original = record("m", peak_gb=0.3, acc=0.6)
    store.write_manifest("r1", {"run_id": "r1"}, tmp_path)
    store.save_record(original, [rec.SampleResult("t", "1", 0, (-1.0, -2.0), (2, 3))], tmp_path)
    loaded = store.load_records("r1", tmp_path)
    assert loaded == [original]
    assert store.load_samples("r1", tmp_path)[0].logliks == (-1.0, -2.0)
    rows = (
        sqlite3.connect(tmp_path / store.DB_NAME)
        .execute("SELECT run_id, variant, status FROM records")
        .fetchall()
    )
    assert rows == [("r1", "m", "ok")]


def test_same_record_twice_is_stored_once_in_sqlite(tmp_path):
    r = record("m", peak_gb=0.3, acc=0.6)
    assert store.insert_records([r], tmp_path) == 1
    assert store.insert_records([r], tmp_path) == 0


def test_a_line_cut_by_a_kill_does_not_lose_earlier_records(tmp_path):
    store.write_manifest("r1", {"run_id": "r1"}, tmp_path)
    store.save_record(record("a", peak_gb=0.3, acc=0.6), root=tmp_path)
    with open(tmp_path / "r1" / "records.jsonl", "a") as fh:
        fh.write('{"run_id": "r1", "variant": {"na')
    assert [r.variant.name for r in store.load_records("r1", tmp_path)] == ["a"]


def test_unknown_run_says_how_to_list_runs(tmp_path):
    with pytest.raises(RunNotFoundError, match="edgeeval runs"):
        store.load_records("nope", tmp_path)
