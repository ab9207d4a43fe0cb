"""Hostile YAML: alias bombs, oversized or non-UTF-8 files and mistyped values give a
ConfigError naming the file (and the entry and key where there is one), never a traceback."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeeval.catalog.models import Catalog, load_catalog
from edgeeval.catalog.profiles import load_profile
from edgeeval.errors import ConfigError, EdgeevalError
from edgeeval.tasks.suite import parse_task
from edgeeval.yamlio import MAX_ALIASES, MAX_BYTES, load_yaml
from tests.faults.inputs_support import GOOD_CATALOG

REPO = Path(__file__).resolve().parents[2]


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The classic "billion laughs": each level lists the previous one `width` times."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_the_good_catalog_loads():
    assert isinstance(load_catalog(_write(GOOD_CATALOG)), Catalog)


def _write(text: str | bytes, name: str = "models.yaml") -> Path:
    path = Path(pytest.tmp_dir) / name  # type: ignore[attr-defined]
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _tmp_dir(tmp_path):
    pytest.tmp_dir = str(tmp_path)  # type: ignore[attr-defined]
    yield


def test_an_alias_bomb_is_refused_without_expanding_it():
    text = alias_bomb()
    assert len(text) < 1000
    path = _write(text)
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="aliases") as info:
            load_catalog(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 50 * 2**20


def test_few_aliases_that_expand_to_too_much_are_refused():
    # 12 levels of 4 references each: 48 aliases (under the limit), 4^12 values expanded
    path = _write(alias_bomb(levels=13, width=4))
    with pytest.raises(ConfigError, match="expanded"):
        load_yaml(path)


def test_a_few_plain_aliases_are_allowed():
    text = GOOD_CATALOG.replace("license: mit", "license: &lic mit").replace(
        "license: apache-2.0", "license: *lic"
    )
    assert load_catalog(_write(text)).get("b").license == "mit"
    assert MAX_ALIASES >= 1


def test_a_self_referencing_alias_is_refused():
    with pytest.raises(ConfigError, match="refers to the collection"):
        load_yaml(_write("a: &x [1, *x]\n"))


def test_deep_nesting_is_refused():
    with pytest.raises(ConfigError, match="nested"):
        load_yaml(_write("a: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_an_oversized_file_is_refused():
    path = _write("# padding\n" * (MAX_BYTES // 10 + 1) + GOOD_CATALOG)
    with pytest.raises(ConfigError, match="larger than"):
        load_catalog(path)


def test_non_utf8_bytes_are_refused_with_the_offset():
    path = _write(GOOD_CATALOG.encode().replace(b"model: A", b"model: \xff\xfe"))
    with pytest.raises(ConfigError, match="not UTF-8 text .byte \\d+") as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_a_huge_integer_is_a_config_error():
    path = _write(GOOD_CATALOG.replace("size_bytes: 1000", "size_bytes: " + "9" * 6000))
    with pytest.raises(ConfigError):
        load_catalog(path)


@pytest.mark.parametrize(
    "old, new, entry, key",
    [
        ("size_bytes: 1000", 'size_bytes: "abc"', "a", "size_bytes"),
        ("size_bytes: 1000", "size_bytes: [1]", "a", "size_bytes"),
        ("  - name: a\n", "  - name: 123\n", "#1", "name"),
        ("  - name: a\n", "  - name: [a]\n", "#1", "name"),
        ("family: qwen", "family: [qwen]", "a", "family"),
        ("model: A", "model: {x: 1}", "a", "model"),
        ("quant: Q8_0", "quant: 8", "a", "quant"),
        ("kind: instruct", "kind: [instruct]", "a", "kind"),
        ("license: mit", "license: 3", "a", "license"),
        ("size_bytes: 1000", "size_bytes: 1000\n    params: lots", "a", "params"),
        ("size_bytes: 1000", "size_bytes: 1000\n    params: 0", "a", "params"),
        ("size_bytes: 1000", "size_bytes: 1000\n    notes: [x]", "a", "notes"),
        ("size_bytes: 1000", "size_bytes: 1000\n    reasoning: maybe", "a", "reasoning"),
        ("size_bytes: 1000", "size_bytes: 1000\n    chat_template: 5", "a", "chat_template"),
        ("repo_id: org/a", "repo_id: [org, a]", "a", "source.hub.repo_id"),
        ("filename: a.gguf", "filename: 12", "a", "source.hub.filename"),
        ("filename: a.gguf}", "filename: a.gguf, gated: yes please}", "a", "source.hub.gated"),
        ("path: /nonexistent/b.gguf", "path: 5", "b", "source.local.path"),
        ("path: /nonexistent/b.gguf", "path: [x]", "b", "source.local.path"),
        ("both: [a, b]", "both: [a, {b: 1}]", "both", "sets"),
        ("both: [a, b]", "both: a", "both", "sets"),
    ],
)
def test_a_mistyped_value_names_file_entry_and_key(old, new, entry, key):
    assert old in GOOD_CATALOG
    path = _write(GOOD_CATALOG.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    message = str(info.value)
    assert str(path) in message and f"entry '{entry}'" in message and f"key '{key}'" in message


@pytest.mark.parametrize(
    "text, key",
    [
        ("variants: {a: 1}\nsets: {default: [a]}\n", "variants"),
        ("- a\n- b\n", None),
        ("42\n", None),
        ("", None),
        (GOOD_CATALOG.replace("  - name: a\n", "  - 17\n  - name: a\n", 1), None),
        (
            GOOD_CATALOG.replace("source: {hub:", "source: [{hub:", 1).replace(
                "a.gguf}}", "a.gguf}}]", 1
            ),
            "source",
        ),
        (GOOD_CATALOG.replace("sets:\n", "sets:\n  3: [a]\n"), "sets"),
        (GOOD_CATALOG + "recipes: [x]\n", "recipes"),
        (GOOD_CATALOG + "bogus: !!python/object:os.system ls\n", None),
    ],
)
def test_a_wrong_shape_is_a_config_error(text, key):
    path = _write(text)
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    assert str(path) in str(info.value)
    if key:
        assert f"key '{key}'" in str(info.value)


def test_a_directory_or_device_as_catalog_is_a_config_error(tmp_path):
    for path in (tmp_path, Path("/dev/zero")):
        with pytest.raises(ConfigError, match="not a regular file"):
            load_catalog(path)


GOOD_TASK = """\
name: mini
version: 1
description: tiny
category: math
kind: generate
source: generator:word-math
n_items: 5
"""


@pytest.mark.parametrize(
    "old, new, key",
    [
        ("version: 1", 'version: "1"', "version"),
        ("n_items: 5", "n_items: [5]", "n_items"),
        ("name: mini", "name: 7", "name"),
        ("n_items: 5", "n_items: 5\n3: x", "3"),
        ("n_items: 5", "n_items: 5\nstop: [1, 2]", "stop"),
        ("n_items: 5", "n_items: 5\nfew_shot: [1]", "few_shot"),
    ],
)
def test_a_mistyped_task_file_names_the_key(old, new, key):
    path = _write(GOOD_TASK.replace(old, new), "mini.yaml")
    with pytest.raises(ConfigError) as info:
        parse_task(path)
    assert str(path) in str(info.value) and f"key '{key}'" in str(info.value)


def test_the_good_task_file_parses():
    assert parse_task(_write(GOOD_TASK, "mini.yaml")).n_items == 5


def test_a_task_file_alias_bomb_is_refused():
    with pytest.raises(ConfigError, match="aliases"):
        parse_task(_write(alias_bomb(), "mini.yaml"))


@pytest.mark.parametrize(
    "text, key",
    [
        ("p: {repetitions: two}\n", "repetitions"),
        ("p: {sweep_threads: [1, x]}\n", "sweep_threads"),
        ("p: {sweep_flash_attn: [1]}\n", "sweep_flash_attn"),
        ("p: {3: 1}\n", "3"),
        ("p: {repetitions: true}\n", "repetitions"),
        ("p: {suite: 5}\n", "suite"),
        ("- p\n", None),
        ("p: [1]\n", None),
    ],
)
def test_a_mistyped_profile_names_the_key(text, key):
    path = _write(text, "speed.yaml")
    with pytest.raises(ConfigError) as info:
        load_profile("p", path)
    if key:
        assert f"key '{key}'" in str(info.value)


def test_a_profile_timeout_may_be_an_integer():
    assert load_profile("p", _write("p: {timeout_s: 60}\n", "speed.yaml")) == {"timeout_s": 60.0}


# --- end to end through the command line -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        alias_bomb(),
        GOOD_CATALOG.replace("size_bytes: 1000", 'size_bytes: "abc"'),
        GOOD_CATALOG.encode().replace(b"model: A", b"model: \xff"),
        GOOD_CATALOG.replace("quant: Q8_0", 'quant: "\\e[2J\\e[31mQ8"'),
        "variants: [\n",
    ],
)
def test_the_cli_answers_a_bad_catalog_with_one_clean_line(text):
    path = _write(text)
    done = subprocess.run(
        [sys.executable, "-m", "edgeeval", "--catalog", str(path), "models"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    if "\\e[2J" in str(text):  # a valid catalog whose strings hold escape sequences
        assert done.returncode == 0 and "\x1b" not in done.stdout and "\\x1b[2J" in done.stdout
        return
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "\x1b" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeeval: error: ") and str(path) in lines[0]


# --- property-based: mutated catalogs -------------------------------------------------------------

_LINES = GOOD_CATALOG.splitlines()
_JUNK = st.sampled_from(
    [
        "abc",
        "123",
        "-1",
        "1e999",
        "true",
        "null",
        "~",
        "[]",
        "{}",
        "[a, [b, {c: d}]]",
        "{x: 1}",
        '"\\e[31m"',
        "&anc x",
        "*anc",
        "*missing",
        "!!binary aGk=",
        "!!python/name:os.system",
        "2024-01-01",
        "0x1F",
        "'|'",
        "? [a] : b",
        "\t",
        ":",
        "- -",
        "\x00",
        "\ufeff",
        "9" * 5000,
    ]
)


def _set_value(line: str, junk: str) -> str:
    """`line` with its value (after the first ': ') replaced by `junk`."""
    head, sep, _ = line.partition(": ")
    return f"{head}{sep}{junk}" if sep else f"{line} {junk}"


_EDIT = st.one_of(
    st.tuples(st.just("value"), st.integers(0, len(_LINES) - 1), _JUNK),
    st.tuples(st.just("insert"), st.integers(0, len(_LINES)), _JUNK),
    st.tuples(st.just("delete"), st.integers(0, len(_LINES) - 1), st.just("")),
    st.tuples(st.just("anchor"), st.integers(0, len(_LINES) - 1), st.just("")),
    st.tuples(st.just("bytes"), st.integers(0, len(GOOD_CATALOG)), st.binary(max_size=3)),
)


def _apply(edits: list) -> bytes:
    lines = list(_LINES)
    raw_edits = []
    for op, where, junk in edits:
        where = min(where, len(lines) - 1) if op != "insert" else min(where, len(lines))
        if not lines:
            break
        if op == "value":
            lines[where] = _set_value(lines[where], junk)
        elif op == "insert":
            indent = " " * (len(lines[where - 1]) - len(lines[where - 1].lstrip())) if where else ""
            lines.insert(where, f"{indent}k{where}: {junk}")
        elif op == "delete":
            del lines[where]
        elif op == "anchor":  # reference an earlier value many times over
            lines[where] = _set_value(lines[where], "[" + ", ".join(["*anc"] * 8) + "]")
            lines.insert(0, "anc: &anc [" + ", ".join(["x"] * 8) + "]")
        else:
            raw_edits.append((where, junk))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    for where, blob in raw_edits:
        data = data[:where] + blob + data[where:]
    return data


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits=st.lists(_EDIT, min_size=1, max_size=4))
def test_mutated_catalogs_load_or_raise_a_config_error(tmp_path, edits):
    path = tmp_path / "models.yaml"
    path.write_bytes(_apply(edits))
    try:
        catalog = load_catalog(path)
    except EdgeevalError as exc:
        assert isinstance(exc, ConfigError) and str(path) in str(exc)
        return
    for variant in catalog.variants.values():  # what loaded is what the types promise
        assert all(isinstance(getattr(variant, f), str) for f in ("name", "model", "quant"))
        assert variant.size_bytes is None or type(variant.size_bytes) is int
    for members in catalog.sets.values():
        assert all(m in catalog.variants for m in members)
