"""The model catalog: `models.yaml` parsed, validated and turned into `Variant` records.

A variant is one GGUF file of one model in one quantization, with where to get it. Named sets
(`default`, `laptop-16gb`, ...) pick which variants a run uses.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeeval import settings
from edgeeval.errors import ConfigError, UnknownNameError, suggest
from edgeeval.text import safe_text
from edgeeval.yamlio import load_yaml

#: Families of the built-in catalog's entries (documentation; any architecture name is accepted).
FAMILIES = ("qwen", "deepseek", "mimo", "gemma", "smollm", "gpt-oss")
#: A family is a short lowercase word: a llama.cpp architecture (`general.architecture`) or a
#: model line; anything llama.cpp can run is accepted.
_FAMILY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")
#: Prefixes of model specs (see edgeeval.fetch.specs): not catalog names.
SPEC_PREFIXES = ("hf:", "ollama:", "lmstudio:")
SOURCE_KINDS = ("hub", "pypi", "local", "derived")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
#: A Hub repo id as the Hub accepts it: [owner/]name, each of letters, digits, '_', '.', '-',
#: starting and ending with a letter, digit or '_'; no '--' or '..'; at most 96 characters.
_REPO_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"^(?:{_REPO_PART}/)?{_REPO_PART}$")
_MAX_REPO_ID = 96
_MAX_HUB_PATH = 1000

_VARIANT_KEYS = {
    "name": True,
    "family": True,
    "model": True,
    "quant": True,
    "source": True,
    "size_bytes": False,
    "sha256": False,
    "license": True,
    "kind": True,
    "chat_template": False,
    "params": False,
    "notes": False,
    "reasoning": False,
}
_SOURCE_KEYS = {
    "hub": {"repo_id": True, "filename": True, "revision": False, "gated": False},
    "pypi": {"packages": True, "files": True},
    "local": {"path": True},
    "derived": {"base": True, "recipe": True},
}


@dataclass(frozen=True)
class Source:
    """Where a variant's file comes from; only the fields of its `kind` are set."""

    kind: str
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    gated: bool = False
    packages: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    path: str | None = None
    base: str | None = None
    recipe: str | None = None


@dataclass(frozen=True)
class Variant:
    """One model file in one quantization. `kind` is "base" or "instruct"."""

    name: str
    family: str
    model: str
    quant: str
    source: Source
    license: str
    kind: str
    size_bytes: int | None = None
    sha256: str | None = None
    chat_template: str | None = None
    params: int | None = None
    reasoning: bool = False
    notes: str = ""
    #: The model spec this variant was made from (a path, hf:, ollama:, lmstudio:), if any.
    spec: str | None = None

    @property
    def filename(self) -> str:
        """File name the variant is stored under in edgeeval's cache."""
        return f"{self.name}.gguf"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Catalog:
    path: str
    variants: dict[str, Variant]
    sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Raw quantization recipes from the `recipes:` section; validated by the quantize stage.
    recipes: dict[str, Any] = field(default_factory=dict)
    #: Entries kept in `variants` that cannot be fetched as written (a Hub name that would
    #: leave the repo or the cache): variant name -> the ConfigError message naming file,
    #: entry and key. Fetching such a variant fails with that message; the others are unharmed.
    problems: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Variant:
        """The variant called `name`; raises UnknownNameError with suggestions."""
        if name in self.variants:
            return self.variants[name]
        raise UnknownNameError(
            "model",
            name,
            suggest(name, list(self.variants)),
            hint="run `edgeeval models` to list the catalog",
        )

    def select(
        self,
        names: list[str] | None = None,
        *,
        set_name: str = "default",
        resolve: Callable[[str], Variant] | None = None,
    ) -> list[Variant]:
        """Variants named explicitly (models, set names or model specs), or those of `set_name`.

        A model spec (a .gguf path, `hf:`, `ollama:`, `lmstudio:`; see `is_spec`) becomes a
        variant through `resolve` (edgeeval.fetch.specs does that); without it a spec is an
        UnknownNameError that says how to use one. Returns each variant once, in order.
        """
        if not names:
            names = [set_name]
        out: dict[str, Variant] = {}
        for name in names:
            if name in self.sets:
                for member in self.sets[name]:
                    variant = self._member(member, resolve)
                    out[variant.name] = variant
            elif name in self.variants:
                out[name] = self.variants[name]
            elif is_spec(name) and resolve is not None:
                variant = resolve(name)
                out[variant.name] = variant
            else:
                known = list(self.variants) + list(self.sets)
                raise UnknownNameError(
                    "model or set",
                    name,
                    suggest(name, known),
                    hint="run `edgeeval models` to list the catalog; a model file is named by "
                    "its path (./model.gguf), hf:owner/repo:QUANT, ollama:NAME or lmstudio:REPO",
                )
        return list(out.values())

    def _member(self, member: str, resolve: Callable[[str], Variant] | None) -> Variant:
        """One set member: a catalog variant, or a spec resolved by `resolve`."""
        if member in self.variants:
            return self.variants[member]
        if resolve is None:
            raise UnknownNameError(
                "model", member, [], hint="sets naming model specs are expanded by the CLI"
            )
        return resolve(member)

    def with_variants(self, extra: list[Variant]) -> Catalog:
        """This catalog plus `extra` (variants made from specs), so `get` finds them too."""
        merged = dict(self.variants)
        merged.update((v.name, v) for v in extra)
        return Catalog(
            path=self.path,
            variants=merged,
            sets=self.sets,
            recipes=self.recipes,
            problems=self.problems,
        )


