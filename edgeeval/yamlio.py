"""The one YAML reader for user-editable files (models.yaml, task files, suites, profiles).

YAML can describe exponentially large data in a few hundred bytes: anchors and aliases nest
(`b: [*a, *a, *a]`, `c: [*b, *b, *b]`, ...), so an 860-byte "alias bomb" expands to
gigabytes as soon as anything walks or prints it. Policy here: a file may use a few aliases
(MAX_ALIASES, enough for sharing a settings block), its expanded node tree (aliases counted
every time they are referenced) may not exceed MAX_NODES, nesting may not exceed MAX_DEPTH,
and the file itself may not exceed MAX_BYTES. Only regular files are read, as strict UTF-8.
Every refusal is a ConfigError naming the file and the limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from edgeeval.errors import ConfigError
from edgeeval.text import safe_text

MAX_BYTES = 1 << 20
MAX_ALIASES = 50
MAX_NODES = 200_000
MAX_DEPTH = 64


class _Refused(Exception):
    """A limit was hit while composing; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that counts alias references and nesting depth while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.n_aliases = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.n_aliases += 1
            if self.n_aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases (*name); write the values out")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Nodes in the tree under `node` with every alias expanded; refuses cycles and overflow."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise _Refused("an alias refers to the collection that contains it")
    active.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        size += _expanded_size(child, memo, active)
        if size > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES:,} values once aliases are expanded")
    active.discard(key)
    memo[key] = size
    return size


def read_text_file(path: Path, max_bytes: int = MAX_BYTES) -> str:
    """The text of the regular file `path` (strict UTF-8, at most `max_bytes`).

    Raises FileNotFoundError when missing and ConfigError for a directory, device or pipe, an
    oversized file or bytes that are not UTF-8. Opened non-blocking so a FIFO cannot hang.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError("not a regular file; give the path of a YAML file", path=path)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ConfigError(f"larger than {max_bytes:,} bytes; is this the right file?", path=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte {exc.start}); save the file as UTF-8", path=path
        ) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: where and what PyYAML found wrong."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {safe_text(problem, 120)}"


def load_yaml(path: str | Path, *, missing: str = "file not found") -> Any:
    """The data of the YAML file `path` (None when empty), read within this module's limits.

    Every problem (missing file, with the `missing` message; not a regular file; too large;
    not UTF-8; invalid YAML; too many aliases, too deep, too large once expanded) raises
    ConfigError naming the file.
    """
    path = Path(path)
    try:
        text = read_text_file(path)
    except FileNotFoundError:
        raise ConfigError(missing, path=path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory; give the path of a YAML file", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror or exc}", path=path) from None
    loader = None
    try:
        loader = _LimitedLoader(text)  # the reader already refuses some characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    except _Refused as exc:
        raise ConfigError(f"refused: {exc.reason}", path=path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(exc), path=path) from None
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. an int of 5000 digits
        raise ConfigError(f"a value cannot be read: {safe_text(exc, 120)}", path=path) from None
    finally:
        if loader is not None:
            loader.dispose()
