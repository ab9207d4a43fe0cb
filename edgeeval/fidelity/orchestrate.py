"""Quant fidelity: how far a variant's next-token distributions drift from a reference's.

The method is llama-perplexity's (`--kl-divergence-base` / `--kl-divergence`), so the numbers
compare with the ones practitioners publish:
- The reference tokenizes the corpus once (adding BOS when the model adds one); the tokens are
  cut into chunks of n_ctx (512). Each chunk is decoded from an empty KV cache with its first
  token replaced by BOS (when the model adds BOS), and only its second half is scored: the
  logits at positions n_ctx/2 .. n_ctx-2 predict the tokens after them (255 per 512 chunk).
- The reference pass streams its log-probabilities to disk a chunk at a time, as
  llama-perplexity stores them (16-bit levels over the top 16 nats of each row with a float32
  scale and offset, 255 rows of n_vocab levels: 78 MB per chunk for a 152k vocabulary), and
  each variant pass reads them back a chunk at a time, so memory stays bounded. The variant's
  own float32 logits are compared with them, so a model compared with itself gives a KLD within
  about 1e-4 of 0 and a same-top-p just under 100 % where its top tokens nearly tie, as
  llama-perplexity does.
- Per scored token: KLD(ref || variant), -ln p of the actual token under both, p difference of
  the actual token, and whether the most likely tokens agree. Then mean KLD with its standard
  error, KLD percentiles, PPL of both, mean ln(PPL(Q)/PPL(ref)), Same-top-p, RMS of delta-p.
  These are pure functions in edgeeval.fidelity.kld; this module runs the passes and keeps the
  results.
Each model runs in its own child process (`python -m edgeeval.fidelity.child SPEC`) through
engine.process.run_child, as the bench does: a native crash or a hang is a recorded failure, and the
reference and the variant are never in memory together.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeeval import contracts as ct
from edgeeval import records as rec
from edgeeval import settings
from edgeeval.catalog.models import Catalog, Variant
from edgeeval.engine import host as hostinfo
from edgeeval.engine.backend import library_info
from edgeeval.engine.process import Event, run_child
from edgeeval.errors import EdgeevalError, FetchError, OfflineError
from edgeeval.fetch.files import ensure_free_space
from edgeeval.fidelity import MAX_CHUNKS, N_CTX
from edgeeval.fidelity import domains as dom
from edgeeval.fidelity.child import LABELS, META, SAMPLES
from edgeeval.fidelity.kld import TokenStats, ref_dtype, scored, summarize
from edgeeval.gguf.check import check_gguf
from edgeeval.quant.build import ensure_file, read_build_info
from edgeeval.store.fidelity import save_fidelity
from edgeeval.text import Progress

WIKITEXT = ("ggml-org/ci", "wikitext-2-raw-v1.zip", "wikitext-2-raw/wiki.test.raw")


# --- corpora ---


@dataclass(frozen=True)
class Corpus:
    """A corpus: plain `text`, or (per-domain) the `samples` of `domains`, rendered through
    the reference's chat template by the reference pass (`text` is then their JSON, hashed),
    and where each domain's samples came from (`sources`: domain, source in words)."""

    name: str
    text: str
    sha256: str
    domains: tuple[str, ...] = ()
    samples: tuple[dom.Sample, ...] = ()
    sources: tuple[tuple[str, str], ...] = ()


def load_corpus(spec: str) -> Corpus:
    """`pydoc` (the Python docs every install carries: offline), `domains[:a,b]` (per-domain
    conversations, rendered through the model's chat template: shipped, with chat and tool
    calls from Hub datasets when the Hub is reachable),
    `wikitext-2` (the test split llama.cpp's docs use, from the Hub) or the path of a UTF-8
    text file."""
    if spec == dom.PREFIX or spec.startswith(dom.PREFIX + ":"):
        return domain_corpus(dom.parse_spec(spec))
    if spec == "pydoc":
        from pydoc_data.topics import topics

        text = "\n\n".join(topics[key] for key in sorted(topics))
    elif spec in ("wikitext-2", "wikitext2"):
        spec, text = "wikitext-2", _wikitext2()
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise EdgeevalError(
                f"corpus '{spec}' is not 'pydoc', 'domains', 'wikitext-2' or a text file; "
                "pass --corpus pydoc to use the offline corpus"
            )
        text = path.read_text(encoding="utf-8", errors="replace")
    import hashlib

    return Corpus(spec, text, hashlib.sha256(text.encode("utf-8")).hexdigest())