def is_spec(name: str) -> bool:
    """True when `name` is a model spec rather than a catalog name: `hf:`, `ollama:` or
    `lmstudio:` prefixed, or a path (has a slash, starts with ~ or ., or ends in .gguf).

    >>> [is_spec(n) for n in ["qwen3-0.6b-q8_0", "hf:o/r:Q8_0", "./m.gguf", "m.GGUF", "~/m"]]
    [False, True, True, True, True]
    """
    lowered = name.lower()
    return (
        lowered.startswith(SPEC_PREFIXES)
        or "/" in name
        or "\\" in name
        or name.startswith(("~", "."))
        or lowered.endswith(".gguf")
    )


def default_path() -> Path:
    return settings.package_root() / "models.yaml"


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read and validate one models.yaml on its own (default: the built-in catalog); every
    problem names the file, the entry and the key. `edgeeval.catalog.stack.load_catalogs`
    merges the built-in, user-level and --catalog files."""
    path = Path(path) if path else default_path()
    catalog = read_catalog_file(path, partial=False)
    check_references(catalog, catalog.variants, path)
    if "default" not in catalog.sets:
        raise ConfigError("a 'default' set is required", path=path, key="sets")
    return catalog


def read_catalog_file(path: Path, *, partial: bool) -> Catalog:
    """One catalog file parsed, entries validated, references between entries not yet checked.

    `partial` (a user catalog extending another): `variants` may be absent or empty.
    """
    data = load_yaml(path, missing="file not found; pass --catalog PATH or run from the repo root")
    if partial and data is None:
        return Catalog(path=str(path), variants={})
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with 'variants' and 'sets'", path=path)
    _check_keys(
        data,
        {"variants": not partial, "sets": False, "version": False, "recipes": False},
        path,
        None,
    )
    raw_variants = data.get("variants") or []
    if not isinstance(raw_variants, list) or not (raw_variants or partial):
        raise ConfigError("must be a non-empty list", path=path, key="variants")
    variants: dict[str, Variant] = {}
    problems: dict[str, str] = {}
    for index, raw in enumerate(raw_variants):
        variant = _parse_variant(raw, path, index)
        if variant.name in variants:
            raise ConfigError("duplicate name", path=path, entry=variant.name, key="name")
        variants[variant.name] = variant
        found = hub_source_problem(variant.source)
        if found is not None:
            key, why = found
            problems[variant.name] = str(
                ConfigError(why, path=path, entry=variant.name, key=f"source.hub.{key}")
            )
    sets = _parse_sets(data.get("sets") or {}, path)
    recipes = data.get("recipes") or {}
    if not isinstance(recipes, dict):
        raise ConfigError("must be a mapping of recipe name to recipe", path=path, key="recipes")
    return Catalog(path=str(path), variants=variants, sets=sets, recipes=recipes, problems=problems)


def hub_repo_id_problem(repo_id: str) -> str | None:
    """Why `repo_id` is not a Hub repository id ([owner/]name), or None."""
    if (
        len(repo_id) > _MAX_REPO_ID
        or not _REPO_ID.match(repo_id)
        or "--" in repo_id
        or ".." in repo_id
        or repo_id.endswith(".git")
    ):
        return (
            f"{_shown(repo_id)} is not a Hub repository id: use OWNER/NAME (letters, digits, "
            f"'_', '.', '-'; no '..' or '--'; at most {_MAX_REPO_ID} characters)"
        )
    return None


def hub_path_problem(
    value: str,
    what: str = "a file name in a Hub repository",
    example: str = "'model-Q4_K_M.gguf' or 'sub/model.gguf'",
) -> str | None:
    """Why `value` is not a relative path inside a Hub repository (or a revision name), or
    None: no leading '/', no '\\', no empty, '.' or '..' part, no control character."""
    parts = value.split("/")
    if (
        not value
        or len(value) > _MAX_HUB_PATH
        or value.startswith("/")
        or "\\" in value
        or any(part in ("", ".", "..") for part in parts)
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
    ):
        return (
            f"{_shown(value)} is not {what}: give a relative name such as {example} "
            "(no leading '/', no '..')"
        )
    return None


def hub_source_problem(source: Source) -> tuple[str, str] | None:
    """(key, why) for the first Hub name of `source` that would leave its repository or the
    local cache (repo_id, filename, revision), or None (also for sources that are not hub)."""
    if source.kind != "hub":
        return None
    if source.repo_id:
        why = hub_repo_id_problem(source.repo_id)
        if why:
            return "repo_id", why
    if source.filename:
        why = hub_path_problem(source.filename)
        if why:
            return "filename", why
    if source.revision is not None:
        why = hub_path_problem(source.revision, "a revision", "'main' or a commit hash")
        if why:
            return "revision", why
    return None


def check_references(catalog: Catalog, known: dict[str, Variant], path: Path) -> None:
    """Raise ConfigError when a derived base or a set member of `catalog` (read from `path`) is
    neither a variant in `known` nor a model spec."""
    for variant in catalog.variants.values():
        base = variant.source.base
        if variant.source.kind == "derived" and base not in known and not is_spec(str(base)):
            raise ConfigError(
                f"base '{base}' is not a variant in this catalog (nor a model spec such as "
                "hf:owner/repo:BF16 or a path)",
                path=path,
                entry=variant.name,
                key="source.base",
            )
    for set_name, members in catalog.sets.items():
        for member in members:
            if member not in known and not is_spec(member):
                near = suggest(member, list(known))
                hint = f"; did you mean '{near[0]}'?" if near else ""
                raise ConfigError(
                    f"{_shown(member)} is not a variant or a model spec{hint}",
                    path=path,
                    entry=set_name,
                    key="sets",
                )


# The YAML type each key must have (bool is refused where an int is meant).
_VARIANT_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "family": str,
    "model": str,
    "quant": str,
    "license": str,
    "kind": str,
    "chat_template": str,
    "params": int,
    "notes": str,
    "reasoning": bool,
}
_SOURCE_TYPES: dict[str, type | tuple[type, ...]] = {
    "repo_id": str,
    "filename": str,
    "revision": str,
    "gated": bool,
    "packages": list,
    "files": list,
    "path": str,
    "base": str,
    "recipe": str,
}
_TYPE_WORDS: dict[type | tuple[type, ...], str] = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    list: "a list",
}


def _shown(value: Any) -> str:
    """A value from the file, quoted, short and safe to print."""
    return safe_text(reprlib.repr(value), 60)


def _check_types(
    raw: dict, spec: dict[str, type | tuple[type, ...]], path: Path, entry: str, prefix: str = ""
) -> None:
    """Raise ConfigError naming the key when a present, non-null value has the wrong type."""
    for key, kind in spec.items():
        value = raw.get(key)
        if value is None:
            continue
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if kind is list and not wrong:
            wrong = not all(isinstance(x, str) for x in value)
        if wrong:
            what = "a list of strings" if kind is list else _TYPE_WORDS.get(kind, str(kind))
            raise ConfigError(
                f"must be {what}, got {_shown(value)}", path=path, entry=entry, key=prefix + key
            )


def _check_keys(
    raw: dict, spec: dict[str, bool], path: Path, entry: str | None, prefix: str = ""
) -> None:
    for key in raw:
        if key not in spec:
            near = suggest(str(key), list(spec))
            hint = f"; did you mean '{near[0]}'?" if near else f"; known keys: {', '.join(spec)}"
            raise ConfigError(f"unknown key{hint}", path=path, entry=entry, key=prefix + str(key))
    for key, required in spec.items():
        if required and raw.get(key) in (None, ""):
            raise ConfigError("missing required key", path=path, entry=entry, key=prefix + key)


def _parse_variant(raw: Any, path: Path, index: int) -> Variant:
    if not isinstance(raw, dict):
        raise ConfigError("each variant must be a mapping", path=path, entry=f"#{index + 1}")
    name = raw.get("name")
    entry = name if isinstance(name, str) and name else f"#{index + 1}"
    _check_keys(raw, _VARIANT_KEYS, path, entry)
    _check_types(raw, _VARIANT_TYPES, path, entry)
    assert isinstance(name, str)  # required and typed: the two checks above raise otherwise
    if not _NAME.match(name):
        raise ConfigError(
            "use lowercase letters, digits, '.', '_' and '-'", path=path, entry=entry, key="name"
        )
    family = _family(raw["family"], path, entry)
    if raw["kind"] not in ("base", "instruct"):
        raise ConfigError("must be 'base' or 'instruct'", path=path, entry=entry, key="kind")
    sha, size, params = _file_facts(raw, path, entry)
    return Variant(
        name=name,
        family=family,
        model=raw["model"],
        quant=raw["quant"],
        source=_parse_source(raw["source"], path, entry),
        license=raw["license"],
        kind=raw["kind"],
        size_bytes=size,
        sha256=sha,
        chat_template=raw.get("chat_template"),
        params=params,
        reasoning=raw.get("reasoning", False),
        notes=raw.get("notes") or "",
    )


def _family(value: str, path: Path, entry: str) -> str:
    """The variant's family, lowercased; a ConfigError when it is not a short family word."""
    family = value.lower()
    if not _FAMILY.match(family):
        raise ConfigError(
            f"{_shown(family)} is not a family name: use a short lowercase word such as "
            f"{', '.join(FAMILIES[:3])} or the file's architecture (llama, phi3, ...)",
            path=path,
            entry=entry,
            key="family",
        )
    return family


