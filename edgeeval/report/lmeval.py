"""results.json in lm-evaluation-harness's layout, one per measured variant, beside the report.

lm-eval writes `<output_path>/<model>/results_<date>.json`; edgeeval writes
`<run dir>/lm-eval/<variant>/results.json` from the stored records, so tools that read lm-eval
output (its `make_table`, leaderboard scripts) can read edgeeval's scores. Per task:
`results.<task>` holds "alias" and "<metric>,none" / "<metric>_stderr,none" pairs (acc and
acc_norm for multiple choice, acc for generate tasks, pass@1 for code), and `configs`,
`versions`, `n-shot`, `higher_is_better` and `n-samples` ({original, effective}) hold the rest;
`config` describes the model and the run. Skipped or failed tasks are left out, as lm-eval
has no place for them. Fields edgeeval adds sit under "edgeeval" keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval.store.files import write_atomic

LM_EVAL_DIR = "lm-eval"
FILTER = "none"  # lm-eval's filter name for metrics computed on the raw output


def _is_multiple_choice(t: rec.TaskScore) -> bool:
    return t.protocol == "loglikelihood" or (not t.prompt_format and t.metric == "acc")


def _metrics(t: rec.TaskScore) -> dict[str, float]:
    values = {f"{t.metric},{FILTER}": t.acc, f"{t.metric}_stderr,{FILTER}": t.acc_se}
    if _is_multiple_choice(t):
        values |= {f"acc_norm,{FILTER}": t.acc_norm, f"acc_norm_stderr,{FILTER}": t.acc_norm_se}
    return values


def _task_config(t: rec.TaskScore, settings: rec.RunSettings) -> dict[str, Any]:
    names = [t.metric, "acc_norm"] if _is_multiple_choice(t) else [t.metric]
    return {
        "task": t.task,
        "tag": [t.category],
        "output_type": "multiple_choice" if _is_multiple_choice(t) else "generate_until",
        "num_fewshot": t.n_shot,
        "metric_list": [
            {"metric": m, "aggregation": "mean", "higher_is_better": True} for m in names
        ],
        "generation_kwargs": {"do_sample": False, "temperature": 0.0},
        "metadata": {"version": float(t.version)},
        "edgeeval": {
            "protocol": t.protocol,
            "thinking": t.thinking,
            "prompt_format": t.prompt_format,
            "n_timeout": t.n_timeout,
            "n_harness_error": t.n_harness_error,
            "n_cut_in_thinking": t.n_cut_in_thinking,
            "limit": settings.task_limit,
            "sample": settings.task_sample,
        },
    }


def _model_config(record: rec.ModelRecord) -> dict[str, Any]:
    v, s = record.variant, record.settings
    return {
        "model": "edgeeval-llama-cpp",
        "model_args": f"pretrained={v.model},variant={v.name},quant={v.quant},n_ctx={s.n_ctx}",
        "model_num_parameters": record.n_params or v.params,
        "model_dtype": v.quant,
        "model_revision": "",
        "model_sha": v.sha256,
        "batch_size": s.n_batch,
        "batch_sizes": [],
        "device": record.host.backend,
        "use_cache": None,
        "limit": s.task_limit,
        "bootstrap_iters": 0,
        "gen_kwargs": {"do_sample": False, "temperature": 0.0},
        "random_seed": s.seed,
        "numpy_seed": s.seed,
        "torch_seed": s.seed,
        "fewshot_seed": s.seed,
    }


def results_json(record: rec.ModelRecord) -> dict[str, Any]:
    """The lm-eval shaped results of one record (its scored tasks only)."""
    tasks = [t for t in record.tasks if t.status == rec.STATUS_OK]
    return {
        "results": {t.task: {"alias": t.task, **_metrics(t)} for t in tasks},
        "group_subtasks": {t.task: [] for t in tasks},
        "configs": {t.task: _task_config(t, record.settings) for t in tasks},
        "versions": {t.task: float(t.version) for t in tasks},
        "n-shot": {t.task: t.n_shot for t in tasks},
        "higher_is_better": {
            t.task: {m.split(",")[0]: True for m in _metrics(t) if "_stderr" not in m}
            for t in tasks
        },
        "n-samples": {
            t.task: {
                "original": t.n_source if t.n_source is not None else t.n + t.n_harness_error,
                "effective": t.n + t.n_harness_error,
            }
            for t in tasks
        },
        "config": _model_config(record),
        "git_hash": None,
        "date": record.started_at,
        "model_name": record.variant.name,
        "model_name_sanitized": sanitized(record.variant.name),
        "total_evaluation_time_seconds": str(record.duration_s),
        "edgeeval": {
            "run_id": record.run_id,
            "edgeeval_version": record.host.edgeeval_version,
            "host_id": record.host.host_id,
        },
    }


def sanitized(name: str) -> str:
    """A variant name as a directory name (as lm-eval sanitizes model names)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:120] or "_"


def write_lm_eval(directory: Path, records: Sequence[rec.ModelRecord]) -> dict[str, Path]:
    """Write `lm-eval/<variant>/results.json` under `directory` for each ok record with scored
    tasks; returns their paths by key "lm_eval-<variant>"."""
    paths = {}
    for record in records:
        data = results_json(record)
        if record.status != rec.STATUS_OK or not data["results"]:
            continue
        folder = directory / LM_EVAL_DIR / sanitized(record.variant.name)
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False)
        paths[f"lm_eval-{record.variant.name}"] = write_atomic(folder / "results.json", text)
    return paths
