"""results.json in lm-evaluation-harness's layout, written by the report stage from stored
records, read back the way lm-eval's tooling reads it (its `make_table`: results, versions,
n-shot, higher_is_better, "metric,filter" keys with their "_stderr" partners)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval.report.render import render_run
from edgeeval.store import runs as store
from tests.builders import record


def lm_eval_table(data: dict[str, Any]) -> list[tuple[str, str, Any, str, float, float | None]]:
    """Rows (task, version, n-shot, metric, value, stderr) as lm-eval's make_table builds them:
    every "metric,filter" key of results[task] except alias and the _stderr entries, whose
    stderr is results[task]["metric_stderr,filter"]."""
    rows = []
    for task, values in data["results"].items():
        assert values["alias"] == task
        version = data["versions"].get(task, "N/A")
        shots = data["n-shot"][task]
        for key, value in values.items():
            if key == "alias" or "_stderr" in key:
                continue
            metric, _, filt = key.partition(",")
            assert filt == "none" and isinstance(value, float)
            assert metric in data["higher_is_better"][task]
            stderr = values.get(f"{metric}_stderr,{filt}")
            rows.append((task, str(version), shots, metric, value, stderr))
    return rows


def score(task: str, acc: float, **changes: Any) -> rec.TaskScore:
    return rec.TaskScore(
        task=task,
        version=2,
        category="knowledge",
        chance=0.25,
        n=40,
        acc=acc,
        acc_se=0.05,
        acc_norm=acc + 0.1,
        acc_norm_se=0.06,
        elapsed_s=1.0,
        **changes,
    )


def build(run_id: str, tasks: tuple[rec.TaskScore, ...]) -> Path:
    settings = rec.RunSettings(task_limit=40, seed=3)
    measured = dataclasses.replace(
        record("qwen-coder", peak_gb=0.6, acc=0.5, run_id=run_id, settings=settings),
        tasks=tasks,
    )
    store.write_manifest(
        run_id,
        {"run_id": run_id, "host": rec.to_dict(measured.host), "settings": rec.to_dict(settings)},
    )
    store.save_record(measured)
    return store.run_dir(run_id)


def test_results_json_reads_back_as_lm_eval_output():
    tasks = (
        score("arc-easy", 0.5, protocol="loglikelihood", n_shot=0, n_source=2376),
        score("gsm8k", 0.25, protocol="instruct", prompt_format="chat", n_shot=4, n_source=1319),
        score("humaneval", 0.4, metric="pass@1", protocol="instruct", n_shot=0, n_harness_error=2),
        dataclasses.replace(score("skipped", 0.0), status=rec.STATUS_SKIPPED),
    )
    directory = build("lm1", tasks)
    _, _, paths = render_run("lm1")
    path = paths["lm_eval-qwen-coder"]
    assert path == directory / "lm-eval" / "qwen-coder" / "results.json"
    data = json.loads(path.read_text())
    for key in ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples"):
        assert set(data[key]) == {"arc-easy", "gsm8k", "humaneval"}, key
    assert lm_eval_table(data) == [
        ("arc-easy", "2.0", 0, "acc", 0.5, 0.05),
        ("arc-easy", "2.0", 0, "acc_norm", 0.6, 0.06),
        ("gsm8k", "2.0", 4, "acc", 0.25, 0.05),
        ("humaneval", "2.0", 0, "pass@1", 0.4, 0.05),
    ]
    assert data["n-samples"]["arc-easy"] == {"original": 2376, "effective": 40}
    assert data["n-samples"]["humaneval"] == {"original": 42, "effective": 42}
    assert data["configs"]["arc-easy"]["output_type"] == "multiple_choice"
    assert data["configs"]["gsm8k"]["num_fewshot"] == 4
    assert data["configs"]["gsm8k"]["metadata"]["version"] == 2.0
    assert data["configs"]["gsm8k"]["edgeeval"]["protocol"] == "instruct"
    config = data["config"]
    assert (config["limit"], config["random_seed"], config["model_sha"]) == (
        40,
        3,
        "qwen-coder".ljust(64, "0"),
    )
    assert "pretrained=qwen-coder" in config["model_args"]
    report = (directory / "report.md").read_text()
    assert "## How each task was asked" in report
    assert "| qwen-coder | humaneval | instruct | - | 0 | 40 | 40.0 | 0 | 2 | 0 | 0 |" in report


def test_records_from_before_protocols_keep_their_report_and_still_get_results_json():
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
