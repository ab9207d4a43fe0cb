"""Build benchmarks/data/pydoc_cloze.jsonl from the standard library's documentation topics.

    python benchmarks/build_pydoc_cloze.py > benchmarks/data/pydoc_cloze.jsonl

`pydoc_data.topics.topics` ships with every Python, but its text changes between Python
versions, so the items are built once and committed: a task's items must be the same on every
machine. Rebuilding with another Python gives other items; bump the task's `version` if you do.

Each item is a prose sentence from the docs with its last word blanked. The three distractors
are words from the same corpus of similar length and frequency (so a model cannot win on
word frequency alone) that never end a sentence or clause anywhere in the docs, never follow
the sentence's second-to-last word anywhere in them, are not in the sentence, and do not share
a stem with the answer; so none of them fits.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pydoc_data.topics import topics

COUNT = 160
MIN_WORDS, MAX_WORDS = 8, 28
_WORD = re.compile(r"\b[a-z]+\b")  # all-lowercase words only: skips ValueError, setattr
_SENTENCE_END = re.compile(r"(?<=[a-z][.])\s+(?=[A-Z])")
_LAST = re.compile(r"^(.*[a-z,]) ([a-z]{4,12})\.$")
_STOP = {"that", "this", "with", "from", "have", "which", "there", "their", "these", "those",
         "then", "than", "when", "where", "what", "will", "would", "should", "could", "into",
         "also", "been", "were", "they", "them", "such", "only", "some", "each", "more", "most"}


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
                context = " ".join(context.split())
                if MIN_WORDS <= len(sentence.split()) <= MAX_WORDS and word not in _STOP \
                        and not re.search(r"\b(e\.g|i\.e|etc)\b", sentence):
                    found.append((topic, context, word))
    return found


@dataclass
class Corpus:
    """Counts of prose words, words that end a prose sentence, each topic's words, and every
    adjacent pair of words anywhere in the topics."""

    counts: Counter[str] = field(default_factory=Counter)
    enders: set[str] = field(default_factory=set)
    vocab: dict[str, set[str]] = field(default_factory=dict)
    pairs: set[tuple[str, str]] = field(default_factory=set)


def corpus_stats() -> Corpus:
    corpus = Corpus()
    for topic, text in topics.items():
        for paragraph in prose_paragraphs(text):
            corpus.counts.update(_WORD.findall(paragraph))
            corpus.enders.update(re.findall(r"\b([a-z]+)\.(?:\s|$)", paragraph))
        words = re.findall(r"[a-z]+", text.lower())
        corpus.vocab[topic] = set(words)
        corpus.pairs.update(zip(words, words[1:], strict=False))
    return corpus


def distractors(topic: str, context: str, answer: str, pool: list[str], corpus: Corpus,
                rng: random.Random) -> list[str] | None:
    """Three words like `answer` in length and frequency that do not fit this sentence."""
    previous = context.split()[-1].lower().strip(",")
    counts = corpus.counts
    for ratio in (2.0, 4.0, 8.0):
        fits = [w for w in pool
                if abs(len(w) - len(answer)) <= 2 and w[:4] != answer[:4]
                and 1 / ratio <= counts[w] / counts[answer] <= ratio
                and w not in corpus.vocab[topic] and (previous, w) not in corpus.pairs]
        if len(fits) >= 3:
            return rng.sample(fits, 3)
    return None


def build(count: int = COUNT, seed: int = 0) -> list[dict[str, object]]:
    """`count` cloze items drawn reproducibly from this Python's documentation topics."""
    corpus = corpus_stats()
    # Words that end some sentence in the docs, so a distractor is not ruled out by grammar
    # alone; it is ruled out by not occurring anywhere in this sentence's topic.
    pool = sorted(w for w, n in corpus.counts.items()
                  if n >= 3 and len(w) >= 4 and w not in _STOP and w in corpus.enders)
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
        items.append({"id": f"pydoc-cloze-{len(items) + 1:04d}", "topic": topic,
                      "question": context, "choices": [answer, *wrong], "answer": answer})
        if len(items) == count:
            break
    return items


def main() -> None:
    print(f"# {sys.version.split()[0]}", file=sys.stderr)
    for item in build():
        print(json.dumps(item, ensure_ascii=False))


if __name__ == "__main__":
    main()
