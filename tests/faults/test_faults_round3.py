"""The held-out campaign's store, catalog, fetch and cluster faults (issue 20, part 3): each
ends in one clear error naming what is wrong, or in the rest of the work going on, and never
in lost records, a traceback or a hang."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import sys
import types
from contextlib import closing
from pathlib import Path

import pytest

from edgeeval import pipeline, settings
from edgeeval import records as rec
from edgeeval.catalog.models import load_catalog
from edgeeval.cli.main import main
from edgeeval.errors import ClusterError, ConfigError, FetchError, StorageError, StoreFileError
from edgeeval.fetch import local_stores
from edgeeval.fetch.discover import discover
from edgeeval.run import runner
from edgeeval.store import files, repair
from edgeeval.store import runs as store
from tests.builders import HOST, record
from tests.fakehub import FakeHub
from tests.faults.inputs_support import write_gguf


def save_run(run_id: str, names: list[str]) -> None:
    store.write_manifest(run_id, {"run_id": run_id, "variants": names})
    for i, name in enumerate(names):
        store.save_record(record(name, peak_gb=0.3 + i / 10, acc=0.6, run_id=run_id))


def db_rows() -> list[tuple[str, str]]:
    with closing(sqlite3.connect(settings.reports_dir() / store.DB_NAME)) as db:
        return sorted(db.execute("SELECT run_id, variant FROM records").fetchall())


def jsonl_names(run_id: str) -> list[str]:
    return sorted(r.variant.name for r in store.load_records(run_id))


# ---- 2: repair never deletes the last copy ---------------------------------------------------


@pytest.mark.parametrize("how", [["repair", "r1"], ["repair", "--all"]])
def test_repair_rebuilds_a_deleted_records_jsonl_from_sqlite_and_keeps_the_rows(how, capsys):
    save_run("r1", ["a", "b", "c"])
    (store.run_dir("r1") / "records.jsonl").unlink()

    assert main(how) == 0
    out = capsys.readouterr().out
    assert db_rows() == [("r1", "a"), ("r1", "b"), ("r1", "c")]
    assert jsonl_names("r1") == ["a", "b", "c"]
    assert "r1: 3 record(s)" in out and "3 record(s) and 0 fidelity result(s) written back" in out


def test_repair_keeps_rows_the_jsonl_lacks_and_writes_them_back():
    save_run("r1", ["a", "b"])
    path = store.run_dir("r1") / "records.jsonl"
    path.write_text(path.read_text().splitlines()[0] + "\n")  # b's line lost

    outcome = repair.repair(["r1"])
    assert outcome.runs[0].records_back == 1 and not outcome.runs[0].problem
    assert db_rows() == [("r1", "a"), ("r1", "b")]
    assert jsonl_names("r1") == ["a", "b"]


def test_repair_of_a_run_whose_directory_is_gone_rebuilds_it_from_sqlite():
    save_run("r1", ["a"])
    for child in store.run_dir("r1").iterdir():
        child.unlink()
    store.run_dir("r1").rmdir()

    assert repair.stored_run_ids() == ["r1"]
    repair.repair()
    assert jsonl_names("r1") == ["a"] and db_rows() == [("r1", "a")]
    assert store.read_manifest("r1")["variants"] == ["a"]


# ---- 5: hostile run directories ---------------------------------------------------------------


def _hostile(path: Path, kind: str) -> None:
    path.unlink()
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


KINDS = ["directory", "fifo", "zero"]


@pytest.mark.parametrize("kind", KINDS)
def test_report_refuses_a_records_file_that_is_not_a_regular_file(kind, capsys):
    save_run("r1", ["a"])
    path = store.run_dir("r1") / "records.jsonl"
    _hostile(path, kind)

    with pytest.raises(StoreFileError) as info:
        store.load_records("r1")
    assert str(path) in str(info.value) and "edgeeval repair r1" in str(info.value)
    assert main(["report", "r1"]) == 1
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("kind", KINDS)
def test_repair_all_sets_a_hostile_records_file_aside_and_repairs_every_run(kind, capsys):
    save_run("r1", ["a", "b"])
    save_run("r2", ["c"])
    path = store.run_dir("r1") / "records.jsonl"
    _hostile(path, kind)

    assert main(["repair", "--all"]) == 0
    out = capsys.readouterr().out
    assert "records.jsonl was" in out and "set aside as records.jsonl.corrupt-" in out
    assert "r2: 1 record(s)" in out
    assert jsonl_names("r1") == ["a", "b"] and jsonl_names("r2") == ["c"]
    assert db_rows() == [("r1", "a"), ("r1", "b"), ("r2", "c")]
    assert len(list(path.parent.glob("records.jsonl.corrupt-*"))) == 1


@pytest.mark.parametrize("name", ["samples.jsonl", "generations.jsonl"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_hostile_per_item_file_stops_the_report_with_one_line_and_repair_clears_it(
    name, kind, capsys
):
    save_run("r1", ["a"])
    path = store.run_dir("r1") / name
    path.write_text("")
    _hostile(path, kind)

    assert main(["report", "r1"]) == 1
    err = capsys.readouterr().err
    assert f"{name}: it is" in err and "edgeeval repair r1" in err and "GGUF" not in err
    assert main(["repair", "r1"]) == 0
    assert f"{name} was" in capsys.readouterr().out
    assert main(["report", "r1"]) == 0


def test_a_damaged_database_is_rebuilt_around_a_hostile_records_file(capsys):
    save_run("r1", ["a"])
    save_run("r2", ["c"])
    _hostile(store.run_dir("r1") / "records.jsonl", "directory")
    (settings.reports_dir() / store.DB_NAME).write_bytes(b"not sqlite at all" * 100)

    assert main(["repair", "--all"]) == 0
    out = capsys.readouterr().out
    assert "edgeeval.sqlite was damaged" in out and "1 file(s) could not be read" in out
    assert db_rows() == [("r2", "c")] and jsonl_names("r2") == ["c"]
    assert len(list(settings.reports_dir().glob(f"{store.DB_NAME}.corrupt-*"))) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_hostile_manifest_is_a_damaged_run_that_repair_rewrites(kind):
    save_run("r1", ["a"])
    path = store.run_dir("r1") / "run.json"
    _hostile(path, kind)
    outcome = repair.repair(["r1"])
    assert "run.json rewritten" in outcome.runs[0].manifest
    assert store.read_manifest("r1")["variants"] == ["a"]


def test_reads_of_store_files_are_bounded(monkeypatch):
    save_run("r1", ["a", "b", "c"])
    monkeypatch.setattr(files, "MAX_JSONL_BYTES", 1000)
    with pytest.raises(StoreFileError, match="larger than 1,000 bytes"):
        store.load_records("r1")
    monkeypatch.setattr(files, "MAX_JSONL_BYTES", 10**9)
    monkeypatch.setattr(files, "MAX_LINE_BYTES", 100)  # every record line is longer
    lines = store.load_records("r1")
    assert list(lines) == [] and lines.skipped == 3 and "longer than 100" in lines.first_problem


@pytest.mark.parametrize("kind", KINDS)
def test_bench_resume_refuses_a_hostile_records_file(kind, monkeypatch, capsys):
    save_run("r1", ["a"])
    _hostile(store.run_dir("r1") / "records.jsonl", kind)
    with pytest.raises(StoreFileError):
        pipeline._done_keys("r1")


# ---- 3: a bad catalog entry -------------------------------------------------------------------


BAD_HUB = {
    "filename": "{repo_id: org/a, filename: ../../x.gguf}",
    "repo_id": "{repo_id: org/../../etc, filename: a.gguf}",
    "absolute": "{repo_id: org/a, filename: /etc/x.gguf}",
    "revision": "{repo_id: org/a, filename: a.gguf, revision: ../../../x}",
}


def _catalog_with(tmp_path: Path, bad: str, good: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "variants:\n"
        "  - {name: bad-entry, family: qwen, model: M, quant: Q8_0, kind: instruct, license: "
        f"mit, source: {{hub: {bad}}}}}\n"
        "  - {name: good, family: qwen, model: M, quant: Q8_0, kind: instruct, license: mit, "
        f'source: {{local: {{path: "{good}"}}}}}}\n'
        "sets:\n  default: [bad-entry, good]\n"
    )
    return path


@pytest.mark.parametrize("which", sorted(BAD_HUB))
def test_models_names_the_bad_hub_entry_and_lists_the_others(which, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEEVAL_OFFLINE", "1")  # nothing here may reach a network
    catalog = _catalog_with(tmp_path, BAD_HUB[which], write_gguf(tmp_path / "good.gguf"))
    assert main(["--catalog", str(catalog), "models"]) == 2
    out, err = capsys.readouterr()
    key = "revision" if which == "revision" else "repo_id" if which == "repo_id" else "filename"
    assert f"entry 'bad-entry': key 'source.hub.{key}'" in err and str(catalog) in err
    assert "Traceback" not in err and "\ngood " in out


@pytest.mark.parametrize("which", sorted(BAD_HUB))
def test_bench_records_the_bad_hub_entry_and_measures_the_others(which, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEEVAL_OFFLINE", "1")  # nothing here may reach a network
    catalog_path = _catalog_with(tmp_path, BAD_HUB[which], write_gguf(tmp_path / "good.gguf"))
    measured = []

    def fake_measure(variant, file, *, run_id, host, settings, **_):
        measured.append(variant.name)
        info = runner.variant_info(variant, file)
        return runner.failed_record(run_id, info, host, settings, rec.STATUS_ERROR, "child"), [], []

    for module in (pipeline, runner):  # wherever the run looks it up
        if hasattr(module, "measure_variant"):
            monkeypatch.setattr(module, "measure_variant", fake_measure)
    monkeypatch.setattr(pipeline, "library_info", lambda: {})
    monkeypatch.setattr(pipeline.hostinfo, "collect", lambda library, **_: HOST)
    catalog = load_catalog(catalog_path)
    outcome = pipeline.bench(
        catalog.select(), rec.RunSettings(suite=""), progress=lambda _: None, catalog=catalog
    )
    by_name = {r.variant.name: r for r in store.load_records(outcome.run_id)}
    assert measured == ["good"]
    assert by_name["bad-entry"].status == rec.STATUS_SKIPPED
    assert "source.hub" in by_name["bad-entry"].error
    assert outcome.paths["md"].is_file()


# ---- 6: an Ollama manifest nested too deeply --------------------------------------------------


def _ollama(name: str, text: str) -> Path:
    manifest = settings.ollama_models_dir() / "manifests/registry.ollama.ai/library" / name
    manifest.mkdir(parents=True, exist_ok=True)
    (manifest / "latest").write_text(text)
    return manifest / "latest"


def test_a_deeply_nested_ollama_manifest_is_refused_and_discovery_notes_it(tmp_path):
    good = write_gguf(tmp_path / "good.gguf")
    digest = __import__("hashlib").sha256(good.read_bytes()).hexdigest()
    blobs = settings.ollama_models_dir() / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"sha256-{digest}").write_bytes(good.read_bytes())
    layer = {"mediaType": local_stores.OLLAMA_MODEL_MEDIA_TYPE, "digest": f"sha256:{digest}"}
    _ollama("fine", json.dumps({"layers": [layer]}))
    deep = _ollama("deep", "[" * 300_000 + "]" * 300_000)

    with pytest.raises(FetchError, match="nested") as info:
        local_stores.ollama_model("deep")
    assert str(deep) in str(info.value)
    found = {d.spec: d for d in discover()}
    assert found["ollama:fine:latest"].runnable
    assert not found["ollama:deep:latest"].runnable
    assert "nested" in found["ollama:deep:latest"].reason


# ---- 7: a Hub listing with an absolute file name ----------------------------------------------


@pytest.mark.parametrize("name", ["/etc/x.gguf", "../x.gguf", "a/../../x.gguf"])
def test_a_hub_listing_an_unsafe_file_name_is_a_clear_error(name, fake_hub: FakeHub, capsys):
    fake_hub.add_file("org/repo", name, b"GGUF" + b"\0" * 60)
    assert main(["fetch", "hf:org/repo"]) != 0
    err = capsys.readouterr().err
    assert "org/repo" in err and "Traceback" not in err


def test_a_hub_listing_skips_unsafe_names_and_takes_the_good_one(fake_hub: FakeHub, tmp_path):
    from edgeeval.fetch import hub

    good = write_gguf(tmp_path / "m-Q8_0.gguf").read_bytes()
    fake_hub.add_file("org/repo", "/etc/evil-Q8_0.gguf", b"GGUF")
    fake_hub.add_file("org/repo", "m-Q8_0.gguf", good)
    assert [f.path for f in hub.list_files("org/repo", None)] == ["m-Q8_0.gguf"]


# ---- 8: an unreachable cluster -----------------------------------------------------------------


@pytest.fixture()
def fake_ray(monkeypatch):
    """A `ray` module whose init records that it was called (the probe must come first)."""
    calls = []
    module = types.ModuleType("ray")
    module.init = lambda **kw: calls.append(kw)  # type: ignore[attr-defined]
    module.is_initialized = lambda: False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", module)
    return calls


@pytest.mark.parametrize(
    "address", ["127.0.0.1:9", "ray://127.0.0.1:9", "nonexistent.invalid:6379"]
)
def test_an_unreachable_cluster_address_fails_before_ray_is_started(address, fake_ray):
    from edgeeval.cluster import connect

    with pytest.raises(ClusterError) as info:
        connect.connect(address)
    assert address.removeprefix("ray://") in str(info.value)
    assert fake_ray == []


def test_a_reachable_cluster_address_goes_to_ray(fake_ray):
    import socket

    from edgeeval.cluster import connect

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        connect.connect(f"127.0.0.1:{port}")
    assert fake_ray and fake_ray[0]["address"] == f"127.0.0.1:{port}"


# ---- 10: EDGEEVAL_REPORTS under a regular file ----------------------------------------------


def test_a_reports_dir_under_a_regular_file_names_the_variable(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("EDGEEVAL_REPORTS", str(blocker / "reports"))
    with pytest.raises(StorageError) as info:
        store.write_manifest("r1", {"run_id": "r1"})
    assert "EDGEEVAL_REPORTS" in str(info.value) and str(blocker) in str(info.value)
    monkeypatch.setenv("EDGEEVAL_REPORTS", str(blocker))
    with pytest.raises(StorageError, match="EDGEEVAL_REPORTS"):
        store.save_record(record("a", peak_gb=0.3, acc=0.6, run_id="r1"))


# ---- 11: fetch on a full disk ------------------------------------------------------------------


def test_fetch_on_a_full_disk_is_one_clear_line(fake_hub: FakeHub, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    good = write_gguf(tmp_path / "m.gguf").read_bytes()
    fake_hub.add_file("org/repo", "m-Q8_0.gguf", good)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "hf-cache"))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", full)
    assert main(["fetch", "hf:org/repo/m-Q8_0.gguf"]) == 1
    err = capsys.readouterr().err
    assert "no space left on device" in err and "HF_HUB_CACHE" in err
    assert "Traceback" not in err and "[Errno" not in err


# ---- 12: a user models.yaml that is not a regular file ----------------------------------------


@pytest.mark.parametrize("kind", ["directory", "fifo", "zero", "dangling"])
def test_a_user_catalog_that_is_not_a_file_is_a_clear_error(kind, capsys):
    path = settings.user_catalog_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        path.symlink_to(path.parent / "gone.yaml")
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "user catalog" in err
    with pytest.raises(ConfigError):
        from edgeeval.catalog.stack import load_catalogs

        load_catalogs()
