"""Is a record from elsewhere fit to store? Types and ranges of every field of a ModelRecord.

Reading JSON rebuilds the dataclasses without checking types, so an exported file edited by
hand (or by a buggy tool) can carry `"acc": "high"`, `chance: 1.0`, a negative size or NaN,
which would break every later report. `problem(record)` names the first such field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from edgeeval import records as rec
from edgeeval.store.files import is_run_id

STATUSES = {
    rec.STATUS_OK,
    rec.STATUS_ERROR,
    rec.STATUS_CRASH,
    rec.STATUS_TIMEOUT,
    rec.STATUS_SKIPPED,
}
# Numbers that count or measure something cannot be negative (by field name).
_NONNEG_SUFFIXES = ("_bytes", "_s", "_ts", "_ms", "_ns", "_se", "_chars")
_NONNEG_NAMES = {"n", "params", "cores_physical", "cores_logical", "version"}
_SIGNED = {"n_gpu_layers"}  # -1 means "all layers"


def _nonneg(name: str) -> bool:
    if name in _SIGNED:
        return False
    return name in _NONNEG_NAMES or name.startswith("n_") or name.endswith(_NONNEG_SUFFIXES)


def _range(name: str, value: float) -> str | None:
    """Why `value` is out of range for a field called `name`, or None."""
    if name in ("acc", "acc_norm") and not 0.0 <= value <= 1.0:
        return "not in [0, 1]"
    if name == "chance" and not 0.0 <= value < 1.0:
        return "not in [0, 1)"
    if _nonneg(name) and value < 0:
        return "negative"
    return None


def _scalar(tp: Any, value: Any) -> str | None:
    """Why `value` is not of the scalar type `tp`, or None."""
    if tp is bool:
        return None if isinstance(value, bool) else "not a boolean"
    if tp is str:
        return None if isinstance(value, str) else "not a string"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "not an integer"
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "not a number"
        return None if math.isfinite(value) else "not a finite number"
    return None


def _check(tp: Any, value: Any, where: str, name: str, ranged: bool) -> str | None:
    """The first problem of `value` (declared `tp`, at `where`), or None."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, tuple):
            return f"{where}: not a list"
        inner = typing.get_args(tp)[0]
        for i, item in enumerate(value):
            found = _check(inner, item, f"{where}[{i}]", name, ranged)
            if found:
                return found
        return None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return walk(value, where) if isinstance(value, tp) else f"{where}: not an object"
    why = _scalar(tp, value)
    if why is None and ranged and tp in (int, float):
        why = _range(name, value)
    return f"{where} = {value!r}: {why}" if why else None


def walk(obj: Any, where: str = "") -> str | None:
    """The first field of the dataclass `obj` with a wrong type or range, or None. Run
    settings are checked for types only (their numbers may legitimately be negative)."""
    hints = typing.get_type_hints(type(obj))
    ranged = not isinstance(obj, rec.RunSettings)
    for f in dataclasses.fields(obj):
        at = f"{where}.{f.name}" if where else f.name
        found = _check(hints[f.name], getattr(obj, f.name), at, f.name, ranged)
        if found:
            return found
    return None


def problem(record: rec.ModelRecord) -> str | None:
    """Why `record` must not be stored (the first problem found), or None when it is fit."""
    if not isinstance(record.run_id, str) or not is_run_id(record.run_id):
        return f"run_id = {record.run_id!r}: not a valid run id"
    found = walk(record)
    if found:
        return found
    if record.status not in STATUSES:
        return f"status = {record.status!r}: not one of {', '.join(sorted(STATUSES))}"
    if not record.variant.name:
        return "variant.name is empty"
    return None
