"""The one place edgeeval reads environment variables, and its fixed constants.

- EDGEEVAL_HOME: cache for downloaded and built model files (default ~/.cache/edgeeval).
- EDGEEVAL_REPORTS: where runs and the SQLite store go (default ./reports).
- EDGEEVAL_OFFLINE=1 (or HF_HUB_OFFLINE=1): never touch the network; use cached files only.
- EDGEEVAL_DEBUG=1: the CLI shows tracebacks.
- HF_TOKEN / HF_ENDPOINT: passed to huggingface_hub explicitly, read at call time.
- HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub: the standard Hugging Face
  cache, where Hub model files are downloaded (shared with every other HF tool).
- OLLAMA_MODELS: Ollama's model store (default ~/.ollama/models).
- EDGEEVAL_LMSTUDIO_MODELS: LM Studio's models folder, when not one of the default places
  (~/.lmstudio/models, then the older ~/.cache/lm-studio/models).
- EDGEEVAL_CONFIG_DIR: folder of the user-level catalog models.yaml (default: the platform's
  config dir: $XDG_CONFIG_HOME/edgeeval or ~/.config/edgeeval; ~/Library/Application
  Support/edgeeval on macOS; %APPDATA%\\edgeeval on Windows).
- EDGEEVAL_ROOT: where models.yaml and benchmarks/tasks/ are (default: the checkout, else the
  copy shipped inside the installed package).
- EDGEEVAL_INCLUDE_PATH: more task folders, separated by os.pathsep (`--include-path DIR`
  sets it for a command and the workers it starts).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: One gigabyte, as used everywhere in edgeeval's reports: 10**9 bytes (not GiB).
GB = 10**9
#: Megabyte, 10^6 bytes (sizes of small files in tables).
MB = 10**6
#: How edgeeval writes a moment into its files: local time with its UTC offset, ISO 8601
#: (time.strftime(ISO_TIME) -> "2026-12-06T10:49:06+0000").
ISO_TIME = "%Y-%m-%dT%H:%M:%S%z"

#: Budget forcing (engine/forcing.py): what follows a forced end-of-thinking marker by default
#: (--think-lead-in). The answer starts on its own paragraph after a lead-in, as s1's budget
#: forcing appends "Final Answer:"; no trailing space, so the model writes " 42" as one token,
#: as it would after any colon.
THINK_LEAD_IN = "\n\nFinal answer:"

#: The task files, their data and the bench profiles, below the package root.
TASKS_SUBDIR = Path("benchmarks", "tasks")

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


def hf_hub_cache() -> Path:
    """The Hugging Face Hub cache folder, resolved as huggingface_hub itself does."""
    raw = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if raw:
        return Path(raw).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def ollama_models_dir() -> Path:
    """Ollama's store: manifests/ and blobs/ (OLLAMA_MODELS, default ~/.ollama/models)."""
    raw = os.environ.get("OLLAMA_MODELS")
    return Path(raw).expanduser() if raw else Path.home() / ".ollama" / "models"


def lmstudio_models_dirs() -> list[Path]:
    """LM Studio's models folders, in the order they are searched: EDGEEVAL_LMSTUDIO_MODELS when
    set (only that one), else ~/.lmstudio/models (LM Studio 0.3+) and ~/.cache/lm-studio/models
    (older releases)."""
    raw = os.environ.get("EDGEEVAL_LMSTUDIO_MODELS")
    if raw:
        return [Path(raw).expanduser()]
    return [Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio" / "models"]


def config_dir() -> Path:
    """The folder of the user-level catalog (see the module docstring)."""
    raw = os.environ.get("EDGEEVAL_CONFIG_DIR")
    if raw:
        return Path(raw).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "edgeeval"
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "edgeeval"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".config") / "edgeeval"


def task_include_dirs() -> list[Path]:
    """The user's task folders read beside benchmarks/tasks/ (EDGEEVAL_INCLUDE_PATH), in order."""
    raw = os.environ.get("EDGEEVAL_INCLUDE_PATH", "")
    return [Path(part).expanduser() for part in raw.split(os.pathsep) if part.strip()]


def user_catalog_path() -> Path:
    """The user-level models.yaml that extends the built-in catalog (read when it exists)."""
    return config_dir() / "models.yaml"


def package_root() -> Path:
    """The folder holding models.yaml and benchmarks/tasks/: EDGEEVAL_ROOT, else the checkout
    this package runs from, else the data shipped inside the installed package (edgeeval/_data)."""
    raw = os.environ.get("EDGEEVAL_ROOT")
    if raw:
        return Path(raw)
    here = Path(__file__).resolve().parent
    checkout = here.parent
    if (checkout / "models.yaml").is_file() and (checkout / TASKS_SUBDIR).is_dir():
        return checkout
    return here / "_data"
