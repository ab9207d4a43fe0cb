"""The child process of a fidelity run: `python -m edgeeval.fidelity.child SPEC.json`
(SPEC.json is an edgeeval.contracts.FidelitySpec).

The reference pass tokenizes the corpus, cuts it into n_ctx chunks and streams the reference
log-probabilities of every scored position to disk as llama-perplexity stores them (16-bit
levels with a scale and offset per row: edgeeval.fidelity.kld.reference_rows), chunk by chunk.
The variant pass reads them back one chunk at a time and keeps only per-token statistics, so
memory stays bounded for 150k-token vocabularies. Turning a chunk's logits into reference rows
or statistics runs in blocks of rows on n_threads threads, between decodes. Each pass runs in its
own process (started by edgeeval.fidelity.orchestrate) so a native crash becomes a recorded
failure and the two models are never in memory together.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from edgeeval import contracts as ct
from edgeeval.engine.backend import LlamaBackend, LoadOptions
from edgeeval.engine.process import emit
from edgeeval.errors import ChatTemplateError
from edgeeval.fidelity.kld import (
    TokenStats,
    make_chunks,
    ref_dtype,
    reference_rows,
    scored,
    token_stats,
)
from edgeeval.gguf.check import check_gguf
from edgeeval.sandbox.template import ChatTemplate, render_chats

_ROWS = 32  # rows per block when turning logits into statistics (bounds the temporaries)
META = "meta.json"  # the reference pass's FidelityPassResult, in the work folder
REF_ROWS = "ref_rows.bin"  # the reference rows (kld.ref_dtype), chunk after chunk
SAMPLES = "corpus.json"  # a per-domain corpus: {"domains": [...], "samples": [...]}
LABELS = "domains.json"  # what the reference pass made of it: each chunk's domain, notes
T = TypeVar("T")


def _load(spec: ct.FidelitySpec) -> LlamaBackend:
    """The model of this pass, one chunk per decode (n_batch = n_ctx, micro-batches of 512),
    with the pass's KV cache types, flash attention and windowing."""
    check_gguf(spec.model)  # refuse malformed files before native code parses them
    options = LoadOptions(
        n_ctx=spec.n_ctx,
        n_threads=spec.n_threads,
        n_batch=spec.n_ctx,
        n_ubatch=512,  # LoadOptions keeps it within n_batch
        n_gpu_layers=spec.n_gpu_layers,
        flash_attn=spec.flash_attn,
        type_k=spec.cache_type_k,
        type_v=spec.cache_type_v,
        swa_full=spec.swa_full,
    )
    return LlamaBackend(spec.model, options)


def _chunk_logits(backend: LlamaBackend, chunk: np.ndarray, first: int) -> np.ndarray:
    """float32 logits of a chunk's scored positions (BOS put first if the model adds one; the
    chunk's last token is only a target, so it is not decoded)."""
    tokens = [int(t) for t in chunk[:-1]]
    if backend.add_bos:
        tokens[0] = backend.bos
    return backend.logits_for(tokens, first=first)


def _by_blocks(pool: ThreadPoolExecutor, work: Callable[..., T], *arrays: np.ndarray) -> list[T]:
    """work(*blocks) for every block of _ROWS rows of the arrays, in order, on the pool's
    threads (numpy lets go of the GIL in these array operations, so blocks run in parallel)."""
    blocks = [slice(i, i + _ROWS) for i in range(0, len(arrays[0]), _ROWS)]
    return list(pool.map(lambda rows: work(*(a[rows] for a in arrays)), blocks))


def _compare(ref: np.ndarray, logits: np.ndarray, targets: np.ndarray) -> TokenStats:
    """The variant's logits against the reference's stored rows."""
    return token_stats(np.asarray(ref), logits, targets)


def reference_pass(spec: ct.FidelitySpec) -> None:
    """Tokenize the corpus, then write tokens, meta and the reference log-probabilities."""
    work, n_ctx = Path(spec.work), spec.n_ctx
    backend = _load(spec)
    if (work / SAMPLES).exists():
        chunks, n_tokens = _domain_chunks(backend, spec)
    else:
        tokens = backend.tokenize((work / "corpus.txt").read_text(encoding="utf-8"), add_bos=True)
        chunks, n_tokens = make_chunks(tokens, n_ctx, spec.max_chunks), len(tokens)
    if len(chunks) == 0:
        why = ""
        if (work / LABELS).exists():
            notes = json.loads((work / LABELS).read_text(encoding="utf-8"))["notes"]
            why = " (" + "; ".join(f"{d}: {n}" for d, n in notes.items()) + ")"
        raise ValueError(
            f"the corpus has {n_tokens} tokens, fewer than one chunk of "
            f"{n_ctx}{why}; use a longer corpus or a smaller --n-ctx"
        )
    np.save(work / "tokens.npy", chunks)
    first, _ = scored(n_ctx)
    with (
        open(work / REF_ROWS, "wb") as fh,
        ThreadPoolExecutor(max(1, spec.n_threads)) as pool,
    ):
        for index, chunk in enumerate(chunks, 1):
            for block in _by_blocks(pool, reference_rows, _chunk_logits(backend, chunk, first)):
                fh.write(block.tobytes())
            emit("chunk", index=index, total=len(chunks))
    meta = ct.FidelityPassResult(
        n_vocab=backend.n_vocab, n_chunks=len(chunks), n_corpus_tokens=n_tokens
    )
    ct.write_contract(work / META, meta)
    backend.close()


