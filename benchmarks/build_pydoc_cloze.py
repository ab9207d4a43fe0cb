"""Build benchmarks/tasks/data/pydoc_cloze.jsonl from the standard library's documentation topics.

    python benchmarks/build_pydoc_cloze.py > benchmarks/tasks/data/pydoc_cloze.jsonl

`pydoc_data.topics.topics` ships with every Python, but its text changes between Python
versions, so the items are built once and committed: a task's items must be the same on every
machine. Rebuilding with another Python gives other items; bump the task's `version` if you do.

Each item is a prose sentence from the docs with its last word blanked. The three distractors
read fluently after the last word but are wrong for the sentence as a whole:

- like the answer in length and corpus frequency (no win from word frequency alone);
- the pair (last word, distractor) occurs somewhere in the docs, but the triple (two last words,
  distractor) never does, so only a model that reads more than one word back can tell;
- the distractor never occurs in the sentence's topic, and never in any sentence together with
  the answer, so it is off the subject and does not fit.

Distractors that never follow the last word at all made the task too easy (SmolLM2-135M,
Gemma 3 270M and Qwen2.5-Coder-0.5B all scored 0.95 or more); with these rules they score
about 0.7 to 0.8. A hand check of the first 45 items found a few where a distractor is arguably
possible (e.g. "its scope includes that suite" for "block"), none where it is as good.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pydoc_data.topics import topics

COUNT = 160
MIN_WORDS, MAX_WORDS = 8, 28
_PROSE_WORD = re.compile(r"\b[a-z]+\b")  # all-lowercase words only: skips ValueError, setattr
_ANY_WORD = re.compile(r"[a-z]+")
_SENTENCE_END = re.compile(r"(?<=[a-z][.])\s+(?=[A-Z])")
_LAST = re.compile(r"^(.*[a-z,]) ([a-z]{4,12})\.$")
_STOP = {
    "that",
    "this",
    "with",
    "from",
    "have",
    "which",
    "there",
    "their",
    "these",
    "those",
    "then",
    "than",
    "when",
    "where",
    "what",
    "will",
    "would",
    "should",
    "could",
    "into",
    "also",
    "been",
    "were",
    "they",
    "them",
    "such",
    "only",
    "some",
    "each",
    "more",
    "most",
}


@dataclass
class Corpus:
    """Word statistics over all topics (counts over prose only)."""

    counts: Counter[str] = field(default_factory=Counter)
    vocab: dict[str, set[str]] = field(default_factory=dict)
    pairs: set[tuple[str, str]] = field(default_factory=set)
    triples: set[tuple[str, str, str]] = field(default_factory=set)
    sentences_with: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))


def prose_paragraphs(text: str) -> list[str]:
    """Paragraphs of running text: no code, grammar, headings, lists or tables."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if any(line.startswith((" ", "\t", "*", "=", "-", "+", ">")) for line in lines):
            continue
        if "::=" in block or "`" in block:
            continue
        out.append(" ".join(line.strip() for line in lines))
    return out


def candidates() -> list[tuple[str, str, str]]:
    """(topic, context, last word) for every usable sentence, in a fixed order."""
    found = []
    for topic in sorted(topics):
        for paragraph in prose_paragraphs(topics[topic]):
            for sentence in _SENTENCE_END.split(paragraph):
                match = _LAST.match(sentence)
                if not match or not sentence[0].isupper():
                    continue
                context, word = match.groups()
                if (
                    MIN_WORDS <= len(sentence.split()) <= MAX_WORDS
                    and word not in _STOP
                    and not re.search(r"\b(e\.g|i\.e|etc)\b", sentence)
                ):
                    found.append((topic, " ".join(context.split()), word))
    return found


def corpus_stats() -> Corpus:
    """Word counts, per-topic vocabularies, n-grams and sentence co-occurrence."""
    corpus = Corpus()
    sentence_id = 0
    for topic in sorted(topics):
        text = topics[topic]
        for paragraph in prose_paragraphs(text):
            corpus.counts.update(_PROSE_WORD.findall(paragraph))
            for sentence in _SENTENCE_END.split(paragraph):
                sentence_id += 1
                for word in set(_ANY_WORD.findall(sentence.lower())):
                    corpus.sentences_with[word].add(sentence_id)
        words = _ANY_WORD.findall(text.lower())
        corpus.vocab[topic] = set(words)
        corpus.pairs.update(zip(words, words[1:], strict=False))
        corpus.triples.update(zip(words, words[1:], words[2:], strict=False))
    return corpus


def distractors(
    topic: str, context: str, answer: str, pool: list[str], corpus: Corpus, rng: random.Random
) -> list[str] | None:
    """Three words that read well after the last word but do not fit the sentence."""
    *_, before, last = [w.lower().strip(",") for w in context.split()]
    with_answer = corpus.sentences_with[answer]
    for ratio in (2.0, 4.0, 8.0):
        fits = [
            w
            for w in pool
            if abs(len(w) - len(answer)) <= 2
            and w[:4] != answer[:4]
            and 1 / ratio <= corpus.counts[w] / corpus.counts[answer] <= ratio
            and (last, w) in corpus.pairs
            and (before, last, w) not in corpus.triples
            and w not in corpus.vocab[topic]
            and not corpus.sentences_with[w] & with_answer
        ]
        if len(fits) >= 3:
            return rng.sample(fits, 3)
    return None


def build(count: int = COUNT, seed: int = 0) -> list[dict[str, object]]:
    """`count` cloze items drawn reproducibly from this Python's documentation topics."""
    corpus = corpus_stats()
    pool = sorted(w for w, n in corpus.counts.items() if n >= 3 and len(w) >= 4 and w not in _STOP)
    rng = random.Random(f"pydoc-cloze:{seed}")
    found = candidates()
    rng.shuffle(found)
    items: list[dict[str, object]] = []
    seen: set[str] = set()
    for topic, context, answer in found:
        wrong = distractors(topic, context, answer, pool, corpus, rng)
        if wrong is None or context in seen:
            continue
        seen.add(context)
        items.append(
            {
                "id": f"pydoc-cloze-{len(items) + 1:04d}",
                "topic": topic,
                "question": context,
                "choices": [answer, *wrong],
                "answer": answer,
            }
        )
        if len(items) == count:
            break
    return items


def main() -> None:
    print(f"built with Python {sys.version.split()[0]}", file=sys.stderr)
    for item in build():
        print(json.dumps(item, ensure_ascii=False))


if __name__ == "__main__":
    main()
