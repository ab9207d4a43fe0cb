"""The schema of a task file (`benchmarks/tasks/<name>.yaml`): which keys, of which types, where.

`check_task_file` rejects unknown, missing, mistyped and misplaced keys (a key the task's kind
and source do not use) with a ConfigError naming the file and the key, and a "did you mean"
where one fits. edgeeval.tasks.suite builds the Task from a checked mapping.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgeeval.errors import ConfigError, suggest
from edgeeval.tasks.generators import GENERATORS
from edgeeval.yamlio import load_yaml

KINDS = ("multiple_choice", "generate", "code")
EXTRACTORS = ("number", "letter", "exact")
CATEGORIES = ("math", "code", "language", "knowledge", "reasoning")
SOURCE_KINDS = ("generator", "file", "hub", "pypi")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REQUIRED = {
    "name": str,
    "version": int,
    "description": str,
    "category": str,
    "kind": str,
    "source": str,
    "n_items": int,
}
_OPTIONAL = {
    "few_shot": list,
    "template": str,
    "separator": str,
    "instructions": str,
    "options": dict,
    "extractor": str,
    "stop": list,
    "max_tokens": int,
    "max_think_tokens": int,
    "files": list,
    "revision": str,
    "config": str,
    "split": str,
    "format": str,
    "cluster_by": str,
}
#: A `cluster_by` value: a dataset column or a data file's field name.
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping; errors name the file."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of keys to values", path=path)
    return data


def check_task_file(data: dict[str, Any], path: Path) -> None:
    """Raise ConfigError naming `path` and the key unless `data` is a valid task file."""
    _check_keys(data, path)
    _check_values(data, path)


def _check_keys(data: dict[str, Any], path: Path) -> None:
    known = {**_REQUIRED, **_OPTIONAL}
    for key, value in data.items():
        if key not in known:
            near = suggest(str(key), list(known))
            hint = f"did you mean '{near[0]}'?" if near else "known keys: " + ", ".join(known)
            raise ConfigError(f"unknown key; {hint}", path=path, key=str(key))
        kind = known[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(
                f"must be {kind.__name__}, got {type(value).__name__}", path=path, key=str(key)
            )
    for key in _REQUIRED:
        if key not in data:
            raise ConfigError("missing required key", path=path, key=key)


def _allowed_keys(kind: str, source_kind: str) -> set[str]:
    """The keys a task of this kind and source kind may set."""
    keys = set(_REQUIRED)
    if kind == "multiple_choice" and source_kind in ("generator", "file"):
        keys |= {"few_shot", "template", "separator", "instructions"}
    if kind in ("generate", "code"):
        keys |= {"stop", "max_tokens", "max_think_tokens"}
    if kind == "generate":
        keys |= {"few_shot", "extractor"}
    if source_kind == "hub":
        keys |= {"files", "revision", "config", "split", "format", "options"}
    if source_kind == "generator":
        keys |= {"options"}
    if source_kind in ("hub", "file"):
        keys |= {"cluster_by"}  # generated items are independent draws: nothing to cluster
    return keys


def _check_values(data: dict[str, Any], path: Path) -> None:
    if not _NAME.match(data["name"]):
        raise ConfigError("use lowercase letters, digits, '.', '_' or '-'", path=path, key="name")
    for key in ("version", "n_items", "max_tokens", "max_think_tokens"):
        if data.get(key, 1) < 1:
            raise ConfigError("must be a positive integer", path=path, key=key)
    for key, allowed in (("kind", KINDS), ("category", CATEGORIES), ("extractor", EXTRACTORS)):
        if data.get(key, allowed[0]) not in allowed:
            raise ConfigError(f"must be one of {', '.join(allowed)}", path=path, key=key)
    source_kind, _, target = data["source"].partition(":")
    if source_kind not in SOURCE_KINDS or not target:
        raise ConfigError(
            "must be 'generator:<name>', 'file:<path under benchmarks/tasks/>', "
            "'hub:<owner>/<dataset>' or 'pypi:<package>'",
            path=path,
            key="source",
        )
    for key in data:
        if key not in _allowed_keys(data["kind"], source_kind):
            raise ConfigError(
                f"not used by {data['kind']} tasks with a {source_kind}: source", path=path, key=key
            )
    cluster_by = data.get("cluster_by", "subject")
    if not _FIELD.match(cluster_by) or cluster_by == "id":
        raise ConfigError(
            "must name the dataset column (hub:) or data-file field (file:) that holds each "
            "item's cluster, e.g. 'subject' (letters, digits, '_'; not 'id', which would make "
            "every item its own cluster)",
            path=path,
            key="cluster_by",
        )
    if "{question}" not in data.get("template", "{question}"):
        raise ConfigError("must contain {question}", path=path, key="template")
    if data.get("template", "x").rstrip() != data.get("template", "x"):
        raise ConfigError("must not end with whitespace", path=path, key="template")
    stop = data.get("stop", ["x"])
    if not stop or not all(isinstance(s, str) and s for s in stop):
        raise ConfigError("must be a non-empty list of non-empty strings", path=path, key="stop")
    _check_source_kind(data, source_kind, target, path)


def _check_source_kind(data: dict[str, Any], source_kind: str, target: str, path: Path) -> None:
    """The source exists and makes items of the task's kind."""
    if source_kind == "generator":
        if target not in GENERATORS:
            near = suggest(target, list(GENERATORS))
            hint = (
                f"did you mean 'generator:{near[0]}'?"
                if near
                else "known generators: " + ", ".join(GENERATORS)
            )
            raise ConfigError(f"unknown generator '{target}'; {hint}", path=path, key="source")
        if GENERATORS[target].kind != data["kind"]:
            raise ConfigError(
                f"generator '{target}' makes {GENERATORS[target].kind} items", path=path, key="kind"
            )
    if source_kind == "file" and data["kind"] != "multiple_choice":
        raise ConfigError("file: sources give multiple_choice items", path=path, key="kind")


