"""GGUF files other tools already keep on this machine: Ollama, LM Studio and the Hugging Face
cache. Nothing is copied: edgeeval reads each file where it lies.

Ollama (`settings.ollama_models_dir()`: OLLAMA_MODELS, default ~/.ollama/models) keeps a JSON
manifest per model and tag, `manifests/<host>/<namespace>/<model>/<tag>` (host
`registry.ollama.ai`, namespace `library` for official models); the layer whose `mediaType` is
`application/vnd.ollama.image.model` names the GGUF by digest, stored as `blobs/sha256-<hex>`.
The blob's name is its sha256, so it is verified for free.

LM Studio (`settings.lmstudio_models_dirs()`: ~/.lmstudio/models, then the older
~/.cache/lm-studio/models) keeps plain files: `<publisher>/<repo>/<file>.gguf`.

The Hugging Face cache (`settings.hf_hub_cache()`) keeps `models--<owner>--<repo>/snapshots/
<commit>/<path>`, links into `blobs/`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from edgeeval import settings
from edgeeval.errors import FetchError
from edgeeval.gguf.facts import SPLIT_PART
from edgeeval.safeio import read_regular
from edgeeval.text import safe_text

OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
OLLAMA_REGISTRY = "registry.ollama.ai"
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
_MAX_MANIFEST_BYTES = 1 << 20


@dataclass(frozen=True)
class StoredModel:
    """A GGUF found in another tool's store: where it is and the spec that names it."""

    store: str  # "ollama", "lmstudio", "hf-cache" or "scan"
    spec: str
    path: Path
    sha256: str | None = None  # known without hashing (Ollama's blob digest)
    problem: str = ""  # why this entry cannot be used (then `path` is what was found broken)


def is_later_split_part(path: Path) -> bool:
    """True for part 2, 3, ... of a split GGUF (only part 1 names the model)."""
    match = SPLIT_PART.search(path.name)
    return match is not None and int(match[1]) != 1


def is_projector(path: Path) -> bool:
    """True for multimodal projector files (mmproj-*.gguf): not a model to measure."""
    return path.name.lower().startswith("mmproj")


# --- Ollama -----------------------------------------------------------------------------------


