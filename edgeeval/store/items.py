"""Whose answer is each line: per-item results attributed to the record that produced them.

Every line of a run's samples.jsonl and generations.jsonl is written (`item_line`) with the
fields of ATTRIBUTION beside the item's own: the variant's name, its file's sha256, the
settings key, the host id (together the record's resume key) and the thinking mode the item
was answered in ("" for multiple choice, which scores in both rows of a thinking switch).

Runs stored before these fields existed are attributed by their order only where that order
is provably unambiguous: save_record appends one record's samples, then its generations, then
the record itself, so walking records.jsonl in file order, each record's block must hold
exactly its tasks' item counts (multiple choice: n; generated: n + harness errors), every
line must be read, no line may be unreadable, and the run must not have been measured by
more than one process at once (the manifest's allow_concurrent). Anything else is refused
with UnattributedItemsError, naming the run and the file.

Lines of a task whose file sets `cluster_by` (mmlu: subject, hellaswag: activity_label,
pydoc-cloze: topic) also carry the item's `cluster` id and that `cluster_by` key; the
comparisons then use clustered SEs for the task (metrics.clustered_se). Lines of other tasks,
and of runs stored before clusters were written, carry neither: their SEs stay unclustered.
`RunItems.clusters_of` gives a task's per-item cluster ids (what the race's paired test needs).

Per-item scores are the ranking's: multiple choice right when the highest log-likelihood
(not per character) is the gold choice (metrics.pick); generated and code answers right when
`correct`, over the judged ones (ok, passed, failed, timeout), as score.generate counts them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval.errors import UnattributedItemsError
from edgeeval.metrics import cluster_count, pick
from edgeeval.safeio import read_regular
from edgeeval.store import database
from edgeeval.store.files import MAX_JSONL_BYTES, Lines, read_jsonl, store_file_error

ATTRIBUTION = ("variant", "sha256", "settings_key", "host_id", "thinking")
SAMPLES, GENERATIONS = "samples.jsonl", "generations.jsonl"
#: Generated answers that count in a task's score (timeouts as wrong), as score.generate.
JUDGED = ("ok", "passed", "failed", "timeout")

ATTRIBUTED, BY_ORDER, NONE = "attributed", "by order", "none"

#: (task, thinking) -> item id -> score (1.0 right, 0.0 wrong)
TaskItemScores = dict[tuple[str, str], dict[str, float]]


def item_line(item: rec.SampleResult | rec.GenSampleResult, record: rec.ModelRecord) -> str:
    """One JSON line: the item's fields plus ATTRIBUTION taken from `record`."""
    data = rec.to_dict(item)
    if not data.get("cluster"):  # a task without clusters: its lines stay as they were
        data.pop("cluster", None)
        data.pop("cluster_by", None)
    data.update(
        variant=record.variant.name,
        sha256=record.variant.sha256,
        settings_key=record.settings.key(),
        host_id=record.host.host_id,
        thinking=getattr(item, "thinking", ""),
    )
    return json.dumps(data, sort_keys=True)


def line_key(data: dict[str, Any]) -> str | None:
    """The record key a line names (rec.record_key's form), or None for an unattributed line."""
    if not all(k in data for k in ATTRIBUTION[:4]):
        return None
    return f"{data['variant']}:{data['sha256']}:{data['settings_key']}:{data['host_id']}"


