"""Hostile GGUF headers: every metadata value edgeeval reads is type- and range-checked, so the
pre-check answers with InvalidModelFileError (or a summary whose estimates are sane), never a
traceback, and a bad file costs only its own record in a run."""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeeval import pipeline
from edgeeval import records as rec
from edgeeval.catalog.models import load_catalog
from edgeeval.engine.host import LibraryInfo
from edgeeval.errors import InvalidModelFileError
from edgeeval.gguf.check import ArrayLength, GgufSummary, check_gguf, kv_cache_bytes
from edgeeval.run import runner
from edgeeval.store import runs as store
from tests.builders import HOST
from tests.faults.inputs_support import write_gguf

HEAD = "llama.attention.head_count"


@pytest.mark.parametrize(
    "key, entry",
    [
        ("general.alignment", ("add_string", "32")),
        ("general.alignment", ("add_float32", 32.0)),
        ("general.alignment", ("add_bool", True)),
        ("general.alignment", ("add_uint32", 0)),
        ("general.alignment", ("add_uint32", 48)),
        ("general.alignment", ("add_uint64", 2**62)),
        (HEAD, ("add_uint32", 0)),
        (HEAD, ("add_string", "8")),
        (HEAD, ("add_float32", 4.0)),
        (HEAD, ("add_int32", -4)),
        (HEAD, ("add_array", ["a", "b"])),
        ("llama.attention.head_count_kv", ("add_string", "2")),
        ("llama.block_count", ("add_uint32", 0)),
        ("llama.block_count", ("add_uint64", 2**40)),
        ("llama.embedding_length", ("add_string", "64")),
        ("llama.attention.key_length", ("add_uint32", 0)),
        ("tokenizer.ggml.tokens", ("add_string", "abc")),
    ],
)
def test_mistyped_or_out_of_range_metadata_is_refused_naming_the_key(tmp_path, key, entry):
    path = write_gguf(tmp_path / "bad.gguf", {key: entry})
    with pytest.raises(InvalidModelFileError) as info:
        check_gguf(path)
    assert f"metadata {key} must be" in str(info.value) and str(path) in str(info.value)


def test_an_architecture_that_is_not_a_string_is_refused(tmp_path):
    path = write_gguf(tmp_path / "bad.gguf", {"general.architecture": ("add_uint32", 7)})
    # the writer adds the real architecture first; a second key of the same name overrides it
    with open(path, "rb") as fh:
        assert b"general.architecture" in fh.read(4096)
    with pytest.raises(InvalidModelFileError, match="general.architecture"):
        check_gguf(path)


def test_per_layer_head_counts_are_accepted_and_not_mistaken_for_a_count(tmp_path):
    path = write_gguf(
        tmp_path / "ok.gguf", {"llama.attention.head_count_kv": ("add_array", [2, 0])}
    )
    summary = check_gguf(path)
    assert summary.metadata["llama.attention.head_count_kv"] == [2, 0]
    # per layer (256 cells): K 2 heads * 16 and 0; V padded to the widest layer's 32 (no FA)
    assert kv_cache_bytes(summary, 100) == 256 * ((32 + 32) + (0 + 32)) * 2


def test_a_long_array_is_kept_as_its_length_only(tmp_path):
    tokens = [f"t{i}" for i in range(5000)]
    path = write_gguf(tmp_path / "v.gguf", {"tokenizer.ggml.tokens": ("add_array", tokens)})
    value = check_gguf(path).metadata["tokenizer.ggml.tokens"]
    assert isinstance(value, ArrayLength) and value == 5000


@pytest.mark.parametrize(
    "meta",
    [
        {
            "general.architecture": "llama",
            "llama.block_count": 2,
            HEAD: 0,
            "llama.embedding_length": 64,
        },
        {
            "general.architecture": "llama",
            "llama.block_count": 2,
            HEAD: "4",
            "llama.embedding_length": 64,
        },
        {
            "general.architecture": "llama",
            "llama.block_count": True,
            HEAD: 4,
            "llama.embedding_length": 64,
        },
        {
            "general.architecture": "llama",
            "llama.block_count": 2,
            HEAD: ArrayLength(9000),
            "llama.embedding_length": 64,
        },
        {
            "general.architecture": "llama",
            "llama.block_count": 2.5,
            HEAD: 4,
            "llama.embedding_length": 64,
            "llama.attention.key_length": "x",
        },
        {"general.architecture": ["llama"], "llama.block_count": 2},
    ],
)
def test_the_kv_estimate_gives_none_for_values_the_check_would_refuse(meta):
    summary = GgufSummary(version=3, n_tensors=0, n_params=0, metadata=meta, data_bytes=0)
    assert kv_cache_bytes(summary, 512) is None


