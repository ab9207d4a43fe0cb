"""Named measurement profiles (benchmarks/tasks/profiles/speed.yaml): saved sets of bench settings.

A profile maps RunSettings field names to values, lists for the sweep fields, e.g.
    threads-sweep: {sweep_threads: [1, 2, 4], depths: [0, 512], repetitions: 5}
Command-line options given explicitly override the profile.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgeeval import settings
from edgeeval.errors import ConfigError, UnknownNameError, suggest
from edgeeval.records import RunSettings
from edgeeval.text import safe_text
from edgeeval.yamlio import load_yaml

_FIELDS = {f.name: f for f in dataclasses.fields(RunSettings)}


def default_path() -> Path:
    return settings.package_root() / settings.TASKS_SUBDIR / "profiles" / "speed.yaml"


def load_profile(name: str, path: Path | None = None) -> dict[str, Any]:
    """The profile `name` as RunSettings keyword arguments (tuples for list fields)."""
    path = path or default_path()
    data = load_yaml(path, missing="profiles file not found") or {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of profile name to settings", path=path)
    if name not in data:
        near = suggest(str(name), [str(k) for k in data])
        raise UnknownNameError("profile", name, near, hint=f"profiles are defined in {path}")
    body = data[name]
    if not isinstance(body, dict):
        raise ConfigError("a profile must be a mapping of setting to value", path=path, entry=name)
    return {str(key): _value(key, value, path, name) for key, value in body.items()}


def _is(value: Any, kind: type) -> bool:
    """True when `value` is of `kind` the way a setting means it: a bool is not an int, an
    int is a float."""
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _value(key: Any, value: Any, path: Path, entry: str) -> Any:
    if not isinstance(key, str) or key not in _FIELDS:
        near = suggest(str(key), list(_FIELDS), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"unknown setting{hint}", path=path, entry=entry, key=str(key))
    default = _FIELDS[key].default
    if isinstance(default, tuple):
        texts = ("tasks", "sweep_cache_type_k", "sweep_cache_type_v", "sweep_cache_type_kv")
        flags = ("sweep_flash_attn", "sweep_swa_full")
        item = bool if key in flags else str if key in texts else int
        if not isinstance(value, list) or not value or not all(_is(v, item) for v in value):
            raise ConfigError(
                f"must be a non-empty list of {item.__name__} values",
                path=path,
                entry=entry,
                key=key,
            )
        return tuple(value)
    optional_ints = ("task_limit", "task_sample", "num_fewshot", "max_think_tokens")
    optional_floats = ("timeout_s",)  # no total limit by default (the stall limit watches)
    kind = (
        str
        if key == "suite"
        else int
        if key in optional_ints
        else float
        if key in optional_floats
        else type(default)
    )
    if not _is(value, kind) and not (default is None and value is None):
        raise ConfigError(
            f"must be of type {kind.__name__}, got {safe_text(repr(value), 60)}",
            path=path,
            entry=entry,
            key=key,
        )
    return float(value) if kind is float else value