@dataclass
class RunItems:
    """Per-item scores of a run's records, by record key.

    `how`: ATTRIBUTED (every line names its record), BY_ORDER (an older run, attributed by its
    provably unambiguous order) or NONE (the run stored no per-item lines)."""

    run_id: str
    how: str
    scores: dict[str, TaskItemScores] = field(default_factory=dict)
    # (task, item id) -> the item's cluster (MMLU subject, passage id), where a line names one
    clusters: dict[tuple[str, str], str] = field(default_factory=dict)
    # task -> the key its clusters are of ("subject"), for the tasks whose lines name one
    cluster_by: dict[str, str] = field(default_factory=dict)

    def of(self, record: rec.ModelRecord) -> TaskItemScores:
        return self.scores.get(record.key, {})

    def clusters_of(self, task: str, item_ids: Sequence[str]) -> tuple[str, ...] | None:
        """The cluster id of each of `item_ids` (in that order) of `task` (a name, or the race's
        "task@thinking" key), or None unless every one names a cluster and they make at least
        two: pass the result to stats.paired_difference / metrics.clustered_se as `clusters`.

        >>> items = RunItems("r", ATTRIBUTED, clusters={("mmlu", "1"): "law", ("mmlu", "2"): "art"})
        >>> items.clusters_of("mmlu@on", ["2", "1"]), items.clusters_of("mmlu", ["1", "3"])
        (('art', 'law'), None)
        """
        name = task.partition("@")[0]
        found = tuple(self.clusters.get((name, str(i)), "") for i in item_ids)
        return found if cluster_count(found) else None


def _score(data: dict[str, Any], generated: bool) -> float | None:
    """1.0 / 0.0 for a judged item, None for one that does not count (a harness error)."""
    if generated:
        return float(bool(data.get("correct"))) if data.get("status") in JUDGED else None
    try:
        logliks, chars = [float(x) for x in data["logliks"]], [int(c) for c in data["choice_chars"]]
        return float(pick(logliks, chars, normalize=False) == int(data["gold"]))
    except (KeyError, TypeError, ValueError):
        return None  # not a scored multiple-choice line: it does not count


