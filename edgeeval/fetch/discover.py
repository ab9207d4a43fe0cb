"""`edgeeval models --discover`: the GGUF models already on this machine, described.

Looks in the Hugging Face cache, Ollama's store, LM Studio's folders and any folders given
(`--scan DIR`); each file's header is walked with the bounded reader, which gives the facts and
says whether edgeeval could run it (a file that fails the check is listed with the reason).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeeval.errors import EdgeevalError
from edgeeval.fetch import local_stores
from edgeeval.gguf.facts import read_facts

#: Architectures that are not text-generation models edgeeval can measure.
_NOT_MODELS = {"clip": "a multimodal projector, not a language model"}


@dataclass(frozen=True)
class Discovered:
    """One model found: where, the spec that names it, its facts, and whether it can run."""

    store: str
    spec: str
    path: str
    size_bytes: int
    architecture: str | None
    params: int | None
    quant: str | None
    runnable: bool
    reason: str = ""  # why not, when not runnable

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(found: local_stores.StoredModel) -> Discovered:
    """The Discovered row of one stored file (its header read with bounds); an entry found
    broken in its store (`found.problem`) is listed as not runnable, with the reason."""
    if found.problem:
        return Discovered(
            found.store, found.spec, str(found.path), 0, None, None, None, False, found.problem
        )
    try:
        facts = read_facts(found.path)
    except (EdgeevalError, OSError) as exc:
        size = found.path.stat().st_size if found.path.exists() else 0
        return Discovered(
            found.store, found.spec, str(found.path), size, None, None, None, False, str(exc)
        )
    reason = _NOT_MODELS.get(facts.architecture, "")
    return Discovered(
        store=found.store,
        spec=found.spec,
        path=str(found.path),
        size_bytes=facts.size_bytes,
        architecture=facts.architecture,
        params=facts.params,
        quant=facts.quant,
        runnable=not reason,
        reason=reason,
    )


def discover(scan: list[Path] | None = None, *, stores: bool = True) -> list[Discovered]:
    """Every model found in the stores (when `stores`) and under the `scan` folders."""
    found: list[local_stores.StoredModel] = []
    if stores:
        found += local_stores.hf_cache_models()
        found += local_stores.ollama_models()
        found += local_stores.lmstudio_models()
    for folder in scan or []:
        found += local_stores.scan_folder(folder)
    return [describe(f) for f in found]
