"""What a user sees at the terminal when something is wrong: the file, key or value, and the
next step, with an exit code and no traceback (unless EDGEEVAL_DEBUG=1)."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeeval import settings
from edgeeval.cli.main import main, parse_args


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


# --- scripting conventions (issue 22 part 4) -------------------------------------------------


def _save_run(run_id: str, root=None) -> None:
    """A stored run of two variants, each with a pp128 and a tg32 test."""
    import dataclasses

    from edgeeval.store import runs as store
    from tests.builders import record

    root = root or settings.reports_dir()
    store.write_manifest(run_id, {"run_id": run_id, "created_at": "2026-01-01T00:00:00+0000"}, root)
    for name, peak, acc in (("small-q4", 0.3, 0.6), ("big-q8", 0.9, 0.7)):
        made = record(name, peak_gb=peak, acc=acc, pp_samples=(100.0, 110.0))
        store.save_record(dataclasses.replace(made, run_id=run_id), root=root)


def test_global_options_work_after_the_subcommand_too(tmp_path, capsys):
    """--catalog after the subcommand is the same option (the error names the file); given in
    both places, the later one wins; --include-path folders add up."""
    entry = "  - {name: m, family: qwen, model: M, quant: Q8_0, kind: base, sourse: x}"
    path = _catalog(tmp_path, entry)
    assert main(["models", "--catalog", path]) == 2
    assert f"{path}: entry 'm': key 'sourse'" in capsys.readouterr().err
    args = parse_args(["--catalog", "a.yaml", "bench", "--catalog", "b.yaml"])
    assert args.catalog == "b.yaml"
    args = parse_args(["--include-path", "x", "tasks", "--include-path", "y"])
    assert args.include_path == ["x", "y"]
    assert parse_args(["runs"]).catalog is None


def test_lm_eval_underscore_spellings_parse_but_are_not_shown(capsys):
    argv = [
        "--num_fewshot",
        "3",
        "--output_path",
        "out",
        "--include_path",
        "t",
        "--batch_size",
        "4",
    ]
    args = parse_args(["bench", *argv])
    assert (args.num_fewshot, args.output, args.include_path) == (3, "out", ["t"])
    assert args.eval_batch == 4
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    shown = capsys.readouterr().out
    assert "--num-fewshot" in shown and "--output DIR" in shown and "--include-path" in shown
    for hidden in ("--num_fewshot K", "--output_path DIR", "--include_path DIR", "--batch_size B"):
        assert hidden not in shown  # neither in the usage line nor in the option lists


def test_runs_json_and_output_dir(tmp_path, capsys):
    """`runs --json` gives each run's id, directory, start and models; --output DIR reads the
    runs there (and leaves EDGEEVAL_REPORTS as it was afterwards)."""
    elsewhere = tmp_path / "elsewhere"
    _save_run("20260101-000000-aaaaaa", elsewhere)
    before = os.environ["EDGEEVAL_REPORTS"]
    assert main(["runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["runs", "--output", str(elsewhere), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert run["run_id"] == "20260101-000000-aaaaaa"
    assert run["run_dir"] == str((elsewhere / run["run_id"]).resolve())
    assert run["created_at"] == "2026-01-01T00:00:00+0000"
    assert os.environ["EDGEEVAL_REPORTS"] == before
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main(["runs", "--output", str(a_file)]) == 2
    assert f"{a_file}: --output: not a folder" in capsys.readouterr().err


def test_report_prints_the_speed_table_or_json_on_stdout(capsys):
    """-o csv/jsonl/md print speed.csv/.jsonl/.md's rows (llama-bench's fields, one row per
    test); --json gives the run id, the paths and the ranked rows."""
    import csv
    import io

    _save_run("r-speed")
    assert main(["report", "r-speed", "-o", "csv"]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sorted((r["model_filename"], r["test"]) for r in rows) == [
        ("big-q8", "pp128"),
        ("big-q8", "tg32"),
        ("small-q4", "pp128"),
        ("small-q4", "tg32"),
    ]
    assert {"build_commit", "avg_ts", "test_time", "model_type"} <= set(rows[0])
    run_dir = settings.reports_dir() / "r-speed"
    assert out == (run_dir / "speed.csv").read_bytes().decode()  # byte for byte (CRLF, as csv)
    assert main(["report", "r-speed", "-o", "jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == json.loads((run_dir / "speed.json").read_text())
    assert main(["report", "r-speed", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run_id"] == "r-speed" and data["run_dir"] == str(run_dir)
    assert data["paths"]["md"] == str(run_dir / "report.md")
    assert data["paths"]["speed_csv"] == str(run_dir / "speed.csv")
    assert [(r["name"], r["rank"]) for r in data["rows"]][0] == ("small-q4", 1)
    with pytest.raises(SystemExit):  # one or the other
        parse_args(["report", "--json", "-o", "csv"])
    with pytest.raises(SystemExit):
        parse_args(["bench", "-o", "xml"])


def test_completion_script_completes_subcommands_options_and_choices(tmp_path, capsys):
    """The bash script, sourced in a real bash, completes as a user pressing Tab expects; the
    hidden underscore aliases are not offered."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "edgeeval.bash"
    script.write_text(capsys.readouterr().out)
    cases = {
        "edgeeval be": "bench",
        "edgeeval --catalog my.yaml bench --num": "--num-fewshot",
        "edgeeval bench --protocol in": "instruct",
        "edgeeval completion z": "zsh",
        "edgeeval runs --js": "--json",
        "edgeeval report -": None,  # many: checked below
    }
    probe = 'COMP_WORDS=($1); [[ "$1" == *" " ]] && COMP_WORDS+=(""); '
    probe += 'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _edgeeval_complete; echo "${COMPREPLY[*]}"'
    for line, expected in cases.items():
        done = subprocess.run(
            ["bash", "-c", f'source {script}; f() {{ {probe}; }}; f "$0"', line],
            capture_output=True,
            text=True,
            check=True,
        )
        offered = done.stdout.split()
        if expected is not None:
            assert offered == [expected], (line, offered)
        else:
            assert {"--budget-gb", "--json", "-o", "--catalog"} <= set(offered)
            assert not [o for o in offered if "_" in o]
    assert main(["completion", "zsh"]) == 0
    assert "bashcompinit" in capsys.readouterr().out


