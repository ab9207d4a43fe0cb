"""lm-evaluation-harness's output files, one folder per measured variant, beside the report.

lm-eval 0.4.13 writes `<output_path>/<model>/results_<date>.json` and, with --log_samples,
`samples_<task>_<date>.jsonl` beside it, `<date>` being an ISO timestamp with ':' as '-'
(its `get_results_filenames`, `get_sample_results_filenames` and `get_file_task_name` find
them by these names). edgeeval writes the same names under `<run dir>/lm-eval/<variant>/`
from the stored records and per-item lines, the timestamp being the record's start (UTC), so
re-rendering a run rewrites the same files.

results: per task `results.<task>` holds name, alias, sample_len and "<metric>,none" /
"<metric>_stderr,none" pairs (acc and acc_norm for multiple choice, acc for generate tasks,
pass@1 for code); `configs`, `versions`, `n-shot`, `higher_is_better`, `n-samples`
({original, effective}) and `task_hashes` hold the rest; `config` describes the model and the
run (`batch_size` is the accuracy phase's sequences per batch, a string as lm-eval writes it);
`date` is a UNIX time. Skipped or failed tasks are left out, as lm-eval has no place for them.
Fields edgeeval adds sit under "edgeeval" keys.

samples: one line per scored item in lm-eval's per-document shape (doc_id, doc, target,
arguments as {"gen_args_N": {"arg_0", "arg_1"}}, resps, filtered_resps, filter, metrics, the
per-item metric values, doc_hash, prompt_hash, target_hash), from the store's samples.jsonl
and generations.jsonl lines that name this record (store.items attribution; runs stored
before lines named their variant get no samples files). Multiple choice lines keep only the
log-likelihoods, so `doc` holds the item id and gold index, each choice's context and
continuation are empty, and `is_greedy` is "None" (not measured).

Task names are lm-eval's where the task is lm-eval's (LM_EVAL_NAMES); the others keep
edgeeval's name.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval.metrics import pick
from edgeeval.report.protocols import split_thinking
from edgeeval.safeio import open_regular
from edgeeval.settings import ISO_TIME
from edgeeval.store.files import write_atomic
from edgeeval.store.items import GENERATIONS, JUDGED, SAMPLES, line_key

LM_EVAL_DIR = "lm-eval"
FILTER = "none"  # lm-eval's filter name for metrics computed on the raw output
#: edgeeval task -> lm-eval task, for the tasks that are lm-eval's: same data, same prompt,
#: same scoring (a sample of the items, when fewer than all were run, shows in n-samples).
#: Not here: winogrande (scored on the option plus the rest, not lm-eval's partial scoring),
#: gsm8k (edgeeval's own four worked examples and last-number extraction), humaneval (a
#: seeded 20-problem sample).
LM_EVAL_NAMES = {
    "arc-easy": "arc_easy",
    "arc-challenge": "arc_challenge",
    "hellaswag": "hellaswag",
    "mmlu": "mmlu",
}
#: Code tasks are lm-eval's `humaneval` only when asked as a plain completion (lm-eval's way).
COMPLETION_NAMES = {"humaneval-full": "humaneval"}
UNKNOWN = "None"  # a value lm-eval records but edgeeval does not measure (is_greedy), as str


def _is_multiple_choice(t: rec.TaskScore) -> bool:
    return t.protocol == "loglikelihood" or (not t.prompt_format and t.metric == "acc")


def lm_eval_name(t: rec.TaskScore) -> str:
    """The task's name in lm-eval where it is lm-eval's task, else edgeeval's."""
    if t.task in LM_EVAL_NAMES:
        return LM_EVAL_NAMES[t.task]
    if t.task in COMPLETION_NAMES and t.protocol == "completion":
        return COMPLETION_NAMES[t.task]
    return t.task


def _names(tasks: Sequence[rec.TaskScore]) -> dict[str, str]:
    """edgeeval task -> name in the files; edgeeval's names where two would share one."""
    wanted = {t.task: lm_eval_name(t) for t in tasks}
    taken = list(wanted.values()) + [t.task for t in tasks if wanted[t.task] != t.task]
    return {k: v if taken.count(v) == 1 else k for k, v in wanted.items()}


def _metrics(t: rec.TaskScore) -> dict[str, float]:
    values = {f"{t.metric},{FILTER}": t.acc, f"{t.metric}_stderr,{FILTER}": t.acc_se}
    if _is_multiple_choice(t):
        values |= {f"acc_norm,{FILTER}": t.acc_norm, f"acc_norm_stderr,{FILTER}": t.acc_norm_se}
    return values


def _metric_names(t: rec.TaskScore) -> list[str]:
    return [t.metric, "acc_norm"] if _is_multiple_choice(t) else [t.metric]


