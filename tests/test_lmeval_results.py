"""lm-evaluation-harness's output files, written by the report stage from stored records and
per-item lines: `lm-eval/<variant>/results_<date>.json` and `samples_<task>_<date>.jsonl`,
read back the way lm-eval's own tools read them. Without lm-eval, `lm_eval_table` rebuilds
make_table's rows from the keys it reads; with lm-eval, its own file discovery and make_table
read the files, in a child python: this venv's when lm-eval is installed in it (pip install
lm-eval==0.4.13), else the separate one `make lmeval-tools` makes under .bench-tools/ (what
.ci/run does); with neither, that test skips, saying how to get one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgeeval import records as rec
from edgeeval.report.lmeval import sanitized
from edgeeval.report.protocols import THINKING_OFF_SUFFIX
from edgeeval.report.render import render_run
from edgeeval.store import runs as store
from tests.builders import record

STAMP = "2026-01-01T00-00-00.000000"  # the builders' started_at, 2026-01-01T00:00:00+0000
INSTALL = (
    "lm-eval is not installed: `make lmeval-tools` (its own venv under .bench-tools/), or "
    "pip install lm-eval==0.4.13 (no torch needed)"
)
REPO = Path(__file__).resolve().parent.parent
LMEVAL_VENV_PYTHON = REPO / ".bench-tools" / "lmeval-venv" / "bin" / "python"
#: What lm-eval's own loaders see in one folder, printed as JSON by a python that has lm-eval.
LM_EVAL_PROBE = """
import json, sys
from pathlib import Path
from lm_eval import utils
folder = Path(sys.argv[1])
files = [p.as_posix() for p in folder.iterdir()]  # as lm-eval's zeno script lists them
results = utils.get_results_filenames(files)
latest = utils.get_latest_filename(results)
samples = utils.get_sample_results_filenames(files)
print(json.dumps({
    "results": results,
    "latest": latest,
    "table": utils.make_table(json.loads(Path(latest).read_text())),
    "samples": [
        [f, utils.get_file_task_name(Path(f).name), utils.get_file_datetime(f)] for f in samples
    ],
}))
"""


def lm_eval_table(data: dict[str, Any]) -> list[tuple[str, str, Any, str, float, float | None]]:
    """Rows (task, version, n-shot, metric, value, stderr) as lm-eval's make_table builds them:
    every "metric,filter" key of results[task] except name, alias, sample_len and the _stderr
    entries, whose stderr is results[task]["metric_stderr,filter"]."""
    rows = []
    for task, values in data["results"].items():
        assert values["alias"] == values["name"] == task
        assert isinstance(values["sample_len"], int)
        version = data["versions"].get(task, "N/A")
        shots = data["n-shot"][task]
        for key, value in values.items():
            if key in ("name", "alias", "sample_len") or "_stderr" in key:
                continue
            metric, _, filt = key.partition(",")
            assert filt == "none" and isinstance(value, float)
            assert metric in data["higher_is_better"][task]
            stderr = values.get(f"{metric}_stderr,{filt}")
            rows.append((task, str(version), shots, metric, value, stderr))
    return rows


def score(task: str, acc: float, **changes: Any) -> rec.TaskScore:
    fields: dict[str, Any] = {
        "task": task,
        "version": 2,
        "category": "knowledge",
        "chance": 0.25,
        "n": 40,
        "acc": acc,
        "acc_se": 0.05,
        "acc_norm": acc + 0.1,
        "acc_norm_se": 0.06,
        "elapsed_s": 1.0,
    }
    return rec.TaskScore(**(fields | changes))


def mc(task: str, item: str, gold: int, logliks: tuple[float, ...]) -> rec.SampleResult:
    return rec.SampleResult(task, item, gold, logliks, tuple(len(item) + i for i in range(3)))


def gen(task: str, item: str, correct: bool, **changes: Any) -> rec.GenSampleResult:
    fields: dict[str, Any] = {
        "task": task,
        "item_id": item,
        "kind": "generate",
        "status": "ok",
        "prompt": f"Q {item}?",
        "output": f"... {item}",
        "gold": "7",
        "extracted": "7" if correct else "8",
        "correct": correct,
    }
    return rec.GenSampleResult(**(fields | changes))


def build(
    run_id: str,
    tasks: tuple[rec.TaskScore, ...],
    samples: tuple[rec.SampleResult, ...] = (),
    generations: tuple[rec.GenSampleResult, ...] = (),
) -> Path:
    settings = rec.RunSettings(task_limit=40, seed=3)
    measured = dataclasses.replace(
        record("qwen-coder", peak_gb=0.6, acc=0.5, run_id=run_id, settings=settings),
        tasks=tasks,
    )
    measured = dataclasses.replace(
        measured, memory=dataclasses.replace(measured.memory, eval_batch=4)
    )
    store.write_manifest(
        run_id,
        {"run_id": run_id, "host": rec.to_dict(measured.host), "settings": rec.to_dict(settings)},
    )
    store.save_record(measured, samples, generations=generations)
    return store.run_dir(run_id)


def read_samples(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


TASKS = (
    score("arc-easy", 0.5, protocol="loglikelihood", n=2, n_shot=0, n_source=2376),
    score("gsm8k", 0.5, protocol="instruct", prompt_format="chat", n=2, n_shot=4, n_source=1319),
    score("humaneval-full", 0.4, metric="pass@1", protocol="completion", n_harness_error=2),
    dataclasses.replace(score("skipped", 0.0), status=rec.STATUS_SKIPPED),
)
SAMPLES = (mc("arc-easy", "a1", 0, (-1.0, -2.0, -3.0)), mc("arc-easy", "a2", 2, (-1.0, -9.0, -5.0)))
GENERATIONS = (
    gen("gsm8k", "g1", True),
    gen("gsm8k", "g2", False),
    gen("gsm8k", "g3", False, status="error"),  # a harness error: not a document of the score
)


def test_results_file_has_lm_evals_name_fields_and_types():
    directory = build("lm1", TASKS, SAMPLES, GENERATIONS)
    _, _, paths = render_run("lm1")
    folder = directory / "lm-eval" / "qwen-coder"
    assert paths["lm_eval-qwen-coder"] == folder / f"results_{STAMP}.json"
    data = json.loads(paths["lm_eval-qwen-coder"].read_text())
    names = {"arc_easy", "gsm8k", "humaneval"}  # lm-eval's names where the task is lm-eval's
    for key in ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples"):
        assert set(data[key]) == names, key
    assert lm_eval_table(data) == [
        ("arc_easy", "2.0", 0, "acc", 0.5, 0.05),
        ("arc_easy", "2.0", 0, "acc_norm", 0.6, 0.06),
        ("gsm8k", "2.0", 4, "acc", 0.5, 0.05),
        ("humaneval", "2.0", None, "pass@1", 0.4, 0.05),
    ]
    assert data["results"]["arc_easy"]["sample_len"] == 2
    assert data["n-samples"]["arc_easy"] == {"original": 2376, "effective": 2}
    assert data["n-samples"]["humaneval"] == {"original": 42, "effective": 42}
    assert data["date"] == 1767225600.0  # a UNIX time, as lm-eval's time.time()
    assert data["config"]["batch_size"] == "4"  # sequences per batch, not n_batch
    assert data["config"]["edgeeval"]["n_batch"] == rec.RunSettings().n_batch
    assert data["configs"]["arc_easy"]["edgeeval"]["task"] == "arc-easy"
    assert data["configs"]["arc_easy"]["output_type"] == "multiple_choice"
    assert data["configs"]["gsm8k"]["metadata"]["version"] == 2.0
    config = data["config"]
    assert (config["limit"], config["random_seed"], config["model_sha"]) == (
        40,
        3,
        "qwen-coder".ljust(64, "0"),
    )
    samples = read_samples(folder / f"samples_arc_easy_{STAMP}.jsonl")
    joined = "".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in samples)
    assert data["task_hashes"]["arc_easy"] == sha(joined)
    assert set(data["task_hashes"]) == {"arc_easy", "gsm8k"}  # humaneval stored no lines
    report = (directory / "report.md").read_text()
    assert "## How each task was asked" in report


def test_samples_files_hold_one_line_per_scored_document_in_lm_evals_shape():
    directory = build("lm2", TASKS, SAMPLES, GENERATIONS)
    render_run("lm2")
    folder = directory / "lm-eval" / "qwen-coder"
    arc = read_samples(folder / f"samples_arc_easy_{STAMP}.jsonl")
    assert [s["doc_id"] for s in arc] == [0, 1]
    first, second = arc
    assert first["doc"] == {"id": "a1", "gold": 0, "choice_chars": [2, 3, 4]}
    assert first["target"] == "0" and first["target_hash"] == sha("0")
    assert first["resps"] == [[["-1.0", "None"]], [["-2.0", "None"]], [["-3.0", "None"]]]
    assert first["filtered_resps"] == [["-1.0", "None"], ["-2.0", "None"], ["-3.0", "None"]]
    assert set(first["arguments"]) == {"gen_args_0", "gen_args_1", "gen_args_2"}
    assert (first["filter"], first["metrics"]) == ("none", ["acc", "acc_norm"])
    assert (first["acc"], first["acc_norm"]) == (1.0, 1.0)
    # a2: gold 2; raw pick is choice 0 (-1.0), per character choice 0 too (-1/2 > -5/4)
    assert (second["acc"], second["acc_norm"]) == (0.0, 0.0)
    doc_text = json.dumps(first["doc"], indent=2, ensure_ascii=False)
    assert first["doc_hash"] == sha(doc_text)
    gsm = read_samples(folder / f"samples_gsm8k_{STAMP}.jsonl")
    assert [s["doc"]["id"] for s in gsm] == ["g1", "g2"]  # the harness error is left out
    assert gsm[0]["arguments"]["gen_args_0"]["arg_0"] == "Q g1?"
    assert gsm[0]["prompt_hash"] == sha("Q g1?")
    assert (gsm[0]["resps"], gsm[0]["filtered_resps"], gsm[0]["target"]) == (
        [["... g1"]],
        ["7"],
        "7",
    )
    assert [s["acc"] for s in gsm] == [1.0, 0.0]
    assert sorted(p.name for p in folder.iterdir()) == [
        f"results_{STAMP}.json",
        f"samples_arc_easy_{STAMP}.jsonl",
        f"samples_gsm8k_{STAMP}.jsonl",
    ]


def test_thinking_on_and_off_are_two_models_each_with_its_own_lines():
    tasks = (
        score("arc-easy", 0.5, protocol="loglikelihood", n=2),
        score("gsm8k", 1.0, protocol="instruct", prompt_format="chat", n=1, thinking="on"),
        score("gsm8k", 0.0, protocol="instruct", prompt_format="chat", n=1, thinking="off"),
    )
    generations = (
        gen("gsm8k", "g1", True, thinking="on"),
        gen("gsm8k", "g1", False, thinking="off"),
    )
    directory = build("lm3", tasks, SAMPLES, generations)
    _, _, paths = render_run("lm3")
    on = directory / "lm-eval" / "qwen-coder"
    off = directory / "lm-eval" / sanitized("qwen-coder" + THINKING_OFF_SUFFIX)
    assert sorted((directory / "lm-eval").iterdir()) == sorted([on, off])
    assert set(paths) >= {"lm_eval-qwen-coder", "lm_eval-qwen-coder" + THINKING_OFF_SUFFIX}
    for folder, acc in ((on, 1.0), (off, 0.0)):
        assert [s["acc"] for s in read_samples(folder / f"samples_gsm8k_{STAMP}.jsonl")] == [acc]
    for folder in (on, off):  # multiple choice scores in both
        assert len(read_samples(folder / f"samples_arc_easy_{STAMP}.jsonl")) == 2


def test_lines_of_another_variant_are_not_taken():
    directory = build("lm4", TASKS, SAMPLES, GENERATIONS)
    other = dataclasses.replace(
        record("other", peak_gb=0.5, acc=0.5, run_id="lm4"), tasks=TASKS[:1]
    )
    store.save_record(other, (mc("arc-easy", "z9", 1, (-3.0, -1.0, -2.0)),))
    render_run("lm4")
    mine = read_samples(directory / "lm-eval" / "qwen-coder" / f"samples_arc_easy_{STAMP}.jsonl")
    theirs = read_samples(directory / "lm-eval" / "other" / f"samples_arc_easy_{STAMP}.jsonl")
    assert [s["doc"]["id"] for s in mine] == ["a1", "a2"]
    assert [(s["doc"]["id"], s["acc"]) for s in theirs] == [("z9", 1.0)]


def test_two_tasks_that_would_share_an_lm_eval_name_keep_edgeevals_names():
    tasks = (
        score("humaneval", 0.5, metric="pass@1", protocol="completion"),
        score("humaneval-full", 0.4, metric="pass@1", protocol="completion"),
        score("arc-challenge", 0.3, protocol="loglikelihood"),
    )
    directory = build("lm5", tasks)
    _, _, paths = render_run("lm5")
    data = json.loads(paths["lm_eval-qwen-coder"].read_text())
    assert set(data["results"]) == {"humaneval", "humaneval-full", "arc_challenge"}
    assert not list((directory / "lm-eval" / "qwen-coder").glob("samples_*"))


def test_records_from_before_protocols_keep_their_report_and_still_get_results():
    directory = build("old1", (score("t", 0.5),))
    _, _, paths = render_run("old1")
    report = (directory / "report.md").read_text()
    html = (directory / "report.html").read_text()
    assert "How each task was asked" not in report and "How each task was asked" not in html
    data = json.loads(paths["lm_eval-qwen-coder"].read_text())
    assert lm_eval_table(data) == [
        ("t", "2.0", None, "acc", 0.5, 0.05),
        ("t", "2.0", None, "acc_norm", 0.6, 0.06),
    ]


def lm_eval_python() -> str:
    """A python that imports lm_eval.utils: this one, else .bench-tools/lmeval-venv's (`make
    lmeval-tools`); the test skips with the install command when neither does."""
    for python in (sys.executable, str(LMEVAL_VENV_PYTHON)):
        if not Path(python).exists():
            continue
        probe = subprocess.run([python, "-c", "import lm_eval.utils"], capture_output=True)
        if probe.returncode == 0:
            return python
    pytest.skip(INSTALL)


def test_lm_evals_own_loaders_find_and_read_the_files():
    python = lm_eval_python()
    directory = build("lm6", TASKS, SAMPLES, GENERATIONS)
    render_run("lm6")
    folder = directory / "lm-eval" / "qwen-coder"
    run = subprocess.run([python, "-c", LM_EVAL_PROBE, str(folder)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout)
    results = seen["results"]
    assert results == [(folder / f"results_{STAMP}.json").as_posix()]
    latest = seen["latest"]
    assert latest == results[0]
    data = json.loads(Path(latest).read_text())
    table = seen["table"]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    rows = [(c[0], c[3], c[4], c[6], c[8]) for c in cells]  # task, n-shot, metric, value, stderr
    assert rows == [
        ("arc_easy", "0", "acc", "0.5", "0.05"),
        ("", "0", "acc_norm", "0.6", "0.06"),
        ("gsm8k", "4", "acc", "0.5", "0.05"),
        ("humaneval", "None", "pass@1", "0.4", "0.05"),
    ]
    sample_files = {name: task for name, task, _ in seen["samples"]}
    tasks = set(sample_files.values())
    assert tasks == {"arc_easy", "gsm8k"} and tasks <= set(data["configs"])
    assert {stamp for _, _, stamp in seen["samples"]} == {STAMP}  # the results' stamp
    for name, task in sample_files.items():
        metrics = [m["metric"] for m in data["configs"][task]["metric_list"]]
        for line in read_samples(Path(name)):  # as the zeno script and W&B tables read them
            assert all(isinstance(line[m], float) for m in metrics)
            assert isinstance(line["arguments"]["gen_args_0"]["arg_0"], str)