def _file_facts(raw: dict, path: Path, entry: str) -> tuple[str | None, int | None, int | None]:
    """(sha256, size_bytes, params) as the entry gives them, each checked when given."""
    sha = raw.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.match(sha)):
        hint = " (YAML read it as a number: put it in quotes)" if isinstance(sha, int) else ""
        raise ConfigError(
            f"{_shown(sha)} is not 64 lowercase hex digits{hint}",
            path=path,
            entry=entry,
            key="sha256",
        )
    size = raw.get("size_bytes")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ConfigError(
            f"{_shown(size)} is not a positive integer", path=path, entry=entry, key="size_bytes"
        )
    params = raw.get("params")
    if params is not None and params <= 0:
        raise ConfigError("must be a positive integer", path=path, entry=entry, key="params")
    return sha, size, params


def _parse_source(raw: Any, path: Path, entry: str) -> Source:
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in SOURCE_KINDS:
        raise ConfigError(
            f"must be a mapping with exactly one of: {', '.join(SOURCE_KINDS)}",
            path=path,
            entry=entry,
            key="source",
        )
    kind, body = next(iter(raw.items()))
    if not isinstance(body, dict):
        raise ConfigError("must be a mapping", path=path, entry=entry, key=f"source.{kind}")
    _check_keys(body, _SOURCE_KEYS[kind], path, entry, prefix=f"source.{kind}.")
    _check_types(body, _SOURCE_TYPES, path, entry, prefix=f"source.{kind}.")
    values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in body.items()}
    return Source(kind=kind, **values)


def _parse_sets(raw: Any, path: Path) -> dict[str, tuple[str, ...]]:
    """Set name -> members (variant names or model specs), checked for shape only."""
    if not isinstance(raw, dict):
        raise ConfigError(
            "must be a mapping of set name to a list of variant names", path=path, key="sets"
        )
    sets: dict[str, tuple[str, ...]] = {}
    for set_name, members in raw.items():
        if not isinstance(set_name, str):
            raise ConfigError(
                f"set name {_shown(set_name)} must be a string", path=path, key="sets"
            )
        if (
            not isinstance(members, list)
            or not members
            or not all(isinstance(m, str) for m in members)
        ):
            raise ConfigError(
                "must be a non-empty list of variant names", path=path, entry=set_name, key="sets"
            )
        sets[str(set_name)] = tuple(members)
    return sets