def _task_config(t: rec.TaskScore, name: str, settings: rec.RunSettings) -> dict[str, Any]:
    return {
        "task": name,
        "tag": [t.category],
        "output_type": "multiple_choice" if _is_multiple_choice(t) else "generate_until",
        "num_fewshot": t.n_shot,
        "metric_list": [
            {"metric": m, "aggregation": "mean", "higher_is_better": True} for m in _metric_names(t)
        ],
        "generation_kwargs": {"do_sample": False, "temperature": 0.0},
        "metadata": {"version": float(t.version)},
        "edgeeval": {
            "task": t.task,
            "protocol": t.protocol,
            "thinking": t.thinking,
            "prompt_format": t.prompt_format,
            "n_timeout": t.n_timeout,
            "n_harness_error": t.n_harness_error,
            "n_cut_in_thinking": t.n_cut_in_thinking,
            "n_thinking_forced": t.n_thinking_forced,
            "limit": settings.task_limit,
            "sample": settings.task_sample,
        },
    }


def _model_config(record: rec.ModelRecord) -> dict[str, Any]:
    v, s = record.variant, record.settings
    eval_batch = record.memory.eval_batch if record.memory is not None else s.eval_batch or 1
    return {
        "model": "edgeeval-llama-cpp",
        "model_args": f"pretrained={v.model},variant={v.name},quant={v.quant},n_ctx={s.n_ctx}",
        "model_num_parameters": record.n_params or v.params,
        "model_dtype": v.quant,
        "model_revision": "",
        "model_sha": v.sha256,
        "batch_size": str(eval_batch),  # sequences per batch, as lm-eval's --batch_size
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
        "edgeeval": {"n_batch": s.n_batch, "n_ubatch": s.n_ubatch},
    }


def started(record: rec.ModelRecord) -> datetime:
    """The record's start as a UTC datetime (the epoch when it cannot be read)."""
    for fmt in (ISO_TIME, "%Y-%m-%dT%H:%M:%S.%f%z"):  # as written, or with microseconds
        try:
            return datetime.strptime(record.started_at, fmt).astimezone(timezone.utc)
        except ValueError:
            continue
    try:
        moment = datetime.fromisoformat(record.started_at)
    except ValueError:
        return datetime.fromtimestamp(0, timezone.utc)
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def date_id(record: rec.ModelRecord) -> str:
    """The file names' timestamp: lm-eval's datetime.isoformat() with ':' as '-' (UTC here)."""
    return started(record).replace(tzinfo=None).isoformat(timespec="microseconds").replace(":", "-")


