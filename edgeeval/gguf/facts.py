"""What a GGUF file says about itself: architecture, name, quantization, parameters, chat
template. Read with the bounded header walk of `gguf.check`, so a hostile file is refused before
llama.cpp sees it. Used to make a catalog variant from a bare file (a model spec) and to list
the GGUFs found on this machine.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from edgeeval.gguf.check import GgufSummary, check_gguf

#: A split GGUF's part: `<stem>-00002-of-00005.gguf`.
SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_SLUG = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True)
class ModelFacts:
    """A GGUF's self-description. `params` counts every split part; `n_parts` is 1 unless split."""

    path: Path
    architecture: str
    name: str
    quant: str
    params: int
    size_bytes: int
    chat_template: bool
    license: str
    n_parts: int = 1


def quant_name(file_type: object, summary: GgufSummary | None = None) -> str:
    """llama.cpp's name of `general.file_type` (15 -> "Q4_K_M"); without one, the ggml type
    holding most of the weights (from `summary`), else "unknown".

    >>> quant_name(15), quant_name(0), quant_name(32)
    ('Q4_K_M', 'F32', 'BF16')
    """
    from gguf import GGMLQuantizationType, LlamaFileType  # pure-Python constants

    if isinstance(file_type, int) and not isinstance(file_type, bool):
        try:
            name = LlamaFileType(file_type).name
        except ValueError:
            name = ""
        if name and name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    if summary is None or not summary.tensors:
        return "unknown"
    weights: Counter[int] = Counter()
    for tensor in summary.tensors:
        if len(tensor.shape) >= 2:
            count = 1
            for d in tensor.shape:
                count *= d
            weights[tensor.type_id] += count
    if not weights:
        return "unknown"
    try:
        return GGMLQuantizationType(weights.most_common(1)[0][0]).name
    except ValueError:
        return "unknown"


def split_parts(path: Path) -> list[Path]:
    """All parts of a split GGUF named by its first part (`-00001-of-00003.gguf`), else [path].
    Parts that are not on disk are left out (llama.cpp then names the missing one)."""
    match = SPLIT_PART.search(path.name)
    if not match:
        return [path]
    total = int(match[2])
    stem = path.name[: match.start()]
    parts = [path.with_name(f"{stem}-{i:05d}-of-{total:05d}.gguf") for i in range(1, total + 1)]
    return [p for p in parts if p.exists()]


def read_facts(path: Path) -> ModelFacts:
    """The facts of the model whose (first) file is `path`; InvalidModelFileError when a part
    is not a well-formed GGUF."""
    summary = check_gguf(path)
    meta = summary.metadata
    parts = split_parts(path)
    params, size = summary.n_params, path.stat().st_size
    for part in parts[1:]:
        params += check_gguf(part).n_params
        size += part.stat().st_size
    arch = meta.get("general.architecture")
    name = meta.get("general.name") or meta.get("general.basename")
    return ModelFacts(
        path=path,
        architecture=arch if isinstance(arch, str) else "unknown",
        name=str(name) if isinstance(name, str) and name.strip() else _stem(path),
        quant=quant_name(meta.get("general.file_type"), summary),
        params=params,
        size_bytes=size,
        chat_template=isinstance(meta.get("tokenizer.chat_template"), str),
        license=str(meta.get("general.license") or "unknown (see the model card)"),
        n_parts=len(parts),
    )


def _stem(path: Path) -> str:
    name = path.name
    match = SPLIT_PART.search(name)
    return name[: match.start()] if match else Path(name).stem


def slug(text: str) -> str:
    """A catalog-style name: lowercase letters, digits, '.', '_' and '-'.

    >>> slug("SmolLM2 135M Instruct")
    'smollm2-135m-instruct'
    """
    return _SLUG.sub("-", text.lower()).strip("-._") or "model"


def variant_name(facts: ModelFacts) -> str:
    """`<model name>-<quant>` as a catalog name, the quant left out when the name has it."""
    base, quant = slug(facts.name), slug(facts.quant)
    return base if quant in base or quant == "unknown" else f"{base}-{quant}"