def domain_corpus(
    domains: tuple[str, ...],
    path: Path | None = None,
    hub: tuple[dom.HubSource, ...] = dom.HUB_SOURCES,
    download: dom.Download | None = None,
) -> Corpus:
    """The per-domain corpus of `domains` (edgeeval.fidelity.domains): the shipped samples
    (`path`: another file of them), those of a domain with a `hub` source replaced by the
    Hub's when it can be reached (`download`: how its files arrive; `hub=()`: shipped only)."""
    import hashlib

    shipped = dom.load_samples(domains, path)
    chosen, sources = dom.with_hub(shipped, domains, hub, download)
    samples = tuple(chosen)
    text = json.dumps(
        [[s.domain, s.id, list(s.messages)] for s in samples], ensure_ascii=False, sort_keys=True
    )
    name = dom.PREFIX if domains == dom.DOMAINS else f"{dom.PREFIX}:{','.join(domains)}"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Corpus(
        name, text, digest, domains=domains, samples=samples, sources=tuple(sources.items())
    )


def _wikitext2() -> str:
    """wiki.test.raw from ggml-org/ci's wikitext-2-raw-v1.zip, cached in EDGEEVAL_HOME."""
    repo_id, zip_name, member = WIKITEXT
    folder = settings.home() / "corpora"
    cached = folder / Path(member).name
    if cached.exists():
        return cached.read_text(encoding="utf-8")
    if settings.offline():
        raise OfflineError(
            f"wikitext-2 is not cached ({cached}) and offline mode is on; use "
            "--corpus pydoc or fetch it once online",
            repo_id=repo_id,
        )
    import huggingface_hub

    try:
        zipped = huggingface_hub.hf_hub_download(
            repo_id,
            zip_name,
            repo_type="dataset",
            endpoint=settings.hf_endpoint(),
            token=settings.hf_token(),
            local_dir=folder,
            cache_dir=folder / ".hf-cache",
        )
        with zipfile.ZipFile(zipped) as zf:
            text = zf.read(member).decode("utf-8")
    except Exception as exc:  # network, Hub refusals, a broken zip: all mean "no corpus"
        raise FetchError(
            f"could not get wikitext-2 ({settings.hf_endpoint()}/datasets/"
            f"{repo_id}, {zip_name}): {exc}; retry, or use --corpus pydoc"
        ) from exc
    tmp = cached.with_name(cached.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, cached)
    Path(zipped).unlink(missing_ok=True)
    return text


# --- running the model passes ---


