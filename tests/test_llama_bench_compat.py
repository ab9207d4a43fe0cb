"""llama.cpp's own scripts/compare-llama-bench.py reads edgeeval's speed files and store.

The script is not vendored here: it is taken at test time from the llama.cpp source that the
installed llama-cpp-python's sdist bundles (the same llama.cpp edgeeval runs), as
benchmarks/tools/build_llama_tools.sh unpacks it under .bench-tools/. It needs `tabulate` and
`GitPython`. Without the script or those packages the tests that run it skip, saying what to do.

Two runs are built on two llama.cpp builds (aaaa111, bbbb222), each measuring two models that
share a quant (Q4_K_M), so the table must keep them apart; the script's table is then checked
row by row: one row per model and test, the baseline and compare t/s and the speed-up.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path

import pytest

from edgeeval import records as rec
from edgeeval.report.speed import FIELDS, speed_rows, write_speed_tables
from edgeeval.run.speed import SpeedTest, run_speed_test
from edgeeval.store import database, llamabench
from tests import builders
from tests.fake_backend import FakeBackend

REPO = Path(__file__).resolve().parent.parent
PINNED = "0.3.36"  # pyproject's llama-cpp-python pin, when it is not installed
SCRIPT = "vendor/llama.cpp/scripts/compare-llama-bench.py"
LLAMA_BENCH_CPP = "vendor/llama.cpp/tools/llama-bench/llama-bench.cpp"
BUILD_A, BUILD_B = "aaaa111", "bbbb222"
RUNS = ((BUILD_A, "20261206-100000-aaaaaa"), (BUILD_B, "20261206-110000-bbbbbb"))


def _version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return PINNED


def _sdist_file(member: str, dest: Path) -> Path | None:
    """`member` of the llama-cpp-python sdist: from its unpacked tree under .bench-tools/src,
    else read out of .bench-tools/sdist/*.tar.gz into `dest`; None when neither is there."""
    version = _version()
    name = f"llama_cpp_python-{version}"
    unpacked = REPO / ".bench-tools" / "src" / name / member
    if unpacked.is_file():
        return unpacked
    archive = REPO / ".bench-tools" / "sdist" / f"{name}.tar.gz"
    if archive.is_file():
        with tarfile.open(archive) as tar:
            try:
                data = tar.extractfile(f"{name}/{member}")
            except KeyError:
                return None
            if data is not None:
                out = dest / Path(member).name
                out.write_bytes(data.read())
                return out
    return None


def _need(member: str, dest: Path) -> Path:
    found = _sdist_file(member, dest)
    if found is None:
        version = _version()
        pytest.skip(
            f"{member} of llama-cpp-python {version} not found: run "
            "benchmarks/tools/build_llama_tools.sh, or `pip download --no-deps --no-binary "
            f":all: llama-cpp-python=={version} -d .bench-tools/sdist`"
        )
    return found


@pytest.fixture()
def compare_script(tmp_path: Path) -> Path:
    """The bundled llama.cpp's compare-llama-bench.py, with its imports checked."""
    script = _need(SCRIPT, tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", "import tabulate, git"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(
            "compare-llama-bench.py needs tabulate and GitPython: pip install tabulate GitPython"
        )
    return script


def _compare(script: Path, cwd: Path, *inputs: Path) -> list[dict[str, str]]:
    """Run the script on `inputs` (baseline BUILD_A, compare BUILD_B) and return its table's
    rows as {header: cell}."""
    args = [sys.executable, str(script), "-t", "llama-bench", "-o", "tsv"]
    args += [a for path in inputs for a in ("-i", str(path))]
    out = subprocess.run(
        [*args, "-b", BUILD_A, "-c", BUILD_B],
        cwd=cwd,  # not a git checkout: the script names builds by their commit
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_CEILING_DIRECTORIES": str(cwd.parent)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter="\t")
    header, *body = [[cell.strip() for cell in row] for row in reader]
    return [dict(zip(header, row, strict=True)) for row in body]


# two models sharing a quant; per build, tokens/s samples of pp128 and tg32
MODELS = {
    "qwen-q4": ("Qwen2.5-Coder-0.5B", "qwen2 0.5B Q4_K - Medium", 491_400_064, 494_032_768),
    "gemma-q4": ("Gemma-3-270M", "gemma3 270M Q4_K - Medium", 253_113_024, 268_098_176),
}
SAMPLES = {
    (BUILD_A, "qwen-q4", "pp128"): (120.0, 130.0),
    (BUILD_A, "qwen-q4", "tg32"): (20.0, 22.0),
    (BUILD_A, "gemma-q4", "pp128"): (360.0, 375.0),
    (BUILD_A, "gemma-q4", "tg32"): (40.0, 42.0),
    (BUILD_B, "qwen-q4", "pp128"): (150.0, 156.0),
    (BUILD_B, "qwen-q4", "tg32"): (21.0, 23.0),
    (BUILD_B, "gemma-q4", "pp128"): (300.0, 310.0),
    (BUILD_B, "gemma-q4", "tg32"): (44.0, 46.0),
}


def _run(build: str, run_id: str, *, facts: bool = True) -> list[rec.ModelRecord]:
    """One run on llama.cpp build `build`: both models, a pp128 and a tg32 test each. Without
    `facts`, the records are shaped as records stored before llama-bench's fields were kept."""
    host = builders.host(
        f"h-{build}", "box", cpu_model="AMD EPYC 7B13", build_commit=build if facts else ""
    )
    if facts:
        host = dataclasses.replace(host, cpu_info="AMD EPYC", backends="CPU")
    out = []
    for name, (model, desc, size, params) in MODELS.items():
        speeds = [
            dataclasses.replace(
                builders.speed(test, SAMPLES[(build, name, test)], n_threads=2),
                n_batch=512,
                n_ubatch=512,
                test_time="2026-12-06T11:00:00Z" if facts else "",
                model_type=desc if facts else "",
            )
            for test in ("pp128", "tg32")
        ]
        record = builders.record(
            name, peak_gb=0.5, acc=0.5, run_id=run_id, host_info=host, speeds=speeds
        )
        variant = dataclasses.replace(record.variant, model=model, quant="Q4_K_M", size_bytes=size)
        out.append(
            dataclasses.replace(record, variant=variant, weights_bytes=size, n_params=params)
        )
    return out


def _expected(model_type: dict[str, str]) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(model, test) -> (baseline t/s, compare t/s, speed-up) as the script prints them."""
    out = {}
    for name in MODELS:
        for test in ("pp128", "tg32"):
            a = sum(SAMPLES[(BUILD_A, name, test)]) / 2
            b = sum(SAMPLES[(BUILD_B, name, test)]) / 2
            out[(model_type[name], test)] = (f"{a:.2f}", f"{b:.2f}", f"{b / a:.2f}")
    return out


DESC = {name: desc.replace(" - Medium", "_M") for name, (_, desc, _, _) in MODELS.items()}


def _table(rows: list[dict[str, str]]) -> dict[tuple[str, str], tuple[str, str, str]]:
    table = {
        (r["Model"], r["Test"]): (r[f"t/s {BUILD_A}"], r[f"t/s {BUILD_B}"], r["Speedup"])
        for r in rows
    }
    assert len(table) == len(rows), f"two rows for one model and test: {rows}"
    return table


def _write_runs(root: Path, *, facts: bool = True) -> list[Path]:
    dirs = []
    for build, run_id in RUNS:
        directory = root / run_id
        directory.mkdir(parents=True)
        write_speed_tables(directory, _run(build, run_id, facts=facts))
        dirs.append(directory)
    return dirs


@pytest.mark.parametrize("ext", ["json", "csv"])
def test_compare_llama_bench_reads_two_runs_speed_files(compare_script, tmp_path, ext):
    runs = _write_runs(tmp_path / "reports")
    rows = _compare(compare_script, tmp_path, *(d / f"speed.{ext}" for d in runs))
    assert [r["CPU"] for r in rows] == ["AMD EPYC"] * 4
    assert _table(rows) == _expected(DESC)


def test_compare_llama_bench_reads_the_runs_jsonl_concatenated(compare_script, tmp_path):
    """The script takes one JSONL file: both runs' speed.jsonl, one after the other."""
    runs = _write_runs(tmp_path / "reports")
    both = tmp_path / "both.jsonl"
    both.write_text("".join((d / "speed.jsonl").read_text() for d in runs))
    assert _table(_compare(compare_script, tmp_path, both)) == _expected(DESC)


def test_compare_llama_bench_reads_the_store(compare_script, tmp_path):
    """edgeeval.sqlite's llama_bench table, filled as records are stored."""
    root = tmp_path / "reports"
    for build, run_id in RUNS:
        database.transact(
            root, lambda db, b=build, r=run_id: database.insert_records(db, _run(b, r))
        )
    rows = _compare(compare_script, tmp_path, root / database.DB_NAME)
    assert _table(rows) == _expected(DESC)


def test_records_stored_before_the_fields_export_two_models_apart(compare_script, tmp_path):
    """Older records (no model_type, no build_commit) still load in the script: model_type
    falls back to model + quant, so the two Q4_K_M models stay two rows."""
    runs = _write_runs(tmp_path / "reports", facts=False)
    rows = json.loads((runs[0] / "speed.json").read_text())
    assert {r["build_commit"] for r in rows} == {"unknown"}
    assert {r["model_type"] for r in rows} == {"Qwen2.5-Coder-0.5B Q4_K_M", "Gemma-3-270M Q4_K_M"}
    # both runs share the build "unknown": compare a run with itself, rows still apart
    args = [sys.executable, str(compare_script), "-t", "llama-bench", "-o", "tsv"]
    out = subprocess.run(
        [*args, "-i", str(runs[0] / "speed.json"), "-b", "unknown", "-c", "unknown"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert len([line for line in out.stdout.splitlines()[1:] if line.strip()]) == 4


def test_field_set_and_types_are_the_bundled_llama_benchs(tmp_path):
    """FIELDS follow llama-bench.cpp's test::get_fields() of the bundled llama.cpp, in order,
    and each field's SQL type its get_field_type() (so an upgrade that moves them fails here)."""
    source = _need(LLAMA_BENCH_CPP, tmp_path).read_text()
    body = source[source.index("get_fields() {") : source.index("return fields;")]
    assert re.findall(r'"(\w+)"', body) == llamabench.FIELDS
    typing = source[source.index("get_field_type(const std::string & field) {") :]
    typing = typing[: typing.index("return STRING;\n    }")]
    kinds = {"INT": "INTEGER", "BOOL": "INTEGER", "FLOAT": "REAL", "STRING": "TEXT"}
    declared = {}
    for names, kind in re.findall(r"if \(((?:[^{])*?)\) \{\s*return (\w+);", typing):
        for name in re.findall(r'field == "(\w+)"', names):
            declared.setdefault(name, kinds[kind])
    for name in llamabench.FIELDS:
        assert llamabench.SQL_TYPES[name] == declared.get(name, "TEXT"), name
    rows = speed_rows(_run(BUILD_A, "20261206-100000-aaaaaa"))
    for name, kind in llamabench.SQL_TYPES.items():
        value = rows[0][name]
        assert isinstance(value, {"TEXT": str, "REAL": float}.get(kind, int)), (name, value)
        if declared.get(name) == "INTEGER" and name in ("cpu_strict", "no_kv_offload"):
            assert isinstance(value, bool)  # llama-bench's JSON writes its BOOLs as true/false
    assert list(rows[0]) == FIELDS


def _sql_of_run(build: str, run_id: str, capsys) -> str:
    """`edgeeval report RUN -o sql` of one stored run, as a user pipes it."""
    from edgeeval.cli.main import main
    from edgeeval.settings import reports_dir
    from edgeeval.store import runs as store

    root = reports_dir()
    store.write_manifest(run_id, {"run_id": run_id, "created_at": "2026-12-06T11:00:00+0000"}, root)
    for record in _run(build, run_id):
        store.save_record(record, root=root)
    assert main(["report", run_id, "-o", "sql"]) == 0
    return capsys.readouterr().out


def test_sql_output_is_llama_benchs_and_loads_into_sqlite_for_the_script(
    compare_script, tmp_path, capsys
):
    """`-o sql` prints llama-bench's own `-o sql` (its sql_printer: CREATE TABLE IF NOT EXISTS
    with its fields and SQL types, then quoted INSERTs); two runs piped into one database make
    the table compare-llama-bench.py reads, row by row."""
    source = _need(LLAMA_BENCH_CPP, tmp_path).read_text()
    printer = source[source.index("struct sql_printer") : source.index("struct ctx_state")]
    assert 'fprintf(fout, "CREATE TABLE IF NOT EXISTS llama_bench (\\n");' in printer
    assert "INSERT INTO llama_bench (%s) " in printer and "'%s'%s" in printer
    texts = [_sql_of_run(build, run_id, capsys) for build, run_id in RUNS]
    head, _, inserts = texts[0].partition(");\n\n")
    assert head.splitlines() == [
        "CREATE TABLE IF NOT EXISTS llama_bench (",
        *[f"  {n} {k}," for n, k in llamabench.SQL_TYPES.items()][:-1],
        f"  stddev_ts {llamabench.SQL_TYPES['stddev_ts']}",
    ]
    lines = inserts.splitlines()
    assert len(lines) == 4  # two models, two tests
    assert all(
        line.startswith(f"INSERT INTO llama_bench ({', '.join(llamabench.FIELDS)}) VALUES ('")
        and line.endswith("');")
        for line in lines
    )
    db_path = tmp_path / "llama-bench.sqlite"
    for text in texts:  # `... -o sql | sqlite3 llama-bench.sqlite`, once per run
        with closing(sqlite3.connect(db_path)) as db:
            db.executescript(text)
    with closing(sqlite3.connect(db_path)) as db:
        got = db.execute(
            "SELECT build_commit, model_type, n_prompt, n_gen, avg_ts, typeof(avg_ts), "
            "typeof(n_prompt), cpu_strict FROM llama_bench ORDER BY build_commit, model_type, n_gen"
        ).fetchall()
    assert len(got) == 8
    first = got[0]  # gemma before qwen; pp128 before tg32
    assert first[:4] == (BUILD_A, MODELS["gemma-q4"][1], 128, 0)
    assert first[4] == pytest.approx(sum(SAMPLES[(BUILD_A, "gemma-q4", "pp128")]) / 2, rel=1e-4)
    assert first[5:] == ("real", "integer", 0)  # quoted values, typed by the table
    rows = _compare(compare_script, tmp_path, db_path)
    assert _table(rows) == _expected(DESC)


def test_sql_output_quotes_a_quote():
    """A value with a quote (a model named by a user) still loads: doubled, as SQL quotes it."""
    from edgeeval.cli.output import speed_sql

    rows = speed_rows(_run(BUILD_A, "20261206-100000-aaaaaa"))
    rows[0] = {**rows[0], "model_type": "bob's qwen2 0.5B Q4_K - Medium"}
    with closing(sqlite3.connect(":memory:")) as db:
        db.executescript(speed_sql(rows))
        names = {r[0] for r in db.execute("SELECT model_type FROM llama_bench")}
    assert "bob's qwen2 0.5B Q4_K - Medium" in names and len(names) == 3
    with pytest.raises(ValueError, match="lacks llama-bench's fields build_commit"):
        speed_sql([{"model_type": "x"}])


def test_the_store_fills_llama_bench_for_a_database_made_before_it(tmp_path):
    """A database from before the table: opening it fills the table from the stored records
    once; a record stored again adds nothing, and a run's rebuild replaces its rows."""
    root = tmp_path / "reports"
    root.mkdir()
    records = _run(BUILD_A, "20261206-100000-aaaaaa")
    with sqlite3.connect(root / database.DB_NAME) as old:
        old.executescript(database._SCHEMA)
        old.executemany(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.run_id,
                    r.variant.name,
                    r.key,
                    r.host.host_id,
                    r.status,
                    r.started_at,
                    rec.to_json(r),
                )
                for r in records
            ],
        )
    old.close()

    def count(db: sqlite3.Connection) -> list[tuple]:
        return db.execute(
            "SELECT model_type, n_prompt, n_gen, avg_ts, build_commit FROM llama_bench "
            "ORDER BY model_type, n_prompt"
        ).fetchall()

    got = database.transact(root, count)
    assert got == [
        ("gemma3 270M Q4_K - Medium", 0, 32, 41.0, BUILD_A),
        ("gemma3 270M Q4_K - Medium", 128, 0, 367.5, BUILD_A),
        ("qwen2 0.5B Q4_K - Medium", 0, 32, 21.0, BUILD_A),
        ("qwen2 0.5B Q4_K - Medium", 128, 0, 125.0, BUILD_A),
    ]
    assert database.transact(root, lambda db: database.insert_records(db, records)) == 0
    database.rebuild_run(root, records[0].run_id, records, [])
    assert database.transact(root, count) == got


def test_a_read_only_store_from_before_the_table_still_opens(tmp_path):
    """Opening an old database read-only creates nothing and raises nothing."""
    path = tmp_path / database.DB_NAME
    with sqlite3.connect(path) as old:
        old.executescript(database._SCHEMA)
    old.close()
    with closing(sqlite3.connect(path.as_uri() + "?mode=ro", uri=True)) as db:
        database._ensure_llama_bench(db)
        assert not database._has_llama_bench(db)
        assert db.execute("SELECT COUNT(*) FROM records").fetchone() == (0,)
    with closing(sqlite3.connect(path)) as db:
        database._ensure_llama_bench(db)
        assert database._has_llama_bench(db)


def test_speed_tests_carry_llama_benchs_per_test_facts():
    result = run_speed_test(FakeBackend(), SpeedTest(n_prompt=8, n_gen=0), repetitions=1)
    assert result.model_type == "fake 1M F16"
    assert (result.type_k, result.type_v) == ("f16", "f16")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result.test_time)


@pytest.mark.real
def test_real_load_facts_are_what_the_exports_write(smollm_path):
    """On the real library: the build's commit, llama_model_desc, and the load knobs the
    exports write as llama.cpp's defaults are what edgeeval really passes."""
    from edgeeval.engine.backend import (
        LlamaBackend,
        LoadOptions,
        library_info,
        llama_bench_load_facts,
    )

    info = library_info()
    assert re.fullmatch(r"[0-9a-f]{7,}(-dirty)?", info.build_commit), info.build_commit
    assert "CPU" in info.backends
    options = LoadOptions(n_ctx=256)
    facts = llama_bench_load_facts(options)
    for name, value in llamabench.LOAD_DEFAULTS.items():
        if name in facts:
            assert facts[name] == value, name
    assert facts["load_mode"] == llamabench.load_mode(options.use_mmap, options.use_mlock)
    backend = LlamaBackend(str(smollm_path), options)
    try:
        result = run_speed_test(backend, SpeedTest(n_prompt=8, n_gen=0), repetitions=1)
    finally:
        backend.close()
    # SmolLM2-135M is a llama-architecture GGUF in Q4_1: llama_model_desc names both
    assert result.model_type.startswith("llama ") and result.model_type.endswith(" Q4_1")
    assert (result.type_k, result.type_v) == (facts["type_k"], facts["type_v"]) == ("f16", "f16")
