"""The one place edgeeval reads environment variables, and its fixed constants.

- EDGEEVAL_HOME: cache for downloaded and built model files (default ~/.cache/edgeeval).
- EDGEEVAL_REPORTS: where runs and the SQLite store go (default ./reports).
- EDGEEVAL_OFFLINE=1 (or HF_HUB_OFFLINE=1): never touch the network; use cached files only.
- EDGEEVAL_DEBUG=1: the CLI shows tracebacks.
- HF_TOKEN / HF_ENDPOINT are read by huggingface_hub itself; we only pass them through.
"""

from __future__ import annotations

import os
from pathlib import Path

#: One gigabyte, as used everywhere in edgeeval's reports: 10**9 bytes (not GiB).
GB = 10**9
#: Megabyte, 10^6 bytes (sizes of small files in tables).
MB = 10**6

_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def home() -> Path:
    """Root of edgeeval's cache (model files, wheels, host facts)."""
    raw = os.environ.get("EDGEEVAL_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "edgeeval"


def models_dir() -> Path:
    return home() / "models"


def reports_dir() -> Path:
    """Where run directories and the accumulating SQLite store live."""
    raw = os.environ.get("EDGEEVAL_REPORTS")
    return Path(raw).expanduser() if raw else Path.cwd() / "reports"


def offline() -> bool:
    """True when no network access is allowed (EDGEEVAL_OFFLINE or HF_HUB_OFFLINE)."""
    return _flag("EDGEEVAL_OFFLINE") or _flag("HF_HUB_OFFLINE")


def debug() -> bool:
    return _flag("EDGEEVAL_DEBUG")


def hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def package_root() -> Path:
    """The repository / install root holding models.yaml and benchmarks/."""
    raw = os.environ.get("EDGEEVAL_ROOT")
    if raw:
        return Path(raw)
    here = Path(__file__).resolve().parent
    for candidate in (Path.cwd(), here.parent):
        if (candidate / "models.yaml").exists():
            return candidate
    return here.parent