def _ollama_manifest_path(name: str) -> tuple[Path, str]:
    """Manifest file and display name for `name[:tag]` (tag default `latest`)."""
    base, _, tag = name.partition(":")
    parts = [p for p in base.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or (tag and "/" in tag):
        raise FetchError(f"'{safe_text(name)}' is not an Ollama model name: use ollama:NAME[:TAG]")
    if len(parts) == 1:
        parts = [OLLAMA_REGISTRY, "library", parts[0]]
    elif "." not in parts[0]:  # user/model: the default registry
        parts = [OLLAMA_REGISTRY, *parts]
    tag = tag or "latest"
    return settings.ollama_models_dir().joinpath("manifests", *parts, tag), f"{base}:{tag}"


def ollama_model(name: str) -> StoredModel:
    """The GGUF blob of Ollama model `name[:tag]`; FetchError says what is missing and what
    `ollama pull`/`ollama list` would show."""
    manifest, shown = _ollama_manifest_path(name)
    root = settings.ollama_models_dir()
    if not manifest.is_file():
        raise FetchError(
            f"Ollama model {safe_text(shown)} not found: no manifest {safe_text(manifest)}. "
            f"Run `ollama pull {safe_text(shown)}`, or set OLLAMA_MODELS to the store it is in "
            f"(now {safe_text(root)}); `edgeeval models --discover` lists what is there"
        )
    digest = _model_digest(manifest)
    blob = root / "blobs" / f"sha256-{digest}"
    if not blob.is_file():
        raise FetchError(
            f"Ollama model {safe_text(shown)}: its model blob {safe_text(blob)} is missing; "
            f"run `ollama pull {safe_text(shown)}` again"
        )
    return StoredModel("ollama", f"ollama:{shown}", blob, sha256=digest)


def _model_digest(manifest: Path) -> str:
    """The hex sha256 of the manifest's model layer."""

    def refuse(path: str | Path, reason: str) -> FetchError:
        return FetchError(f"Ollama manifest {safe_text(path)}: {reason}; `ollama pull` it again")

    try:
        raw = read_regular(manifest, limit=_MAX_MANIFEST_BYTES, error=refuse)
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise FetchError(
            f"Ollama manifest {safe_text(manifest)} is nested too deeply to be a manifest; "
            "`ollama pull` it again, or remove it"
        ) from None
    except (OSError, ValueError) as exc:
        raise FetchError(
            f"Ollama manifest {safe_text(manifest)} is not readable JSON with layers ({exc})"
        ) from exc
    try:
        layers = data["layers"]
        digests = [
            layer["digest"]
            for layer in layers
            if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_MEDIA_TYPE
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FetchError(
            f"Ollama manifest {safe_text(manifest)} is not readable JSON with layers ({exc})"
        ) from exc
    match = _DIGEST.match(str(digests[0])) if digests else None
    if match is None:
        raise FetchError(
            f"Ollama manifest {safe_text(manifest)} has no {OLLAMA_MODEL_MEDIA_TYPE} layer "
            "with a sha256 digest"
        )
    return match[1]


def ollama_models() -> list[StoredModel]:
    """Every model in the Ollama store; one whose manifest or blob is unusable comes with its
    `problem` set (path: the manifest), so a listing can say why and go on."""
    manifests = settings.ollama_models_dir() / "manifests"
    if not manifests.is_dir():
        return []
    found = []
    for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
        parts = manifest.relative_to(manifests).parts
        if len(parts) < 3:
            continue
        host, *path, tag = parts
        if host == OLLAMA_REGISTRY and path[:1] == ["library"]:
            path = path[1:]
        elif host != OLLAMA_REGISTRY:
            path = [host, *path]
        name = f"{'/'.join(path)}:{tag}"
        try:
            found.append(ollama_model(name))
        except FetchError as exc:
            found.append(StoredModel("ollama", f"ollama:{name}", manifest, problem=str(exc)))
    return found


# --- LM Studio --------------------------------------------------------------------------------


def lmstudio_model(ref: str) -> StoredModel:
    """`publisher/repo` (its one GGUF model file) or `publisher/repo/file.gguf` in LM Studio's
    models folder; FetchError lists the files when the choice is not clear."""
    parts = [p for p in ref.split("/") if p]
    if len(parts) < 2 or any(p in (".", "..") for p in parts):
        raise FetchError(
            f"'{safe_text(ref)}' is not an LM Studio model: use lmstudio:PUBLISHER/REPO[/FILE]"
        )
    searched = settings.lmstudio_models_dirs()
    for root in searched:
        target = root.joinpath(*parts)
        if target.is_file():
            return StoredModel("lmstudio", f"lmstudio:{'/'.join(parts)}", target)
        if target.is_dir():
            return _single_model_in(target, root)
    where = ", ".join(safe_text(p) for p in searched)
    raise FetchError(
        f"LM Studio model {safe_text(ref)} not found in {where}; set EDGEEVAL_LMSTUDIO_MODELS to "
        "LM Studio's models folder (My Models > folder) or run `edgeeval models --discover`"
    )


def _single_model_in(folder: Path, root: Path) -> StoredModel:
    files = [p for p in sorted(folder.rglob("*.gguf")) if _is_model_file(p)]
    if len(files) == 1:
        rel = files[0].relative_to(root).as_posix()
        return StoredModel("lmstudio", f"lmstudio:{rel}", files[0])
    if not files:
        raise FetchError(f"no .gguf model file in {safe_text(folder)}")
    names = [safe_text(p.relative_to(root).as_posix()) for p in files]
    raise FetchError(
        f"{safe_text(folder)} holds several models ({', '.join(names)}); name one, e.g. "
        f"lmstudio:{names[0]}"
    )


def _is_model_file(path: Path) -> bool:
    return path.is_file() and not is_projector(path) and not is_later_split_part(path)


def lmstudio_models() -> list[StoredModel]:
    """Every GGUF model file (first split parts only, no projectors) in LM Studio's folders."""
    found = []
    for root in settings.lmstudio_models_dirs():
        if root.is_dir():
            for path in sorted(root.rglob("*.gguf")):
                if _is_model_file(path):
                    spec = f"lmstudio:{path.relative_to(root).as_posix()}"
                    found.append(StoredModel("lmstudio", spec, path))
    return found


# --- Hugging Face cache and plain folders -----------------------------------------------------


def hf_cache_models() -> list[StoredModel]:
    """GGUF files in the Hugging Face cache, one per repo file (newest snapshot wins)."""
    cache = settings.hf_hub_cache()
    if not cache.is_dir():
        return []
    found: dict[str, StoredModel] = {}
    for repo_dir in sorted(cache.glob("models--*")):
        repo_id = repo_dir.name.removeprefix("models--").replace("--", "/")
        snapshots = sorted(
            (p for p in (repo_dir / "snapshots").glob("*") if p.is_dir()),
            key=lambda p: p.stat().st_mtime,
        )
        for snapshot in snapshots:
            for path in sorted(snapshot.rglob("*.gguf")):
                if _is_model_file(path):
                    rel = path.relative_to(snapshot).as_posix()
                    spec = f"hf:{repo_id}/{rel}@{snapshot.name}"
                    found[f"{repo_id}/{rel}"] = StoredModel("hf-cache", spec, path)
    return list(found.values())


def scan_folder(folder: Path) -> list[StoredModel]:
    """GGUF model files under `folder` (recursively), named by their paths."""
    if not folder.is_dir():
        raise FetchError(f"--scan {safe_text(folder)}: not a directory")
    return [
        StoredModel("scan", str(path), path)
        for path in sorted(folder.rglob("*.gguf"))
        if _is_model_file(path)
    ]