def test_a_run_records_hostile_models_and_keeps_measuring_the_rest(tmp_path, monkeypatch):
    """Hostile files ahead of a good one: every variant gets a record, the good one is still
    measured, and nothing raises out of the run."""
    models = tmp_path / "models"
    models.mkdir()
    fifo = models / "pipe.gguf"
    os.mkfifo(fifo)
    bad = write_gguf(models / "bad.gguf", {HEAD: ("add_string", "many")})
    good = write_gguf(models / "good.gguf")
    paths = {"dir": models, "fifo": fifo, "zero": "/dev/zero", "badhead": bad, "good": good}
    entries = "\n".join(
        f"  - {{name: {name}, family: qwen, model: M, quant: Q8_0, kind: instruct, "
        f'license: mit, source: {{local: {{path: "{path}"}}}}}}'
        for name, path in paths.items()
    )
    catalog_path = tmp_path / "models.yaml"
    catalog_path.write_text(f"variants:\n{entries}\nsets:\n  default: [{', '.join(paths)}]\n")
    measured = []

    def fake_measure(variant, file, *, run_id, host, settings, **_):
        measured.append(variant.name)
        info = runner.variant_info(variant, file)
        return runner.failed_record(run_id, info, host, settings, rec.STATUS_ERROR, "child"), [], []

    monkeypatch.setattr("edgeeval.run.runner.measure_variant", fake_measure)
    monkeypatch.setattr(pipeline, "library_info", LibraryInfo)
    monkeypatch.setattr(pipeline.hostinfo, "collect", lambda library, **_: HOST)
    catalog = load_catalog(catalog_path)
    outcome = pipeline.bench(
        catalog.select(),
        rec.RunSettings(suite=""),
        progress=lambda _: None,
        catalog=catalog,
    )
    by_name = {r.variant.name: r for r in store.load_records(outcome.run_id)}
    assert set(by_name) == set(paths)
    assert measured == ["badhead", "good"]  # the child runs the full check and records it
    for name in ("dir", "fifo", "zero"):
        assert by_name[name].status == rec.STATUS_SKIPPED
        assert "not a regular file" in by_name[name].error


# --- property-based: mutated headers ----------------------------------------------------------


@pytest.fixture(scope="module")
def valid_gguf() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return write_gguf(Path(tmp) / "v.gguf").read_bytes()


def _header_len(blob: bytes) -> int:
    """Bytes before the tensor data (where the mutations that matter land)."""
    return min(len(blob), 400)


_MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("u64"), st.integers(0, 10**6), st.sampled_from([0, 2**31, 2**63, 2**64 - 1])),
)


def _mutate(blob: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(blob)
    for op, where, value in ops:
        pos = where % max(1, min(len(data), _header_len(blob)))
        if op == "flip" and data:
            data[pos] = value
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = bytes([value])
        elif op == "u64":
            data[pos : pos + 8] = struct.pack("<Q", value)
    return bytes(data)


def _outcome_is_clean(path: Path) -> None:
    """The check returns a summary with sane estimates or raises InvalidModelFileError."""
    try:
        summary = check_gguf(path)
    except InvalidModelFileError as exc:
        assert str(path) in str(exc)
        return
    kv = kv_cache_bytes(summary, 2048)
    assert kv is None or (isinstance(kv, int) and kv >= 0)
    align = summary.metadata.get("general.alignment", 32)
    assert isinstance(align, int) and align > 0 and align & (align - 1) == 0


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(_MUTATION, min_size=1, max_size=4))
def test_byte_mutations_of_a_valid_header_never_escape_as_other_errors(valid_gguf, tmp_path, ops):
    path = tmp_path / "m.gguf"
    path.write_bytes(_mutate(valid_gguf, ops))
    _outcome_is_clean(path)


_KEYS = [
    "general.alignment",
    "general.architecture",
    "llama.block_count",
    "llama.embedding_length",
    "llama.context_length",
    HEAD,
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.attention.value_length",
    "tokenizer.ggml.tokens",
]
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_VALUES = st.one_of(
    st.tuples(st.just("add_uint8"), st.integers(0, 255)),
    st.tuples(st.just("add_int32"), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just("add_uint32"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("add_uint64"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("add_int64"), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just("add_float32"), st.floats(width=32)),
    st.tuples(st.just("add_float64"), st.floats()),
    st.tuples(st.just("add_bool"), st.booleans()),
    st.tuples(st.just("add_string"), _TEXT),
    st.tuples(st.just("add_array"), st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=6)),
    st.tuples(st.just("add_array"), st.lists(_TEXT, min_size=1, max_size=4)),
    st.none(),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(meta=st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=4))
def test_any_value_type_in_the_keys_edgeeval_reads_is_answered_cleanly(tmp_path, meta):
    if "general.architecture" in meta and meta["general.architecture"] is None:
        del meta["general.architecture"]  # the writer always writes one
    path = write_gguf(tmp_path / "t.gguf", meta)
    _outcome_is_clean(path)
