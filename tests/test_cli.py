"""What a user sees at the terminal when something is wrong: the file, key or value, and the
next step, with an exit code and no traceback (unless EDGEEVAL_DEBUG=1)."""

import hashlib

from edgeeval.cli.main import main


def _catalog(tmp_path, entry: str) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(f"variants:\n{entry}\nsets:\n  default: [m]\n")
    return str(path)


def _local_entry(path, sha: str) -> str:
    return (
        f"  - {{name: m, family: qwen, model: M, quant: Q8_0, kind: base, license: mit, "
        f'sha256: {sha}, source: {{local: {{path: "{path}"}}}}}}'
    )


def test_sha256_mismatch_shows_expected_and_actual(tmp_path, capsys):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF not really a model")
    wrong = "ab" * 32
    code = main(["--catalog", _catalog(tmp_path, _local_entry(model, wrong)), "fetch"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"expected {wrong}" in err
    assert hashlib.sha256(model.read_bytes()).hexdigest() in err
    assert model.exists()  # a user's own local file is never deleted
    assert "Traceback" not in err


def test_unknown_model_suggests_a_name(capsys):
    code = main(["fetch", "smollm2-135m-instruct"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown model or set 'smollm2-135m-instruct'" in err
    assert "did you mean 'smollm2-135m-instruct-q4_1'" in err
    assert "edgeeval models" in err


def test_broken_catalog_names_file_entry_and_key(tmp_path, capsys):
    entry = (
        "  - {name: m, family: qwen, model: M, quant: Q8_0, kind: base, license: mit,\n"
        "     sourse: {local: {path: x}}}"
    )
    path = _catalog(tmp_path, entry)
    code = main(["--catalog", path, "models"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}: entry 'm': key 'sourse': unknown key; did you mean 'source'?" in err


def test_debug_mode_shows_the_traceback(capsys, monkeypatch):
    monkeypatch.setenv("EDGEEVAL_DEBUG", "1")
    assert main(["fetch", "nope-model"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_report_of_a_missing_run_says_how_to_list_runs(capsys):
    assert main(["report", "no-such-run"]) == 1
    assert "edgeeval runs" in capsys.readouterr().err
