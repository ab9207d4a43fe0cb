"""Answers out of generated text: `<think>` removal and the three extractors.

Pure functions of the text, so a stored output can be re-scored without the model. Extractors:
- "number": GSM8K style. The number after the last `####`, else inside the last `\\boxed{}`,
  else after the last "answer is" / "answer:", else the last number in the text. Commas,
  dollar signs and a trailing period are dropped; "1,234.50" and "1234.5" are the same answer.
- "letter": a multiple-choice letter A-D: the letter after the last "answer", else the first
  "(B)", else a letter alone at the start of a line ("B", "C. Paris", "D)"). A lowercase
  letter counts only where it cannot be the article "a" ("Answer: c", "answer is (b)").
- "exact": the first line of the reply (an "Answer:" prefix dropped), compared after
  normalizing case, spaces, quotes and a trailing period.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from edgeeval.errors import UnknownNameError, suggest
from edgeeval.tasks.schema import EXTRACTORS  # the names a task file may give

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

_NUMBER = re.compile(r"(?<![\w.])-?\$?-?\d(?:[\d,]*\d)?(?:\.\d+)?")
_HASHES = re.compile(r"####")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)", re.IGNORECASE)
_LETTER_AFTER_ANSWER = re.compile(
    r"(?i:answer)\W{0,3}(?:is\W{0,3})?(?i:option\s+|choice\s+)?\(?"
    r"(?:([A-D])(?![A-Za-z])|([a-d])(?=\)|[.,;:!]|\s*$))"
)
_LETTER_IN_PARENS = re.compile(r"\(([A-Da-d])\)")
_LETTER_AT_START = re.compile(r"^\W{0,3}([A-D])(?=[).:]|\s*$)", re.MULTILINE)
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is\b)?\s*:?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Extraction:
    """What one output scored: the visible reply, the extracted answer ("" when none was
    found), whether it matches the gold answer, and the length of the removed thinking."""

    visible: str
    extracted: str
    correct: bool
    thinking_chars: int


def strip_thinking(text: str) -> tuple[str, int]:
    """The reply without `<think>...</think>` blocks, and how many characters they held.
    gpt-oss's channels (harmony) are handled by `final_channel`.

    Handles an output that starts inside a block whose `<think>` was in the prompt (text up to
    the first `</think>`), closed blocks anywhere, and an unterminated block (the rest of the
    text is thinking; the reply is what came before it).

    >>> strip_thinking("<think>5 apples</think> The answer is 6")
    ('The answer is 6', 8)
    >>> strip_thinking("<think>still thinking")
    ('', 14)
    """
    if CHANNEL in text or (text.startswith(_BARE_ANALYSIS) and _BARE_FINAL in text):
        return final_channel(text)
    thinking = 0
    close, start = text.find(THINK_CLOSE), text.find(THINK_OPEN)
    if close != -1 and (start == -1 or close < start):
        thinking += close
        text = text[close + len(THINK_CLOSE) :]
    parts = []
    while (start := text.find(THINK_OPEN)) != -1:
        parts.append(text[:start])
        end = text.find(THINK_CLOSE, start)
        if end == -1:
            thinking += len(text) - start - len(THINK_OPEN)
            text = ""
            break
        thinking += end - start - len(THINK_OPEN)
        text = text[end + len(THINK_CLOSE) :]
    parts.append(text)
    return "".join(parts).strip(), thinking


CHANNEL, MESSAGE = "<|channel|>", "<|message|>"
_CHANNEL_ENDS = ("<|end|>", "<|return|>", "<|call|>", "<|start|>")
# The same reply where the control tokens were printed as nothing: "analysis...assistantfinal..."
_BARE_ANALYSIS = "analysis"
_BARE_FINAL = "assistantfinal"


def final_channel(text: str) -> tuple[str, int]:
    """gpt-oss (OpenAI harmony format): the text of the `final` channel, and how many characters
    the other channels (analysis, commentary) held. No final channel: ("", all of it).

    >>> final_channel("<|channel|>analysis<|message|>2+2=4<|end|><|start|>assistant"
    ...               "<|channel|>final<|message|>4")
    ('4', 5)
    >>> final_channel("analysisThink 2+2.assistantfinal4")
    ('4', 10)
    """
    if CHANNEL not in text:  # control tokens rendered as empty text
        head, _, final = text.partition(_BARE_FINAL)
        return final.strip(), max(0, len(head) - len(_BARE_ANALYSIS))
    finals: list[str] = []
    other = 0
    for part in text.split(CHANNEL)[1:]:
        header, _, body = part.partition(MESSAGE)
        for end in _CHANNEL_ENDS:
            body = body.split(end, 1)[0]
        if header.split(" ", 1)[0].strip() == "final":
            finals.append(body)
        else:
            other += len(body)
    return "".join(finals).strip(), other


def canonical_number(text: str) -> str:
    """A number written the one way: "$1,234.50" -> "1234.5", "7." -> "7"; "" if none.

    >>> canonical_number("$1,234.50"), canonical_number("-0"), canonical_number("abc")
    ('1234.5', '0', '')
    """
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return ""
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_number(text: str) -> str:
    """The final numeric answer in `text` (see the module docstring), canonical; "" if none.

    >>> extract_number("3 apples and 4 more, so 7")
    '7'
    >>> extract_number("The answer is $1,234.")
    '1234'
    """
    hashes = list(_HASHES.finditer(text))
    if hashes:
        return _first_number(text[hashes[-1].end() :])
    boxed = _BOXED.findall(text)
    if boxed and (found := _first_number(boxed[-1])):
        return found
    answer_is = list(_ANSWER_IS.finditer(text))
    if answer_is and (found := _stated_answer(text[answer_is[-1].end() :])):
        return found
    numbers = _NUMBER.findall(text)
    return canonical_number(numbers[-1]) if numbers else ""


def _stated_answer(text: str) -> str:
    """The number an "answer is ..." clause states: its first number, or, when the clause is
    a worked equation ("108 - 42 = 24."), the number after its last "=".

    >>> _stated_answer(" 108 - 42 = 24. Next"), _stated_answer(" 6 apples. Then 7")
    ('24', '6')
    """
    clause = re.split(r"\n|\.(?:\s|$)", text, maxsplit=1)[0]
    if "=" in clause:
        return _first_number(clause.rsplit("=", 1)[1])
    return _first_number(clause) or _first_number(text)


def _first_number(text: str) -> str:
    match = _NUMBER.search(text)
    return canonical_number(match.group()) if match else ""


def extract_letter(text: str) -> str:
    """The chosen letter A-D, uppercase; "" if none.

    >>> extract_letter("Answer: c"), extract_letter("I pick (B) now"), extract_letter("C. Paris")
    ('C', 'B', 'C')
    """
    after = list(_LETTER_AFTER_ANSWER.finditer(text))
    if after:
        return (after[-1].group(1) or after[-1].group(2)).upper()
    for pattern in (_LETTER_IN_PARENS, _LETTER_AT_START):
        match = pattern.search(text)
        if match:
            return match.group(1).upper()
    return ""


def extract_exact(text: str) -> str:
    """The first non-empty line without an "Answer:" prefix, normalized.

    >>> extract_exact("  The answer is: 'Paris'.\\nBecause...")
    'paris'
    """
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    return normalize_text(_ANSWER_PREFIX.sub("", line.strip()))


def normalize_text(text: str) -> str:
    """Case-folded, spaces collapsed, surrounding quotes, stars and a final period removed."""
    text = " ".join(text.split()).casefold()
    return text.strip(" \"'`*").rstrip(".").strip(" \"'`*")


def extract(text: str, extractor: str) -> str:
    """Run the named extractor on a reply (already without thinking)."""
    _check_extractor(extractor)
    return {"number": extract_number, "letter": extract_letter, "exact": extract_exact}[extractor](
        text
    )


def gold_answer(answer: str, extractor: str) -> str:
    """The gold answer in the extractor's canonical form; a GSM8K worked solution
    ("... #### 72") gives its final number."""
    _check_extractor(extractor)
    if extractor == "number":
        return extract_number(answer) if "####" in answer else canonical_number(answer)
    if extractor == "letter":
        return answer.strip().upper()
    return normalize_text(answer)


def score_output(output: str, gold: str, extractor: str) -> Extraction:
    """Strip thinking, extract, compare with the gold answer: the whole scoring of one output.

    >>> score_output("<think>maybe 5</think> The answer is 6.", "6", "number").correct
    True
    """
    visible, thinking = strip_thinking(output)
    extracted = extract(visible, extractor)
    correct = bool(extracted) and extracted == gold_answer(gold, extractor)
    return Extraction(
        visible=visible, extracted=extracted, correct=correct, thinking_chars=thinking
    )


def _check_extractor(extractor: str) -> None:
    if extractor not in EXTRACTORS:
        near = suggest(extractor, list(EXTRACTORS), n=1)
        raise UnknownNameError(
            "extractor", extractor, near, hint="known extractors: " + ", ".join(EXTRACTORS)
        )
