"""Named measurement profiles (benchmarks/profiles/speed.yaml): saved sets of bench settings.

A profile maps RunSettings field names to values, lists for the sweep fields, e.g.
    threads-sweep: {sweep_threads: [1, 2, 4], depths: [0, 512], repetitions: 5}
Command-line options given explicitly override the profile.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from edgeeval import settings
from edgeeval.errors import ConfigError, UnknownNameError, suggest
from edgeeval.records import RunSettings

_FIELDS = {f.name: f for f in dataclasses.fields(RunSettings)}


def default_path() -> Path:
    return settings.package_root() / "benchmarks" / "profiles" / "speed.yaml"


def load_profile(name: str, path: Path | None = None) -> dict[str, Any]:
    """The profile `name` as RunSettings keyword arguments (tuples for list fields)."""
    path = path or default_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError("profiles file not found", path=path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=path) from None
    if name not in data:
        near = suggest(name, list(data))
        raise UnknownNameError("profile", name, near, hint=f"profiles are defined in {path}")
    body = data[name]
    if not isinstance(body, dict):
        raise ConfigError("a profile must be a mapping of setting to value", path=path, entry=name)
    return {key: _value(key, value, path, name) for key, value in body.items()}


def _value(key: str, value: Any, path: Path, entry: str) -> Any:
    if key not in _FIELDS:
        near = suggest(key, list(_FIELDS), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"unknown setting{hint}", path=path, entry=entry, key=key)
    default = _FIELDS[key].default
    if isinstance(default, tuple):
        if not isinstance(value, list) or not value:
            raise ConfigError("must be a non-empty list", path=path, entry=entry, key=key)
        return tuple(value)
    if default is not None and not isinstance(value, type(default)):
        raise ConfigError(
            f"must be of type {type(default).__name__}, got {value!r}",
            path=path,
            entry=entry,
            key=key,
        )
    return value