def test_include_path_adds_a_users_task_folder(tmp_path, capsys):
    """A task in a user folder is listed and selected beside the built-in ones, a suites.yaml
    there adds suites; a missing folder or a taken name is an error naming the file."""
    from edgeeval.tasks.suite import load_suites, select_tasks

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "capitals.yaml").write_text(
        "name: capitals\nversion: 1\ndescription: Capitals.\ncategory: knowledge\n"
        "kind: multiple_choice\nsource: file:capitals.jsonl\nn_items: 2\n"
    )
    (folder / "capitals.jsonl").write_text(
        '{"id": "c1", "question": "Capital of Austria?", "choices": ["Vienna", "Graz"], '
        '"answer": "Vienna"}\n'
        '{"id": "c2", "question": "Capital of Norway?", "choices": ["Oslo", "Bergen"], '
        '"answer": "Oslo"}\n'
    )
    (folder / "suites.yaml").write_text("mine: [capitals, facts]\n")
    assert main(["tasks", "--suite", "mine", "--include-path", str(folder)]) == 0
    listed = capsys.readouterr().out
    assert "capitals" in listed and "facts" in listed and "arith" not in listed.split("suites")[0]
    assert "mine (2)" in listed
    assert "EDGEEVAL_INCLUDE_PATH" not in os.environ  # set for the command only
    assert main(["bench", "--tasks", "capitals", "--limit", "1"]) == 2  # not without the folder
    assert "--include-path" in capsys.readouterr().err
    os.environ["EDGEEVAL_INCLUDE_PATH"] = str(folder)
    try:
        (task,) = select_tasks("", ["capitals"])
        assert [item.gold for item in task.items()] and task.chance == 0.5
        assert load_suites()["mine"] == ("capitals", "facts")
        (folder / "arith.yaml").write_text(
            (folder / "capitals.yaml").read_text().replace("name: capitals", "name: arith")
        )
        assert main(["tasks"]) == 2
        err = capsys.readouterr().err
        assert f"{folder / 'arith.yaml'}: key 'name': task name already defined in" in err
    finally:
        del os.environ["EDGEEVAL_INCLUDE_PATH"]
    assert main(["tasks", "--include-path", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: --include-path: not a folder" in capsys.readouterr().err


def test_exit_codes_match_the_readme_table():
    """Every code the CLI can return (each EdgeevalError's exit_code, argparse's 2, main's own
    constants) is in the README's exit-code table, and the table lists no other."""
    import re

    from edgeeval import errors
    from edgeeval.cli import main as cli_main

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    table = {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.M)}
    classes, todo = set(), [errors.EdgeevalError]
    while todo:
        cls = todo.pop()
        classes.add(cls)
        todo.extend(cls.__subclasses__())
    codes = {cls.exit_code for cls in classes} | {2}  # argparse's usage errors
    codes |= {cli_main.EXIT_OK, cli_main.EXIT_NO_RESULT, cli_main.EXIT_INTERRUPTED}
    codes |= {cli_main.EXIT_BROKEN_PIPE}
    assert table == codes