def _domain_chunks(backend: LlamaBackend, spec: ct.FidelitySpec) -> tuple[np.ndarray, int]:
    """Render every sample of a per-domain corpus through the model's chat template, tokenize
    it with its control tokens, and cut each domain's tokens into its own chunks (at most
    max_chunks per domain). Writes LABELS: each chunk's domain, and why a domain has none."""
    work, n_ctx = Path(spec.work), spec.n_ctx
    corpus = json.loads((work / SAMPLES).read_text(encoding="utf-8"))
    source = backend.chat_template()
    if not source:
        raise ValueError(
            f"{Path(spec.model).name} has no chat template (tokenizer.chat_template); the "
            "per-domain corpus is rendered through it: use --corpus pydoc, or a reference "
            "whose GGUF carries a template"
        )
    template = ChatTemplate(source, **backend.special_token_texts())
    parts, labels, notes, total = [], [], {}, 0
    for domain in corpus["domains"]:
        conversations = [s["messages"] for s in corpus["samples"] if s["domain"] == domain]
        if not conversations:
            notes[domain] = "no sample of this domain in the corpus"
            continue
        try:
            texts = render_chats(template, conversations, add_generation_prompt=False)
        except ChatTemplateError as exc:
            notes[domain] = f"the chat template refused its samples ({exc.reason}: {exc})"
            continue
        tokens = [t for text in texts for t in backend.prompt_tokens(text, special=True)]
        total += len(tokens)
        chunks = make_chunks(tokens, n_ctx, spec.max_chunks)
        if len(chunks) == 0:
            notes[domain] = f"{len(tokens)} tokens, fewer than one chunk of {n_ctx}"
            continue
        parts.append(chunks)
        labels += [domain] * len(chunks)
    (work / LABELS).write_text(json.dumps({"labels": labels, "notes": notes}), encoding="utf-8")
    empty = np.zeros((0, n_ctx), np.int32)
    return (np.concatenate(parts) if parts else empty), total


def variant_pass(spec: ct.FidelitySpec) -> None:
    """Score the variant on the reference's chunks, one chunk of reference data at a time."""
    work, n_ctx = Path(spec.work), spec.n_ctx
    meta = ct.read_contract(ct.FidelityPassResult, work / META)
    backend = _load(spec)
    if backend.n_vocab != meta.n_vocab:
        raise ValueError(
            f"vocabulary of {backend.n_vocab} tokens, the reference has "
            f"{meta.n_vocab}: fidelity needs the same model's tokenizer"
        )
    chunks = np.load(work / "tokens.npy")
    first, count = scored(n_ctx)
    ref = np.memmap(
        work / REF_ROWS, dtype=ref_dtype(meta.n_vocab), mode="r", shape=(len(chunks), count)
    )
    parts: list[TokenStats] = []
    with ThreadPoolExecutor(max(1, spec.n_threads)) as pool:
        for index, chunk in enumerate(chunks):
            logits, targets = _chunk_logits(backend, chunk, first), chunk[first + 1 :]
            parts.extend(_by_blocks(pool, _compare, ref[index], logits, targets))
            emit("chunk", index=index + 1, total=len(chunks))
    stats = TokenStats.concat(parts)
    np.savez(
        spec.out,
        **{k: getattr(stats, k) for k in ("nll", "nll_ref", "kld", "p_diff", "same_top")},
    )
    backend.close()


def _child(spec_path: str) -> int:
    """Run the pass SPEC asks for; 0 on success, 1 with the reason on stderr."""
    try:
        spec = ct.read_contract(ct.FidelitySpec, spec_path)
        (reference_pass if spec.role == "reference" else variant_pass)(spec)
    except Exception as exc:  # the parent records this line as the failure reason
        print(f"edgeeval fidelity: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(*sys.argv[1:]))
