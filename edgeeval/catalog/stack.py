"""The catalog a command uses: the built-in models.yaml, extended by the user's own catalogs.

Layers, in order: the built-in catalog (shipped with edgeeval), the user-level catalog in the
platform's config dir (`settings.user_catalog_path()`, read when it exists) and the file given
with `--catalog`. A later layer adds variants, sets and recipes; a variant or recipe name that
an earlier layer already has is an error naming both files, while a set of the same name
replaces the earlier one (so a user can redefine `default`). A user catalog needs no `default`
set and may hold only sets; its sets and derived bases may name variants of any layer or model
specs (`./model.gguf`, `hf:owner/repo:Q4_K_M`, `ollama:llama3.2`, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeeval import settings
from edgeeval.catalog.models import (
    Catalog,
    check_references,
    default_path,
    read_catalog_file,
)
from edgeeval.errors import ConfigError
from edgeeval.safeio import kind_of


def catalog_paths(extra: str | Path | None = None, *, user: bool = True) -> list[Path]:
    """The catalog files read, built-in first: the user-level one only when it exists."""
    paths = [default_path()]
    user_path = settings.user_catalog_path()
    if user and os.path.lexists(user_path):
        _check_user_catalog(user_path)
        paths.append(user_path)
    if extra:
        paths.append(Path(extra))
    return paths


def load_catalogs(extra: str | Path | None = None, *, user: bool = True) -> Catalog:
    """The merged catalog of `catalog_paths(extra, user=user)`; raises ConfigError naming the
    file, entry and key of any problem, or both files for a duplicate name."""
    paths = catalog_paths(extra, user=user)
    layers = [read_catalog_file(p, partial=i > 0) for i, p in enumerate(paths)]
    variants: dict = {}
    recipes: dict = {}
    problems: dict[str, str] = {}
    sets: dict[str, tuple[str, ...]] = {}
    owner: dict[str, Path] = {}
    for path, layer in zip(paths, layers, strict=True):
        for name, variant in layer.variants.items():
            _refuse_duplicate("variant", name, owner.get(f"v:{name}"), path)
            owner[f"v:{name}"] = path
            variants[name] = variant
        for name, recipe in layer.recipes.items():
            _refuse_duplicate("recipe", name, owner.get(f"r:{name}"), path)
            owner[f"r:{name}"] = path
            recipes[name] = recipe
        sets.update(layer.sets)
        problems.update(layer.problems)
    for path, layer in zip(paths, layers, strict=True):
        check_references(layer, variants, path)
    if "default" not in sets:
        raise ConfigError("a 'default' set is required", path=paths[0], key="sets")
    label = " + ".join(str(p) for p in paths)
    return Catalog(path=label, variants=variants, sets=sets, recipes=recipes, problems=problems)


def _check_user_catalog(path: Path) -> None:
    """ConfigError naming the user-level catalog when something is there that is not a regular
    file (a directory, a FIFO, a device, a dangling link): its sets would silently not apply."""
    what = kind_of(path)
    if what:
        raise ConfigError(
            f"the user catalog is {what}, not a YAML file, so its variants and sets cannot "
            "apply; make it a models.yaml file, or move it away to use the built-in catalog "
            "(EDGEEVAL_CONFIG_DIR sets its folder)",
            path=path,
        )


def _refuse_duplicate(what: str, name: str, first: Path | None, second: Path) -> None:
    if first is not None:
        raise ConfigError(
            f"duplicate {what} name: '{name}' is already defined in {first}; rename it",
            path=second,
            entry=name,
            key="name",
        )