def run_fidelity(
    reference: Variant,
    variants: list[Variant],
    catalog: Catalog,
    *,
    corpus: Corpus,
    run_id: str,
    n_ctx: int = N_CTX,
    max_chunks: int = MAX_CHUNKS,
    n_threads: int = 0,
    n_gpu_layers: int = 0,
    timeout_s: float = 3600.0,
    progress: Progress = lambda m: None,
    points: Sequence[rec.RunSettings] = (),
) -> list[rec.FidelityResult]:
    """Measure each variant against `reference`; every result is saved as soon as it exists.

    `points` are the context knob points (run.speed.knob_points) each variant is measured at:
    its KV cache types, flash attention and windowing, one result per variant x point (none:
    the defaults, F16 KV, flash attention off, a full-size sliding-window cache). The
    reference pass always runs at those defaults, so a point's KLD is what its knobs add to the
    variant's own. A variant that fails is a result with status "error" and the reason; a
    reference that fails raises EdgeevalError (nothing can be compared without it).
    """
    ref_file = ensure_file(reference, catalog, progress=progress)
    common = _provenance(run_id, reference, ref_file.sha256, corpus, n_ctx)
    threads = rec.resolve_threads(n_threads, hostinfo.physical_cores())
    scratch = settings.home() / "tmp"
    cap = max_chunks * max(1, len(corpus.domains))  # a per-domain corpus: --chunks per domain
    ensure_free_space(scratch, _ref_bytes(ref_file.path, n_ctx, cap, len(corpus.text)))
    with tempfile.TemporaryDirectory(prefix="fidelity-", dir=scratch) as tmp:
        work = Path(tmp)
        if corpus.domains:
            samples = [{"domain": x.domain, "messages": list(x.messages)} for x in corpus.samples]
            payload = {"domains": list(corpus.domains), "samples": samples}
            (work / SAMPLES).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
        else:
            (work / "corpus.txt").write_text(corpus.text, encoding="utf-8")
        spec = ct.FidelitySpec(
            role="reference",
            model=str(ref_file.path),
            work=str(work),
            n_ctx=n_ctx,
            max_chunks=max_chunks,
            n_threads=threads,
            n_gpu_layers=n_gpu_layers,
        )
        progress(f"{reference.name}: reference pass on {corpus.name} (n_ctx {n_ctx})")
        ref_s, reason = _run_pass(spec, reference.name, timeout_s, progress)
        if ref_s is None:
            raise EdgeevalError(f"{reference.name}: the reference pass failed: {reason}")
        meta = ct.read_contract(ct.FidelityPassResult, work / META)
        common.update(n_chunks=meta.n_chunks, reference_elapsed_s=ref_s)
        split = _Split(corpus, work / LABELS) if corpus.domains else None
        results = []
        for variant in variants:
            for point in points or (rec.RunSettings(),):
                knobs = _knobs(point)
                result = _measure_one(
                    variant, catalog, spec, common, timeout_s, progress, split, knobs
                )
                save_fidelity(result)
                results.append(result)
    return results


def _knobs(point: rec.RunSettings) -> dict[str, Any]:
    """A knob point's settings as the FidelitySpec and FidelityResult fields name them."""
    return {
        "cache_type_k": point.cache_type_k,
        "cache_type_v": point.cache_type_v,
        "flash_attn": point.flash_attn,
        "swa_full": point.swa_full,
    }


def _provenance(
    run_id: str, reference: Variant, reference_sha256: str, corpus: Corpus, n_ctx: int
) -> dict[str, Any]:
    """The fields every result of one fidelity run shares: what, on which text, where."""
    library = library_info()
    return {
        "run_id": run_id,
        "reference": reference.name,
        "corpus": corpus.name,
        "corpus_sha256": corpus.sha256,
        "n_ctx": n_ctx,
        "reference_sha256": reference_sha256,
        "host_id": hostinfo.collect(library, bandwidth=False).host_id,
        "llama_cpp_python_version": library.llama_cpp_python_version,
    }


def _ref_bytes(path: Path, n_ctx: int, max_chunks: int, n_chars: int) -> int:
    """Disk the reference rows take (chunks estimated at ~3 characters a token)."""
    n_vocab = check_gguf(path).metadata.get("tokenizer.ggml.tokens", 0)
    n_vocab = n_vocab if isinstance(n_vocab, int) else len(n_vocab)  # type: ignore[arg-type]
    chunks = n_chars // (3 * n_ctx)
    chunks = min(chunks, max_chunks) if max_chunks > 0 else chunks
    return chunks * scored(n_ctx)[1] * ref_dtype(n_vocab).itemsize


class _Split:
    """How a per-domain run's chunks split into domains (the reference pass's LABELS file)."""

    def __init__(self, corpus: Corpus, labels_path: Path) -> None:
        raw = json.loads(labels_path.read_text(encoding="utf-8"))
        self.domains, self.labels, self.notes = corpus.domains, list(raw["labels"]), raw["notes"]
        self.sources = dict(corpus.sources)

    def __call__(self, stats: TokenStats) -> tuple[rec.DomainFidelity, ...]:
        return dom.by_domain(stats, self.labels, self.domains, self.notes, self.sources)


