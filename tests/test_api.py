"""The Python API: edgeeval.bench / load_run / run_settings, and the wheel that ships the data.

The wheel test builds edgeeval's wheel, installs it into a new virtual environment (the heavy
dependencies, llama-cpp-python included, are borrowed from the running environment through a
.pth line, so nothing is rebuilt or downloaded), and runs `edgeeval bench` on the smallest
model from an empty directory with no checkout in sight.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

import pytest

import edgeeval
from edgeeval import records as rec
from edgeeval.engine import backend
from edgeeval.engine.host import LibraryInfo
from edgeeval.errors import EdgeevalError
from edgeeval.store import runs as store
from tests.builders import record
from tests.conftest import REPO


def test_run_settings_take_cli_names_and_refuse_unknown_ones(monkeypatch):
    monkeypatch.setattr(backend, "library_info", lambda: LibraryInfo(gpu_offload=True))
    settings = edgeeval.run_settings(reps=2, pp=32, limit=5, depths=[0, 512])
    assert (settings.repetitions, settings.pp_tokens, settings.task_limit) == (2, 32, 5)
    assert settings.depths == (0, 512) and settings.n_gpu_layers == 99
    assert edgeeval.run_settings(n_gpu_layers=0).n_gpu_layers == 0
    with pytest.raises(TypeError, match="'repz'"):
        edgeeval.run_settings(repz=2)


def _stored_run() -> None:
    store.write_manifest("r1", {"run_id": "r1"})
    store.save_record(record("big", peak_gb=2.0, acc=0.7))
    store.save_record(record("small", peak_gb=0.3, acc=0.6))
    store.save_record(record("broken", peak_gb=0.1, acc=0.0, status=rec.STATUS_ERROR))


def test_load_run_returns_records_and_the_ranking():
    _stored_run()
    run = edgeeval.load_run("latest")
    assert run.run_id == "r1"
    assert {r.variant.name for r in run.records} == {"big", "small", "broken"}
    assert [r.name for r in run.rows][:2] == ["small", "big"]  # capability per GB
    assert run.rows[-1].rank is None  # the failed variant is listed, never ranked


def test_a_run_directory_outside_the_reports_dir_is_read_where_it_is(tmp_path, monkeypatch, capsys):
    """load_run(DIR) and `edgeeval report DIR` for a copied run, from another working
    directory, with EDGEEVAL_REPORTS pointing at an empty folder (issue 22)."""
    import shutil

    from edgeeval.cli.main import main

    _stored_run()
    elsewhere = tmp_path / "elsewhere" / "r1"
    shutil.copytree(store.run_dir("r1"), elsewhere)
    monkeypatch.setenv("EDGEEVAL_REPORTS", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    run = edgeeval.load_run(str(elsewhere))
    assert run.run_id == "r1"
    assert {r.variant.name for r in run.records} == {"big", "small", "broken"}
    assert not (elsewhere / "report.md").exists()
    assert main(["report", str(elsewhere)]) == 0
    assert f"report: {elsewhere / 'report.md'}" in capsys.readouterr().out
    assert (elsewhere / "report.md").exists()
    assert not (tmp_path / "empty").exists()  # nothing written to the reports dir
    with pytest.raises(EdgeevalError, match="r1"):  # an id is still looked up there
        edgeeval.load_run("r1")


def test_dataframe_has_one_row_per_variant_with_task_columns(monkeypatch):
    _stored_run()
    seen = {}
    fake = types.ModuleType("pandas")
    fake.DataFrame = lambda rows: seen.setdefault("rows", rows)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pandas", fake)

    rows = edgeeval.load_run().dataframe()

    assert [r["name"] for r in rows][:2] == ["small", "big"]
    assert rows[0]["acc:t"] == 0.6 and "task_acc" not in rows[0]


def test_dataframe_without_pandas_says_how_to_install_it(monkeypatch):
    _stored_run()
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(EdgeevalError, match="pip install pandas"):
        edgeeval.load_run().dataframe()


def _clean_env() -> dict[str, str]:
    """This environment without PYTHON* and EDGEEVAL_* variables (no checkout on sys.path)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("EDGEEVAL_", "PYTHON"))}


def _venv_with_wheel(tmp_path: Path) -> Path:
    """A new venv with edgeeval's freshly built wheel; dependencies borrowed, not installed."""
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(wheels)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("edgeeval-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q"]
        + ["--no-index", "--force-reinstall", str(wheel)],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    # Then the running environment's packages, after the venv's own: a .pth line adds the
    # directory without running its .pth files, so the checkout's editable hook stays off.
    Path(site, "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.mark.real
def test_installed_wheel_benches_the_smallest_model_from_an_empty_directory(
    tmp_path: Path, smollm_path: Path
) -> None:
    venv = _venv_with_wheel(tmp_path)
    work = tmp_path / "empty"
    work.mkdir()
    env = _clean_env()
    env["EDGEEVAL_HOME"] = str(tmp_path / "home")
    edgeeval_cli = str(venv / "bin" / "edgeeval")

    where = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import edgeeval, edgeeval.settings as s; "
            "print(edgeeval.__file__); print(s.package_root())",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(venv)) and where[1].endswith("edgeeval/_data")

    listed = subprocess.run(
        [edgeeval_cli, "models"], capture_output=True, text=True, cwd=work, env=env
    )
    assert listed.returncode == 0 and "qwen3-0.6b-q8_0" in listed.stdout, listed.stderr

    done = subprocess.run(
        [edgeeval_cli, "bench", str(smollm_path), "--reps", "1", "--pp", "16", "--tg", "4"]
        + ["--limit", "2", "--n-ctx", "256", "--no-ttft", "--suite", "quick"],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    reports = list((work / "reports").glob("*/report.md"))
    assert len(reports) == 1 and "q4_1" in reports[0].read_text()
