"""Every `edgeeval ...` command in the README's first screens still parses: the fenced shell
blocks of its first sections are read, and each command is given to the real parser (a concrete
command must parse as written; a synopsis line such as `edgeeval bench [MODEL ...] [--reps 5]`
must name only options its subcommand has). Each subcommand's --help renders. The cheap ones
(tasks, runs, completion, models) run for real, the worked task example from the README's own
YAML and JSONL; the README's bench example runs on the tiny embedded model (marked real)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from edgeeval.cli.main import build_parser, main

README = Path(__file__).resolve().parent.parent / "README.md"
#: How many `## ` sections count as the first screens (Quick start ... The command line).
FIRST_SECTIONS = 4
#: Subcommands cheap enough to run for real (no model, no download, no network).
CHEAP = {"tasks", "runs", "completion", "models"}


def first_sections(text: str, count: int = FIRST_SECTIONS) -> list[tuple[str, str]]:
    """(heading, body) of the first `count` level-2 sections."""
    parts = re.split(r"(?m)^## (.+)$", text)[1:]
    return [(parts[i].strip(), parts[i + 1]) for i in range(0, 2 * count, 2)]


def fenced(body: str, languages: tuple[str, ...] = ("sh", "bash", "")) -> list[str]:
    """The contents of the fenced blocks in `body` whose language is one of `languages`."""
    return [
        block for lang, block in re.findall(r"(?ms)^```(\w*)\n(.*?)^```", body) if lang in languages
    ]


def commands(block: str) -> list[list[str]]:
    """The edgeeval commands of a shell block as argv lists (without `edgeeval`), comments
    dropped; a line indented under a command continues it (a wrapped synopsis)."""
    found: list[list[str]] = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if line[:1].isspace() and found and words[0].startswith("["):
            found[-1] += words
            continue
        if words[:3] == ["python", "-m", "edgeeval"]:
            words = ["edgeeval", *words[3:]]
        if words[0] == "edgeeval":
            found.append(words[1:])
    return found


def readme_commands() -> list[list[str]]:
    return [
        argv
        for _, body in first_sections(README.read_text(encoding="utf-8"))
        for block in fenced(body)
        for argv in commands(block)
    ]


def is_synopsis(argv: list[str]) -> bool:
    """A usage line with placeholders (`[--reps 5]`, `RUN|--all`, `FILE...`), not a command."""
    return any(("[" in w or "|" in w or "..." in w or w.isupper()) for w in argv)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            assert name in action.choices, f"README names an unknown subcommand: edgeeval {name}"
            return action.choices[name]
    raise AssertionError("no subcommands")


def test_the_first_screens_are_the_sections_this_test_reads():
    """The sections read are the README's start (a reorder that moves them is noticed)."""
    headings = [h for h, _ in first_sections(README.read_text(encoding="utf-8"))]
    assert headings[0] == "Quick start" and "The command line" in headings
    assert len(readme_commands()) >= 20  # the blocks were found and read


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda argv: " ".join(argv)[:60])
def test_each_readme_command_parses(argv, capsys):
    parser = build_parser()
    if is_synopsis(argv):
        sub = _subparser(parser, argv[0])
        known = {s for a in sub._actions for s in a.option_strings}
        options = set(re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", " ".join(argv[1:])))
        assert options <= known, f"edgeeval {' '.join(argv)}: unknown {sorted(options - known)}"
        return
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(
            f"`edgeeval {' '.join(argv)}` does not parse ({exc.code}): {capsys.readouterr().err}"
        )


@pytest.mark.parametrize("sub", sorted({argv[0] for argv in readme_commands()}))
def test_each_readme_subcommand_has_help(sub, capsys):
    with pytest.raises(SystemExit) as done:
        main([sub, "--help"])
    assert done.value.code == 0
    assert f"usage: edgeeval {sub}" in capsys.readouterr().out


def _write_the_readme_task_folder(where: Path) -> Path:
    """my-tasks/ as the README's worked example gives it: its YAML and its JSONL blocks."""
    text = README.read_text(encoding="utf-8")
    (yaml,) = [b for b in fenced(text, ("yaml",)) if b.startswith("name: capitals")]
    (jsonl,) = [b for b in fenced(text, ("json",)) if '"id": "cap-1"' in b]
    folder = where / "my-tasks"
    folder.mkdir()
    (folder / "capitals.yaml").write_text(yaml)
    (folder / "capitals.jsonl").write_text(jsonl)
    return folder


def test_the_cheap_readme_commands_run(tmp_path, monkeypatch, capsys):
    """tasks, runs, completion and models, as written, exit 0; the worked example's task is
    listed from the folder the README's own YAML and JSONL make."""
    _write_the_readme_task_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    ran = []
    for argv in readme_commands():
        if argv[0] not in CHEAP or is_synopsis(argv) or "--fetch" in argv or "--scan" in argv:
            continue
        if "--discover" in argv:  # reads the user's HF, Ollama and LM Studio folders
            continue
        assert main(argv) == 0, f"edgeeval {' '.join(argv)}: {capsys.readouterr().err}"
        out = capsys.readouterr().out
        if argv[0] == "tasks" and "--include-path" in argv:
            assert re.search(r"(?m)^capitals\s+1\s+multiple_choice\s+knowledge\s+3\b", out), out
        ran.append(argv[0])
    assert {"tasks", "completion"} <= set(ran)


@pytest.mark.real
def test_the_readme_bench_example_with_a_user_task_runs(tmp_path, monkeypatch, smollm_path, capsys):
    """The README's `edgeeval bench ... --include-path my-tasks --tasks capitals,facts` on the
    tiny embedded model (given by path, the catalog entry it is), cut short: both tasks are
    scored, capitals from the user's folder."""
    import json

    _write_the_readme_task_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    (argv,) = [a for a in readme_commands() if a[0] == "bench" and "--include-path" in a]
    argv = [str(smollm_path) if w == "smollm2-135m-instruct-q4_1" else w for w in argv]
    fast = ["--reps", "1", "--pp", "16", "--tg", "4", "--limit", "2", "--n-ctx", "256"]
    assert main([*argv, *fast, "--no-ttft", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (row,) = result["rows"]
    assert row["name"] == "smollm2-135m-instruct-q4_1"
    assert set(row["task_acc"]) == {"capitals", "facts"}
    assert Path(result["run_dir"]).parent == tmp_path / "reports"