def results_json(
    record: rec.ModelRecord, samples: dict[str, list[dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """The lm-eval shaped results of one record (its scored tasks only); `samples`, by file
    task name, gives each task's hash (lm-eval's task_hashes)."""
    tasks = [t for t in record.tasks if t.status == rec.STATUS_OK]
    names = _names(tasks)
    by = {names[t.task]: t for t in tasks}
    return {
        "results": {
            n: {"name": n, "alias": n, "sample_len": t.n, **_metrics(t)} for n, t in by.items()
        },
        "group_subtasks": {n: [] for n in by},
        "configs": {n: _task_config(t, n, record.settings) for n, t in by.items()},
        "versions": {n: float(t.version) for n, t in by.items()},
        "n-shot": {n: t.n_shot for n, t in by.items()},
        "higher_is_better": {n: {m: True for m in _metric_names(t)} for n, t in by.items()},
        "n-samples": {
            n: {
                "original": t.n_source if t.n_source is not None else t.n + t.n_harness_error,
                "effective": t.n + t.n_harness_error,
            }
            for n, t in by.items()
        },
        "config": _model_config(record),
        "git_hash": None,
        "date": started(record).timestamp(),
        "task_hashes": {
            n: _sha("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in lines))
            for n, lines in (samples or {}).items()
            if lines
        },
        "model_source": "edgeeval",
        "model_name": record.variant.name,
        "model_name_sanitized": sanitized(record.variant.name),
        "system_instruction": None,
        "system_instruction_sha": None,
        "fewshot_as_multiturn": None,
        "chat_template": None,
        "chat_template_sha": None,
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


# --- per-item lines --------------------------------------------------------------------------


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The file's readable JSON object lines (none when it is missing); torn lines skipped."""
    if not path.exists():
        return []
    with open_regular(path) as fh:
        blob = fh.read()
    out = []
    for raw in blob.split(b"\n"):
        try:
            data = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue
        if isinstance(data, dict) and "task" in data and "item_id" in data:
            out.append(data)
    return out


def _mc_sample(doc_id: int, d: dict[str, Any], t: rec.TaskScore) -> dict[str, Any] | None:
    try:
        logliks = [float(x) for x in d["logliks"]]
        chars = [int(c) for c in d["choice_chars"]]
        gold = int(d["gold"])
    except (KeyError, TypeError, ValueError):
        return None
    per_choice = [[str(ll), UNKNOWN] for ll in logliks]
    values = {
        "acc": float(pick(logliks, chars, normalize=False) == gold),
        "acc_norm": float(pick(logliks, chars, normalize=True) == gold),
    }
    doc = {"id": str(d["item_id"]), "gold": gold, "choice_chars": chars}
    args = {f"gen_args_{i}": {"arg_0": "", "arg_1": ""} for i in range(len(logliks))}
    return _sample(doc_id, doc, str(gold), args, [[r] for r in per_choice], per_choice, values, "")


def _gen_sample(doc_id: int, d: dict[str, Any], t: rec.TaskScore) -> dict[str, Any] | None:
    if d.get("status") not in JUDGED:
        return None  # a harness error: not in the score, as lm-eval has no such document
    prompt, output = str(d.get("prompt", "")), str(d.get("output", ""))
    doc = {"id": str(d["item_id"]), "prompt": prompt, "gold": str(d.get("gold", ""))}
    if d.get("status") != "ok":
        doc["status"] = str(d.get("status"))
    gen_kwargs = {"do_sample": False, "temperature": 0.0}
    args = {"gen_args_0": {"arg_0": prompt, "arg_1": gen_kwargs}}
    filtered = str(d.get("extracted", ""))
    values = {t.metric: float(bool(d.get("correct")))}
    return _sample(
        doc_id, doc, str(d.get("gold", "")), args, [[output]], [filtered], values, prompt
    )


def _sample(
    doc_id: int,
    doc: dict[str, Any],
    target: str,
    arguments: dict[str, Any],
    resps: list[Any],
    filtered: list[Any],
    values: dict[str, float],
    prompt: str,
) -> dict[str, Any]:
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": target,
        "arguments": arguments,
        "resps": resps,
        "filtered_resps": filtered,
        "filter": FILTER,
        "metrics": list(values),
        "doc_hash": _sha(json.dumps(doc, indent=2, ensure_ascii=False)),
        "prompt_hash": _sha(prompt),
        "target_hash": _sha(target),
        **values,
    }


def samples_of(
    record: rec.ModelRecord, key: str, lines: dict[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """lm-eval sample dicts of the record's scored tasks, by file task name, from the store's
    per-item `lines` (by file name) that name record key `key`. A later line of the same item
    (a re-measure) replaces the earlier one; items keep their first position."""
    tasks = [t for t in record.tasks if t.status == rec.STATUS_OK]
    names = _names(tasks)
    out: dict[str, list[dict[str, Any]]] = {}
    for t in tasks:
        generated = not _is_multiple_choice(t)
        chosen: dict[str, dict[str, Any]] = {}
        for d in lines[GENERATIONS if generated else SAMPLES]:
            if str(d.get("task")) != t.task or line_key(d) != key:
                continue
            if generated and str(d.get("thinking", "")) != t.thinking:
                continue
            chosen[str(d["item_id"])] = d
        make = _gen_sample if generated else _mc_sample
        built = [make(i, d, t) for i, d in enumerate(chosen.values())]
        out[names[t.task]] = [s for s in built if s is not None]
    return out


def write_lm_eval(directory: Path, records: Sequence[rec.ModelRecord]) -> dict[str, Path]:
    """Write `lm-eval/<variant>/results_<date>.json` and `samples_<task>_<date>.jsonl` under
    the run `directory` for each ok record with scored tasks (a record measured with thinking
    on and off as two variants); returns the results files' paths by key "lm_eval-<variant>"
    and the samples files' by "lm_eval-<variant>-<task>"."""
    lines = {name: _read_lines(directory / name) for name in (SAMPLES, GENERATIONS)}
    paths = {}
    for measured in records:
        if measured.status != rec.STATUS_OK:
            continue
        for record in split_thinking([measured]):
            samples = samples_of(record, measured.key, lines)
            data = results_json(record, samples)
            if not data["results"]:
                continue
            folder = directory / LM_EVAL_DIR / sanitized(record.variant.name)
            folder.mkdir(parents=True, exist_ok=True)
            stamp, name = date_id(record), record.variant.name
            text = json.dumps(data, indent=2, ensure_ascii=False)
            paths[f"lm_eval-{name}"] = write_atomic(folder / f"results_{stamp}.json", text)
            for task, items in samples.items():
                if not items:
                    continue
                body = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in items)
                target = folder / f"samples_{task}_{stamp}.jsonl"
                paths[f"lm_eval-{name}-{task}"] = write_atomic(target, body)
    return paths