def _raw_lines(path: Path) -> tuple[list[dict[str, Any]], str]:
    """The file's lines as dicts (none when it is missing), and the first unreadable one ("" if
    none): torn by a kill, not UTF-8, not a JSON object, or without a task and item id. A
    path that is not a regular file, or one over MAX_JSONL_BYTES, is a StoreFileError."""
    if not path.exists():
        return [], ""
    blob = read_regular(path, limit=MAX_JSONL_BYTES, error=store_file_error)
    out, problem = [], ""
    for number, raw in enumerate(blob.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            data = None
        if isinstance(data, dict) and "task" in data and "item_id" in data:
            out.append(data)
        else:
            problem = problem or f"line {number} is unreadable"
    return out, problem


def _expected(
    record: rec.ModelRecord, generated: bool, choice_tasks: set[str]
) -> Counter[tuple[str, str]]:
    """How many lines of each (task, thinking) the record wrote to the file. Multiple choice
    writes n lines to samples.jsonl; a generated task n + harness errors to generations.jsonl.
    Records without a protocol (older runs) are told apart by `choice_tasks`, the task names
    that samples.jsonl holds."""
    want: Counter[tuple[str, str]] = Counter()
    for t in record.tasks:
        choice = t.protocol == "loglikelihood" or (not t.protocol and t.task in choice_tasks)
        if choice:
            count = 0 if generated else t.n
        else:
            count = t.n + t.n_harness_error if generated else 0
        if count:
            want[(t.task, t.thinking if generated else "")] += count
    return want


def _by_order(
    run_id: str,
    records: Sequence[rec.ModelRecord],
    lines: list[dict[str, Any]],
    path: Path,
    choice_tasks: set[str],
) -> dict[str, TaskItemScores]:
    """Attribute `lines` to `records` (file order) by consecutive blocks; refuse any doubt."""
    generated = path.name == GENERATIONS
    out: dict[str, TaskItemScores] = {}
    at = 0
    for record in records:
        want = _expected(record, generated, choice_tasks)
        size = sum(want.values())
        block = lines[at : at + size]
        got = Counter(
            (str(d.get("task")), str(d.get("thinking", "")) if generated else "") for d in block
        )
        if got != want:
            raise UnattributedItemsError(
                run_id,
                path,
                f"lines {at + 1}..{at + size} do not hold the item counts of "
                f"'{record.variant.name}' (expected {dict(want)}, found {dict(got)})",
            )
        for d in block:
            key = line_key(d)
            if key is not None and key != record.key:
                raise UnattributedItemsError(
                    run_id, path, f"line {at + 1} names {key}, not '{record.variant.name}'"
                )
        _add(out.setdefault(record.key, {}), block, generated)
        at += size
    if at != len(lines):
        raise UnattributedItemsError(
            run_id, path, f"{len(lines) - at} line(s) after the last record's block"
        )
    return out


def _add(into: TaskItemScores, block: list[dict[str, Any]], generated: bool) -> None:
    for d in block:
        score = _score(d, generated)
        if score is not None:  # a later line of the same item (a re-measure) wins
            thinking = str(d.get("thinking", "")) if generated else ""
            into.setdefault((str(d["task"]), thinking), {})[str(d["item_id"])] = score


def load_items(
    run_id: str, root: Path, records_in_order: Sequence[rec.ModelRecord], *, concurrent: bool
) -> RunItems:
    """Per-item scores of the run in `root`/`run_id` (see the module docstring).

    `records_in_order`: every record of records.jsonl, in file order (not de-duplicated);
    `concurrent`: the manifest says more than one process may have written the run."""
    directory = root / run_id
    read = {name: _raw_lines(directory / name) for name in (SAMPLES, GENERATIONS)}
    files = {name: lines for name, (lines, _) in read.items()}
    if not any(files.values()):
        return RunItems(run_id, NONE)
    clusters, cluster_by = _clusters([d for lines in files.values() for d in lines])
    if all(line_key(d) is not None for lines in files.values() for d in lines):
        scores: dict[str, TaskItemScores] = {}
        for name, lines in files.items():
            for d in lines:
                _add(scores.setdefault(line_key(d) or "", {}), [d], name == GENERATIONS)
        return RunItems(run_id, ATTRIBUTED, scores, clusters, cluster_by)
    skipped = getattr(records_in_order, "skipped", 0)
    if skipped:
        raise UnattributedItemsError(
            run_id, directory / database.RECORDS_FILE, f"{skipped} unreadable record line(s)"
        )
    for name, (_, problem) in read.items():
        if problem:  # a lost line shifts every later one: the order proves nothing
            raise UnattributedItemsError(run_id, directory / name, problem)
    if concurrent:
        raise UnattributedItemsError(
            run_id,
            directory / SAMPLES,
            "its lines name no variant and the run was measured with --allow-concurrent, "
            "so their order proves nothing",
        )
    merged: dict[str, TaskItemScores] = {}
    choice_tasks = {str(d.get("task")) for d in files[SAMPLES]}
    for name, lines in files.items():
        path = directory / name
        for key, tasks in _by_order(run_id, records_in_order, lines, path, choice_tasks).items():
            merged.setdefault(key, {}).update(tasks)
    return RunItems(run_id, BY_ORDER, merged, clusters, cluster_by)


def _clusters(
    lines: list[dict[str, Any]],
) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """(task, item id) -> cluster id and task -> cluster_by key, from the lines that name one.
    A task whose lines disagree (an item in two clusters, two keys: the task file changed
    between two invocations of the run) gets no clusters: its SEs stay unclustered."""
    ids: dict[tuple[str, str], set[str]] = {}
    keys: dict[str, set[str]] = {}
    for d in lines:
        if d.get("cluster"):
            task = str(d["task"])
            ids.setdefault((task, str(d["item_id"])), set()).add(str(d["cluster"]))
            keys.setdefault(task, set()).add(str(d.get("cluster_by") or "cluster"))
    torn = {task for task, found in keys.items() if len(found) > 1}
    torn |= {task for (task, _), found in ids.items() if len(found) > 1}
    clusters = {k: next(iter(v)) for k, v in ids.items() if k[0] not in torn}
    return clusters, {task: next(iter(v)) for task, v in keys.items() if task not in torn}


def records_in_file_order(run_id: str, root: Path) -> Lines[rec.ModelRecord]:
    """Every record line of the run's records.jsonl, in file order (none de-duplicated;
    `.skipped` counts unreadable ones)."""
    return read_jsonl(root / run_id / database.RECORDS_FILE, rec.ModelRecord)
