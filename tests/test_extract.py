"""Answer extraction and <think> removal on tricky model outputs (pure functions, tables)."""

import pytest

from edgeeval.errors import UnknownNameError
from edgeeval.score.extract import (
    canonical_number,
    extract_exact,
    extract_letter,
    extract_number,
    gold_answer,
    score_output,
    strip_thinking,
)


@pytest.mark.parametrize(
    "text, visible, thinking",
    [
        ("<think>5 apples</think> The answer is 6", "The answer is 6", 8),
        ("<think>\nhmm\n</think>\n\n#### 3", "#### 3", 5),
        ("<think>never finished, the answer is 5", "", 31),  # unterminated leading block
        ("Sure. <think>ok</think>Done", "Sure. Done", 2),
        ("reasoning that began in the prompt</think>42", "42", 34),  # <think> was in the prompt
        ("<think>a</think>x<think>bb</think>y", "xy", 3),
        ("no thinking at all", "no thinking at all", 0),
    ],
)
def test_strip_thinking(text, visible, thinking):
    assert strip_thinking(text) == (visible, thinking)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is $1,234.", "1234"),
        ("The answer is 108 - 42 = 24. So Sara has 24.", "24"),
        ("The answer is 6 apples. Then 7 more came.", "6"),
        ("#### 42", "42"),
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
        ("She has 3 apples and buys 4 more, so 7", "7"),
        ("The answer is: 18 dollars. Then 20 more would be 38", "18"),
        ("So the total is \\boxed{12}.", "12"),
        ("It costs 2.50 dollars", "2.5"),
        ("1,000,000 people", "1000000"),
        ("The temperature fell to -3", "-3"),
        ("#### $1,050.00", "1050"),
        ("version x2 of H2O", ""),
        ("no numbers here", ""),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("(B)", "B"),
        ("Answer: c", "C"),
        ("The answer is (b).", "B"),
        ("The answer is a fish (B)", "B"),  # the article "a" is not an answer
        ("The correct answer is C because", "C"),
        ("ANSWER: D", "D"),
        ("The answer is option B", "B"),
        ("B) Paris", "B"),
        ("Let me see.\nC.", "C"),
        ("A fish swims", ""),
        ("I am not sure", ""),
    ],
)
def test_extract_letter(text, expected):
    assert extract_letter(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Paris", "paris"),
        ("  The answer is: 'Paris'.\nBecause it is the capital", "paris"),
        ("Answer: **New   York**", "new york"),
        ("\n\n`True`", "true"),
    ],
)
def test_extract_exact(text, expected):
    assert extract_exact(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$1,234.50", "1234.5"),
        ("7.", "7"),
        ("-0", "0"),
        ("3.000", "3"),
        ("1e3", "1000"),
        ("seven", ""),
    ],
)
def test_canonical_number(text, expected):
    assert canonical_number(text) == expected


@pytest.mark.parametrize(
    "output, gold, extractor, extracted, correct",
    [
        ("<think>... 5 ...</think> The answer is 6", "6", "number", "6", True),
        ("<think>... 5 ... the answer is 6", "6", "number", "", False),  # ran out mid-thought
        ("The answer is $1,234.", "1234", "number", "1234", True),
        (
            "So she has 18 eggs.\n#### 18",
            "Janet ... 16 - 3 - 4 = 9 eggs. #### 18",
            "number",
            "18",
            True,
        ),  # GSM8K worked gold
        ("(B)", "B", "letter", "B", True),
        ("Answer: c", "D", "letter", "C", False),
        ("Paris.", "paris", "exact", "paris", True),
        ("", "3", "number", "", False),
    ],
)
def test_score_output(output, gold, extractor, extracted, correct):
    scored = score_output(output, gold, extractor)
    assert (scored.extracted, scored.correct) == (extracted, correct)


def test_gold_answers_take_the_same_canonical_form():
    assert gold_answer("1,234", "number") == "1234"
    assert gold_answer(" b ", "letter") == "B"


def test_an_unknown_extractor_is_named_with_a_suggestion():
    with pytest.raises(UnknownNameError, match="unknown extractor 'numbr'.*'number'"):
        score_output("1", "1", "numbr")
