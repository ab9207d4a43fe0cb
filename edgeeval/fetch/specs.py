"""Model specs: a model named by where its GGUF is, wherever a catalog name is accepted.

- a path to a `.gguf` file (or the first part of a split `-00001-of-0000N.gguf`);
- `hf:owner/repo:QUANT`: the repo's GGUF whose file name carries the quant tag (case-insensitive,
  as llama.cpp's `-hf` does); `hf:owner/repo` alone when the repo has one GGUF;
- `hf:owner/repo/path/file.gguf`, optionally `@revision` (also after `:QUANT`);
- `ollama:name[:tag]`: from Ollama's store (see `local_stores`);
- `lmstudio:publisher/repo[/file.gguf]`: from LM Studio's models folder.

A variant made from a spec takes its family (`general.architecture`), quant
(`general.file_type`), parameter count and chat template from the file itself; any
architecture is accepted (llama.cpp decides at load time whether it runs it). Hub files are
downloaded into the Hugging Face cache when the spec is resolved (the header is needed), and
the variant is pinned to the commit it came from, so later fetches make no request.

Names: a local file (a path or an LM Studio spec) whose sha256 is a catalog entry's IS that
entry, read from where it lies, and takes the entry's name; only a file whose size is some
entry's `size_bytes` is hashed, so other files cost no read. Any other local file is named
from its file name (`slug(stem)`, plus the quant when the name lacks it), which is what its
owner recognises, not from the header's `general.name` (often a training-run name); the
header's name stays in the variant's `model` field. Hub and Ollama specs are named from the
header as before.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgeeval import settings
from edgeeval.catalog.models import Catalog, Source, Variant, is_spec
from edgeeval.errors import FetchError
from edgeeval.fetch import local_stores
from edgeeval.fetch.files import sha256_file
from edgeeval.gguf.facts import SPLIT_PART, ModelFacts, read_facts, variant_name
from edgeeval.text import Progress, safe_text

#: A quant tag inside a file name: Q4_K_M, IQ3_XXS, Q8_0, BF16, F16, MXFP4_MOE, UD-Q4_K_XL, ...
_TAG = re.compile(
    r"(?<![a-z0-9])((?:ud-)?(?:i?q\d+(?:_[a-z0-9]+)*|bf16|f16|f32|mxfp4(?:_moe)?|nvfp4|tq\d_\d))"
    r"(?![a-z0-9])",
    re.IGNORECASE,
)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HfSpec:
    """`hf:owner/repo[:QUANT][/path][@revision]`, parsed."""

    repo_id: str
    quant: str | None
    filename: str | None
    revision: str | None


def parse_hf(text: str) -> HfSpec:
    """Parse the part after `hf:`.

    >>> parse_hf("Qwen/Qwen3-0.6B-GGUF:Q8_0")
    HfSpec(repo_id='Qwen/Qwen3-0.6B-GGUF', quant='Q8_0', filename=None, revision=None)
    >>> parse_hf("o/r/sub/m.gguf@v2")
    HfSpec(repo_id='o/r', quant=None, filename='sub/m.gguf', revision='v2')
    """
    body, _, revision = text.partition("@")
    owner, _, rest = body.partition("/")
    repo, sep, path = rest.partition("/")
    repo, _, quant = repo.partition(":")
    if not owner or not repo or (sep and not path):
        raise FetchError(
            f"'hf:{safe_text(text)}' is not a Hub spec: use hf:OWNER/REPO:QUANT (e.g. "
            "hf:Qwen/Qwen3-0.6B-GGUF:Q8_0) or hf:OWNER/REPO/FILE.gguf[@REVISION]"
        )
    return HfSpec(f"{owner}/{repo}", quant or None, path or None, revision or None)


def quant_tags(filename: str) -> list[str]:
    """The quant tags a file name carries, upper-cased.

    >>> quant_tags("Qwen3-1.7B-UD-Q4_K_XL.gguf"), quant_tags("model.Q8_0-00001-of-00002.gguf")
    (['UD-Q4_K_XL'], ['Q8_0'])
    """
    return [m.upper() for m in _TAG.findall(Path(filename).name)]


def pick_hf_file(spec: HfSpec, files: list[str]) -> str:
    """The repo file a `hf:repo[:QUANT]` spec names: the one GGUF model (the first part of a
    split one) whose name carries the tag. FetchError lists the repo's tags when none or
    several match."""
    models = [
        f
        for f in files
        if f.lower().endswith(".gguf")
        and not local_stores.is_projector(Path(f))
        and not local_stores.is_later_split_part(Path(f))
    ]
    if spec.quant:
        wanted = spec.quant.upper()
        matches = [f for f in models if wanted in quant_tags(f)]
    else:
        matches = models
    if len(matches) == 1:
        return matches[0]
    tags = sorted({t for f in models for t in quant_tags(f)})
    shown = f"hf:{spec.repo_id}" + (f":{spec.quant}" if spec.quant else "")
    if not matches:
        what = f"no GGUF file with the tag {spec.quant}" if spec.quant else "no GGUF file"
        listing = f"its quant tags: {', '.join(tags)}" if tags else "it has no GGUF files"
        raise FetchError(f"{shown}: {spec.repo_id} has {what}; {listing}")
    names = ", ".join(matches)
    hint = "a longer tag or hf:OWNER/REPO/FILE.gguf" if spec.quant else "a quant: hf:OWNER/REPO:TAG"
    raise FetchError(
        f"{shown}: several files match ({names}); name one with {hint}"
        + (f" (quant tags: {', '.join(tags)})" if tags else "")
    )


def _hf_variant_source(spec: HfSpec, progress: Progress, label: str) -> tuple[Source, Path, str]:
    """Download (or find in the cache) the file a Hub spec names, and every split part; return
    its hub source pinned to the commit, its cached path and its LFS sha256 (or "")."""
    from edgeeval.fetch import hub  # the Hub client is only imported when used

    filename = spec.filename
    listing: dict[str, hub.RemoteFile] = {}
    if filename is None:
        remote = hub.list_files(spec.repo_id, spec.revision)
        listing = {f.path: f for f in remote}
        filename = pick_hf_file(spec, list(listing))
    known = listing.get(filename)
    sha = known.sha256 if known else None
    local_only = _pinned(spec) or settings.offline()
    path = hub.cached_file(spec.repo_id, filename, spec.revision) if local_only else None
    if path is None:
        path = hub.download(
            hub.where(spec.repo_id, filename, spec.revision),
            size_bytes=known.size if known else None,
            sha256=sha,
            progress=progress,
            label=label,
        )
    commit = path.parent.name if _COMMIT.match(path.parent.name) else _commit_of(path)
    for part in _other_parts(filename):
        if hub.cached_file(spec.repo_id, part, commit) is None:
            hub.download(
                hub.where(spec.repo_id, part, commit),
                size_bytes=None,
                sha256=None,
                progress=progress,
                label=label,
            )
    source = Source(kind="hub", repo_id=spec.repo_id, filename=filename, revision=commit)
    return source, path, sha or hub.lfs_sha256(path) or ""


def _pinned(spec: HfSpec) -> bool:
    """True when the spec names one exact file at one commit (the cache alone can answer)."""
    return spec.filename is not None and bool(spec.revision and _COMMIT.match(spec.revision))


def _commit_of(path: Path) -> str | None:
    """The snapshot commit a cached file lies under (`snapshots/<commit>/<path>`)."""
    for parent in path.parents:
        if parent.parent.name == "snapshots" and _COMMIT.match(parent.name):
            return parent.name
    return None


def _other_parts(filename: str) -> list[str]:
    """Parts 2..N of a split file named by its first part."""
    match = SPLIT_PART.search(filename)
    if not match or int(match[1]) != 1:
        return []
    total, stem = int(match[2]), filename[: match.start()]
    return [f"{stem}-{i:05d}-of-{total:05d}.gguf" for i in range(2, total + 1)]


def _local_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise FetchError(
            f"no model file at {safe_text(path)}; a model is a catalog name "
            "(`edgeeval models`), a .gguf path, hf:OWNER/REPO:QUANT, ollama:NAME or "
            "lmstudio:PUBLISHER/REPO"
        )
    if not path.is_file():
        raise FetchError(
            f"{safe_text(path)} is not a file; `edgeeval models --scan {safe_text(path)}` "
            "lists the GGUF files under a folder"
        )
    if local_stores.is_later_split_part(path):
        first = SPLIT_PART.sub(lambda m: f"-00001-of-{m[2]}.gguf", path.name, count=1)
        raise FetchError(f"{safe_text(path)} is a later part of a split model; name {first}")
    return path.resolve()


def catalog_match(path: Path, known: Iterable[Variant]) -> tuple[Variant | None, str | None]:
    """The entry of `known` whose file `path` is (same size_bytes, then same sha256), and the
    file's sha256 when it was hashed (None when no entry has its size: it is never read)."""
    size = path.stat().st_size
    same_size = [v for v in known if v.sha256 and v.size_bytes == size]
    if not same_size:
        return None, None
    sha = sha256_file(path)
    return next((v for v in same_size if (v.sha256 or "").lower() == sha), None), sha


