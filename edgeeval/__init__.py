"""edgeeval: measure small local GGUF models and rank them by capability per gigabyte.

The Python API (see edgeeval.api): `edgeeval.bench(models, **settings)` measures models named
by catalog name or model spec and writes a report; `edgeeval.load_run("latest")` returns a
stored run's records and ranking (`.dataframe()` with pandas). Importing edgeeval stays light:
the API's modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "bench", "load_run", "run_settings"]

_LAZY = {"bench", "load_run", "run_settings", "Run"}


def __getattr__(name: str) -> Any:
    """bench, load_run, run_settings and Run, imported from edgeeval.api on first use."""
    if name in _LAZY:
        # By name, on first use: the leaf package never loads the stages at import time
        # (tests/test_architecture.py checks that `import edgeeval` stays light).
        return getattr(importlib.import_module("edgeeval.api"), name)
    raise AttributeError(f"module 'edgeeval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
