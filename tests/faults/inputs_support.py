"""Builders shared by the input-fault tests: small valid GGUF files and models.yaml texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ESC = "\x1b"

GOOD_CATALOG = """\
variants:
  - name: a
    family: qwen
    model: A
    quant: Q8_0
    kind: instruct
    license: mit
    size_bytes: 1000
    source: {hub: {repo_id: org/a, filename: a.gguf}}
  - name: b
    family: gemma
    model: B
    quant: Q4_K_M
    kind: base
    license: apache-2.0
    source: {local: {path: /nonexistent/b.gguf}}
sets:
  default: [a]
  both: [a, b]
"""


def standard_metadata(arch: str = "llama") -> dict[str, tuple[str, object]]:
    """The metadata of the tiny GGUF: key -> (GGUFWriter method, value)."""
    return {
        f"{arch}.block_count": ("add_uint32", 2),
        f"{arch}.embedding_length": ("add_uint32", 64),
        f"{arch}.attention.head_count": ("add_uint32", 4),
        f"{arch}.attention.head_count_kv": ("add_uint32", 2),
    }


def write_gguf(
    path: Path,
    meta: dict[str, tuple[str, object] | None] | None = None,
    *,
    arch: str = "llama",
    tensor_name: str = "w1",
) -> Path:
    """A tiny valid GGUF with two tensors. `meta` adds or replaces metadata, key -> (GGUFWriter
    method such as "add_string", value), or None to leave a standard key out."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    entries: dict[str, tuple[str, object] | None] = {**standard_metadata(arch), **(meta or {})}
    for key, entry in entries.items():
        if entry is not None:
            method, value = entry
            getattr(writer, method)(key, value)
    writer.add_tensor(tensor_name, np.ones((8, 64), dtype=np.float32))
    writer.add_tensor("w2", np.zeros((4, 32), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