def file_variant_name(facts: ModelFacts) -> str:
    """A local file's variant name: its file name's stem as a catalog name, with the quant
    when the stem lacks it ("model.gguf" -> "model-q4_k_m")."""
    stem = SPLIT_PART.sub("", facts.path.name)
    stem = stem[: -len(".gguf")] if stem.lower().endswith(".gguf") else Path(stem).stem
    return variant_name(dataclasses.replace(facts, name=stem))


class Resolver:
    """Turns specs into variants, each spec once; names never clash with `taken` names.
    `known`: the catalog's variants, which a local file with the same sha256 is named after."""

    def __init__(self, taken: set[str], progress: Progress, known: Iterable[Variant] = ()) -> None:
        self.taken = set(taken)
        self.progress = progress
        self.known = list(known)
        self.made: dict[str, Variant] = {}

    def __call__(self, text: str) -> Variant:
        """The variant a spec names (resolved once per spec text)."""
        if text not in self.made:
            self.made[text] = self._resolve(text)
        return self.made[text]

    def _resolve(self, text: str) -> Variant:
        lowered = text.lower()
        sha: str | None = None
        source_kind = "path"
        if lowered.startswith("hf:"):
            source, path, sha = _hf_variant_source(parse_hf(text[3:]), self.progress, text)
            source_kind = "hf"
        elif lowered.startswith("ollama:"):
            found = local_stores.ollama_model(text[len("ollama:") :])
            source, path, sha = Source(kind="local", path=str(found.path)), found.path, found.sha256
            source_kind = "ollama"
        elif lowered.startswith("lmstudio:"):
            found = local_stores.lmstudio_model(text[len("lmstudio:") :])
            source, path = Source(kind="local", path=str(found.path)), found.path
            source_kind = "lmstudio"
        else:
            path = _local_path(text)
            source = Source(kind="local", path=str(path))
        return self._variant(text, source, path, sha or None, source_kind)

    def _variant(
        self, text: str, source: Source, path: Path, sha: str | None, source_kind: str
    ) -> Variant:
        facts = read_facts(path)
        local = source_kind in ("path", "lmstudio")
        if local and facts.n_parts == 1:
            entry, hashed = catalog_match(path, self.known)
            if entry is not None:  # the catalog's own file, read where it lies
                note = f"the catalog's {entry.name} (same sha256), from the model spec {text}"
                return dataclasses.replace(entry, source=source, notes=note, spec=text)
            sha = sha or hashed
        base = file_variant_name(facts) if local else variant_name(facts)
        name = self._free_name(base, source_kind)
        return Variant(
            name=name,
            family=facts.architecture.lower(),
            model=facts.name,
            quant=facts.quant,
            source=source,
            license=facts.license,
            kind="instruct" if facts.chat_template else "base",
            size_bytes=path.stat().st_size,
            sha256=sha,
            chat_template="embedded in the GGUF" if facts.chat_template else None,
            params=facts.params or None,
            notes=f"made from the model spec {text}",
            spec=text,
        )

    def _free_name(self, base: str, source_kind: str) -> str:
        """`base`, or `base-<source>`, `base-<source>-2`, ... when a name is taken."""
        candidates = [base, f"{base}-{source_kind}"]
        candidates += [f"{base}-{source_kind}-{i}" for i in range(2, 1000)]
        name = next(c for c in candidates if c not in self.taken)
        self.taken.add(name)
        return name


def select(
    catalog: Catalog,
    names: list[str] | None,
    *,
    set_name: str = "default",
    progress: Progress = lambda _: None,
) -> tuple[Catalog, list[Variant]]:
    """The variants `names` select (catalog names, sets, or model specs, also inside sets),
    and `catalog` extended with the variants made from specs (so `get` finds them)."""
    resolver = Resolver(set(catalog.variants), progress, catalog.variants.values())
    variants = catalog.select(names, set_name=set_name, resolve=resolver)
    return catalog.with_variants(list(resolver.made.values())), variants


def resolve_one(catalog: Catalog, name: str, *, progress: Progress = lambda _: None) -> Variant:
    """One catalog variant or model spec (e.g. a --ref option)."""
    if not is_spec(name) or name in catalog.variants:
        return catalog.get(name)
    return Resolver(set(catalog.variants), progress, catalog.variants.values())(name)
