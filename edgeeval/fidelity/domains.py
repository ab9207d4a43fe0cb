"""The per-domain fidelity corpus (`--corpus domains`): what users send, by domain.

The samples are whole conversations (benchmarks/tasks/data/fidelity_domains.jsonl, built by
benchmarks/build_fidelity_domains.py from the Python docs and from texts written for
edgeeval). The reference pass renders each one through the model's own chat template (in the
template sandbox, no generation prompt: the assistant's turns are part of the text), tokenizes
it with the template's control tokens as tokens, and concatenates a domain's samples into its
own run of chunks. Chunks never mix domains, so every scored token belongs to one domain and a
domain's statistics are those of its chunks; the overall ones are over all chunks, i.e. the
token-weighted combination of the domains'.

Pure functions here (choosing domains, splitting per-token statistics by domain); the passes
are edgeeval.fidelity.child and edgeeval.fidelity.orchestrate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.errors import EdgeevalError
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
) -> tuple[rec.DomainFidelity, ...]:
    """Per-domain statistics: each domain's scored tokens summarised as a whole corpus is.
    `labels` is the domain of each chunk, in the order the variant pass wrote its statistics
    (the same number of scored tokens per chunk). A domain without a scored token is
    "missing" with its note (metrics None, not 0)."""
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
                rec.DomainFidelity(domain, "missing", note=notes.get(domain, "no scored token"))
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
            )
        )
    return tuple(out)