def parse_few_shot(
    raw: list[Any], extractor: str, kind: str, path: Path
) -> tuple[tuple[str, str], ...]:
    """The `few_shot` list as (question, answer) pairs; a generate task's worked answers must end
    in the form its extractor reads."""
    shots = []
    for index, shot in enumerate(raw):
        if (
            not isinstance(shot, dict)
            or set(shot) != {"question", "answer"}
            or not all(isinstance(v, str) and v.strip() == v and v for v in shot.values())
        ):
            raise ConfigError(
                "each example needs exactly 'question' and 'answer' strings, "
                "without surrounding spaces",
                path=path,
                entry=str(index),
                key="few_shot",
            )
        if kind == "generate" and not _ends_in_format(shot["answer"], extractor):
            raise ConfigError(
                f"the worked answer must end with a final answer the '{extractor}' "
                "extractor reads (e.g. 'The answer is 42.')",
                path=path,
                entry=str(index),
                key="few_shot",
            )
        shots.append((shot["question"], shot["answer"]))
    return tuple(shots)


def _ends_in_format(answer: str, extractor: str) -> bool:
    """True when a worked answer ends with "The answer is N." (number) or a letter A-D."""
    if extractor == "number":
        return re.search(r"The answer is -?[\d,]*\d(\.\d+)?\.?$", answer) is not None
    if extractor == "letter":
        return re.search(r"\b[A-D]\)?\.?$", answer) is not None
    return True


def parse_options(source: str, raw: dict[str, Any], path: Path) -> tuple[tuple[str, Any], ...]:
    """A generator task's `options`, each known to its generator and of its default's type."""
    if raw and not source.startswith("generator:"):
        raise ConfigError("only generator and hub tasks take options", path=path, key="options")
    allowed = GENERATORS[source.removeprefix("generator:")].options if raw else {}
    for key, value in raw.items():
        if key not in allowed:
            known = ", ".join(allowed) or "none"
            raise ConfigError(f"unknown option; known: {known}", path=path, key=f"options.{key}")
        if type(value) is not type(allowed[key]):
            raise ConfigError(
                f"must be {type(allowed[key]).__name__}", path=path, key=f"options.{key}"
            )
    return tuple(sorted(raw.items()))
