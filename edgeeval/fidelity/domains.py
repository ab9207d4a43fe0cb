"""The per-domain fidelity corpus (`--corpus domains`): what users send, by domain.

The samples are whole conversations (benchmarks/tasks/data/fidelity_domains.jsonl, built by
benchmarks/build_fidelity_domains.py from the Python docs and from texts written for
edgeeval). The reference pass renders each one through the model's own chat template (in the
template sandbox, no generation prompt: the assistant's turns are part of the text), tokenizes
it with the template's control tokens as tokens, and concatenates a domain's samples into its
own run of chunks. Chunks never mix domains, so every scored token belongs to one domain and a
domain's statistics are those of its chunks; the overall ones are over all chunks, i.e. the
token-weighted combination of the domains'.

Chat and tool calls come from Hub datasets when the Hub is reachable (HUB_SOURCES: the first
rows of UltraChat 200k's test split and of Hermes function-calling v1's single-turn file, read
through huggingface_hub into EDGEEVAL_HOME/datasets as task datasets are): `with_hub` puts
them in place of the shipped samples of their domain. When the Hub cannot be reached (offline
mode with nothing cached, no network, a file gone), that domain keeps its shipped samples and
its source says why; every domain's source is stored with its figures and shown in the report.

Pure functions here (choosing domains, splitting per-token statistics by domain) and the Hub
samples' loader; the passes are edgeeval.fidelity.child and edgeeval.fidelity.orchestrate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.errors import EdgeevalError, OfflineError
from edgeeval.fidelity.kld import TokenStats, summarize

#: The domains of the shipped corpus, in report order.
DOMAINS = ("code", "chat", "tool_calls", "non_latin", "long_doc")
CORPUS_FILE = Path("data", "fidelity_domains.jsonl")  # under benchmarks/tasks
PREFIX = "domains"  # `--corpus domains` or `--corpus domains:code,chat`


@dataclass(frozen=True)
class Sample:
    domain: str
    id: str
    source: str
    messages: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class HubSource:
    """A Hub dataset file that gives one domain its samples: the first `take` usable rows of
    `filename` (Parquet, JSON Lines, or a JSON list) in dataset `repo_id` at `revision`.
    `format` says how a row holds its conversation: "messages" (a `messages` list of
    role/content, as UltraChat) or "sharegpt" (a `conversations` list of from/value, as
    Hermes function calling: system, human, gpt, tool)."""

    domain: str
    repo_id: str
    filename: str
    revision: str
    format: str
    licence: str
    take: int = 16

    @property
    def label(self) -> str:
        return f"Hub dataset {self.repo_id}, {self.filename} ({self.licence})"


#: The Hub's chat and tool-call samples, used when the Hub is reachable. The revisions are
#: pinned where known; file names as published (not downloaded here: no Hub was reachable).
HUB_SOURCES = (
    HubSource(
        "chat",
        "HuggingFaceH4/ultrachat_200k",
        "data/test_sft-00000-of-00001-f7dfac4afe5b93f4.parquet",
        "8049631c405ae6576f93f445c6b8166f76f5505a",
        "messages",
        "MIT",
    ),
    HubSource(
        "tool_calls",
        "NousResearch/hermes-function-calling-v1",
        "func-calling-singleturn.json",
        "main",
        "sharegpt",
        "Apache-2.0",
    ),
)
_SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant", "tool": "tool"}

#: How a Hub source's file reaches this machine: tasks.datasets.download (a test's fake Hub)
Download = Callable[[HubSource], Path]


def corpus_path() -> Path:
    return settings.package_root() / settings.TASKS_SUBDIR / CORPUS_FILE


def parse_spec(spec: str) -> tuple[str, ...]:
    """The domains `--corpus domains[:a,b]` asks for (all of them without a list); an unknown
    name raises EdgeevalError listing the known ones."""
    _, _, names = spec.partition(":")
    chosen = tuple(n.strip() for n in names.split(",") if n.strip()) if names else DOMAINS
    unknown = [n for n in chosen if n not in DOMAINS]
    if unknown:
        raise EdgeevalError(
            f"--corpus {spec}: unknown domain {', '.join(map(repr, unknown))}; known "
            f"domains: {', '.join(DOMAINS)} (e.g. --corpus domains:code,chat)"
        )
    return tuple(dict.fromkeys(chosen))


def load_samples(domains: tuple[str, ...], path: Path | None = None) -> list[Sample]:
    """The shipped samples of `domains`, in the file's order."""
    path = path or corpus_path()
    if not path.is_file():
        raise EdgeevalError(
            f"the per-domain corpus {path} is missing; run from the repository root or set "
            "EDGEEVAL_ROOT (rebuild it with benchmarks/build_fidelity_domains.py)"
        )
    samples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            sample = Sample(
                raw["domain"], raw["id"], raw["source"], tuple(dict(m) for m in raw["messages"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise EdgeevalError(f"{path}, line {number}: not a corpus sample ({exc})") from exc
        if sample.domain in domains:
            samples.append(sample)
    return samples


def by_domain(
    stats: TokenStats,
    labels: list[str],
    domains: tuple[str, ...],
    notes: dict[str, str],
    sources: dict[str, str] | None = None,
) -> tuple[rec.DomainFidelity, ...]:
    """Per-domain statistics: each domain's scored tokens summarised as a whole corpus is.
    `labels` is the domain of each chunk, in the order the variant pass wrote its statistics
    (the same number of scored tokens per chunk). A domain without a scored token is
    "missing" with its note (metrics None, not 0). `sources`: where each domain's samples
    came from (with_hub), kept on its figures."""
    sources = sources or {}
    if labels and len(stats.kld) % len(labels):
        raise ValueError(f"{len(stats.kld)} scored tokens do not split into {len(labels)} chunks")
    per_chunk = len(stats.kld) // len(labels) if labels else 0
    token_domains = np.repeat(np.asarray(labels, dtype=object), per_chunk)
    out = []
    for domain in domains:
        mask = token_domains == domain
        n = int(mask.sum())
        if n == 0:
            out.append(
                rec.DomainFidelity(
                    domain,
                    "missing",
                    note=notes.get(domain, "no scored token"),
                    source=sources.get(domain, ""),
                )
            )
            continue
        part = TokenStats(*(getattr(stats, f)[mask] for f in TokenStats.__dataclass_fields__))
        s = summarize(part)
        out.append(
            rec.DomainFidelity(
                domain,
                rec.STATUS_OK,
                n_tokens=n,
                n_chunks=labels.count(domain),
                ppl=s["ppl"],
                ppl_ref=s["ppl_ref"],
                ln_ppl_ratio=s["ln_ppl_ratio"],
                ln_ppl_ratio_se=s["ln_ppl_ratio_se"],
                kld_mean=s["kld_mean"],
                kld_se=s["kld_se"],
                kld_p99=s["kld_p99"],
                same_top_pct=s["same_top_pct"],
                same_top_se_pct=s["same_top_se_pct"],
                rms_dp_pct=s["rms_dp_pct"],
                source=sources.get(domain, ""),
            )
        )
    return tuple(out)


# --- samples from the Hub ---


def with_hub(
    samples: list[Sample],
    domains: tuple[str, ...],
    sources: Iterable[HubSource] = HUB_SOURCES,
    download: Download | None = None,
) -> tuple[list[Sample], dict[str, str]]:
    """`samples` with each chosen domain that has a Hub source taking that source's samples
    instead of the shipped ones, when it can be read; and each domain's source, in words (for
    a domain left with its shipped samples, why the Hub's were not used)."""
    download = download or _download
    where = {
        d: "; ".join(dict.fromkeys(s.source for s in samples if s.domain == d)) for d in domains
    }
    for source in sources:
        if source.domain not in domains:
            continue
        try:
            hub = hub_samples(source, download(source))
        except (EdgeevalError, OSError, ValueError) as exc:
            reason = "not reachable" if isinstance(exc, OfflineError) else "not usable"
            where[source.domain] = (
                f"shipped: {where[source.domain]} ({source.label} {reason}: "
                f"{str(exc).splitlines()[0][:300]})"
            )
            continue
        samples = [s for s in samples if s.domain != source.domain] + hub
        where[source.domain] = hub[0].source
    order = {d: i for i, d in enumerate(DOMAINS)}
    samples.sort(key=lambda s: order[s.domain])  # stable: each domain's own order kept
    return samples, where


def _download(source: HubSource) -> Path:
    from edgeeval.tasks.datasets import download

    return download(
        source.repo_id, source.filename, revision=source.revision, origin="--corpus domains"
    )


def hub_samples(source: HubSource, path: Path) -> list[Sample]:
    """The first `source.take` rows of the downloaded file `path` that hold a conversation
    (at least one user and one assistant turn, every turn a string), as samples. Raises
    ValueError when none does (a file of another shape)."""
    revision = _snapshot(path) or source.revision
    label = f"{source.label}, revision {revision[:12]}"
    out = []
    for index, row in enumerate(_rows(path)):
        messages = _conversation(row, source.format)
        if messages:
            out.append(Sample(source.domain, f"hub-{source.domain}-{index}", label, messages))
            if len(out) == source.take:
                break
    if not out:
        raise ValueError(
            f"{path}: no row holds a conversation in the {source.format!r} format "
            "(a list of user and assistant turns)"
        )
    return out


def _snapshot(path: Path) -> str:
    """The commit a huggingface_hub cache path was downloaded at (…/snapshots/<commit>/…)."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else ""


def _rows(path: Path) -> Iterable[Any]:
    """The rows of a Parquet file (the first batches only: the file can hold thousands), a
    JSON list or a JSON Lines file."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq  # what tasks.datasets reads Hub files with

        for batch in pq.ParquetFile(path).iter_batches(batch_size=64):
            yield from batch.to_pylist()
        return
    text = path.read_text(encoding="utf-8")
    if path.name.endswith(".json"):
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"{path}: a JSON list of rows was expected")
        yield from data
        return
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


def _conversation(row: Any, fmt: str) -> tuple[dict[str, str], ...]:
    """A row's turns as role/content messages; () when it holds no usable conversation."""
    if not isinstance(row, dict):
        return ()
    if fmt == "messages":
        turns = [
            (m.get("role"), m.get("content"))
            for m in row.get("messages") or ()
            if isinstance(m, dict)
        ]
    elif fmt == "sharegpt":
        turns = [
            (_SHAREGPT_ROLES.get(str(m.get("from"))), m.get("value"))
            for m in row.get("conversations") or ()
            if isinstance(m, dict)
        ]
    else:
        raise ValueError(f"unknown Hub sample format {fmt!r}; known: messages, sharegpt")
    if not turns or any(not isinstance(r, str) or not isinstance(c, str) for r, c in turns):
        return ()
    roles = {r for r, _ in turns}
    if not {"user", "assistant"} <= roles:
        return ()
    return tuple({"role": str(r), "content": str(c)} for r, c in turns)