def _measure_one(
    variant: Variant,
    catalog: Catalog,
    reference_spec: ct.FidelitySpec,
    common: dict[str, Any],
    timeout_s: float,
    progress: Progress,
    split: _Split | None = None,
    knobs: dict[str, Any] | None = None,
) -> rec.FidelityResult:
    started = time.strftime(settings.ISO_TIME)
    knobs = knobs or {}
    try:
        file = ensure_file(variant, catalog, progress=progress)
    except (EdgeevalError, OSError) as exc:
        return rec.FidelityResult(
            **common,
            **knobs,
            variant=variant.name,
            status=rec.STATUS_SKIPPED,
            started_at=started,
            error=str(exc),
        )
    base = {
        **common,
        **knobs,
        "variant": variant.name,
        "variant_sha256": file.sha256,
        "started_at": started,
        "notes": _notes(file.path),
    }
    name = rec.FidelityResult(**base, status=rec.STATUS_OK).point_name
    out = Path(reference_spec.work) / f"stats-{variant.name}.npz"  # read and removed below
    progress(f"{name}: comparing with {common['reference']}")
    spec = replace(reference_spec, role="variant", model=str(file.path), out=str(out), **knobs)
    elapsed, error = _run_pass(spec, name, timeout_s, progress)
    if elapsed is None:
        return rec.FidelityResult(**base, status=rec.STATUS_ERROR, error=error)
    with np.load(out) as data:
        stats = TokenStats(**{k: data[k] for k in data.files})
    out.unlink()
    per_domain = split(stats) if split else ()
    return rec.FidelityResult(
        **base,
        status=rec.STATUS_OK,
        elapsed_s=elapsed,
        domains=per_domain,
        **summarize(stats),  # type: ignore[arg-type]
    )


def _notes(path: Path) -> str:
    info = read_build_info(path)
    if info is None or not info.requantized:
        return ""
    return f"requantized from {info.base_quant} ({info.base}): quality capped by the source"


def _run_pass(
    spec: ct.FidelitySpec, name: str, timeout_s: float, progress: Progress
) -> tuple[float | None, str]:
    """Run one model pass in a child; (seconds, "") on success, (None, reason) on failure."""
    spec_path = Path(spec.work) / f"spec-{spec.role}.json"
    ct.write_contract(spec_path, spec)
    outcome = run_child(
        [sys.executable, "-m", "edgeeval.fidelity.child", str(spec_path)],
        timeout_s=timeout_s,
        interval_s=0.2,
        on_event=lambda e: _chunk_progress(name, e, progress),
    )
    if outcome.timed_out:
        return None, f"killed after the {timeout_s:.0f} s timeout"
    if outcome.signal is not None or outcome.returncode != 0:
        last = (outcome.stderr_tail.strip().splitlines() or ["no output"])[-1]
        how = f"signal {outcome.signal}" if outcome.signal else f"exit code {outcome.returncode}"
        return None, f"child failed ({how}): {last}"
    return outcome.duration_s, ""


def _chunk_progress(name: str, event: Event, progress: Progress) -> None:
    index, total = event.index, event.total
    if event.kind == "chunk" and (index in (1, total) or index % 10 == 0):
        progress(f"{name}: chunk {index}/{total}")


# --- storing and showing results ---


# --- command line ---


def pick_reference(variants: list[Variant], ref: str | None, catalog: Catalog) -> Variant:
    """`ref` if given, else the highest-precision float variant among `variants`."""
    if ref:
        return catalog.get(ref)
    for quant in ("F32", "BF16", "F16"):
        for variant in variants:
            if variant.quant.upper() == quant:
                return variant
    raise EdgeevalError(
        "no F32/BF16/F16 variant among those named; pass --ref NAME (the "
        "highest-precision variant of the same model)"
    )
