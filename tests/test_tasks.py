"""Offline task suites: determinism, verified answers, item shape, and task-file validation."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from edgeeval import tasks
from edgeeval.errors import ConfigError, UnknownNameError
from edgeeval.tasks import McItem, get_task, load_suite, load_tasks, safe_eval

ROOT = Path(__file__).resolve().parent.parent
TASKS = load_tasks(ROOT)
OFFLINE = ["arith", "python-eval", "pydoc-cloze", "facts", "code-complete"]


def question(task: tasks.Task, item: McItem) -> str:
    """The item's own question: the last block of the context, out of the task's template."""
    last = item.context.split(task.separator)[-1]
    before, after = task.template.split("{question}")
    assert last.startswith(before) and last.endswith(after)
    return last[len(before):len(last) - len(after)]


def test_offline_suite_lists_the_tasks() -> None:
    suite = load_suite("offline", ROOT)
    assert [task.name for task in suite] == OFFLINE
    assert all(task.kind == "multiple_choice" and task.chance == 0.25 for task in suite)
    assert [task.name for task in load_suite("quick", ROOT)] == OFFLINE


@pytest.mark.parametrize("name", OFFLINE)
def test_same_seed_same_items_other_seed_other_items(name: str) -> None:
    task = TASKS[name]
    first = task.items(seed=0)
    assert first == load_tasks(ROOT)[name].items(seed=0)
    assert first != task.items(seed=1)
    assert task.items(seed=0, limit=5) == first[:5]


@pytest.mark.parametrize(("name", "text", "choices", "gold"), [
    ("arith", "65 + 26", (" 91", " 92", " 81", " 19"), 0),
    ("python-eval", "int('58') + 3", (" '583'", " 61", " 174", " 62"), 1),
    ("code-complete", "def is_even(number):\n    return number",
     (" % 2 == 1", " % 2 == 0", " < 0", " == 0"), 1),
    ("facts", "What do bees make?", (" milk", " honey", " wool", " silk"), 1),
])
def test_first_item_is_pinned(name: str, text: str, choices: tuple[str, ...], gold: int) -> None:
    """Seed 0 gives these items on every machine and Python (no `hash()`, no set order).

    If a generator change breaks this on purpose, bump the task's `version` and update the pin.
    """
    item = TASKS[name].items(seed=0, limit=1)[0]
    assert text in item.context and item.choices == choices and item.gold == gold


@pytest.mark.parametrize("name", OFFLINE)
def test_item_shape(name: str) -> None:
    task = TASKS[name]
    items = task.items(seed=3)
    assert len(items) == task.n_items == 40
    assert len({item.id for item in items}) == len(items)
    for item in items:
        assert item.context == item.context.rstrip() and item.context
        assert len(item.choices) == 4 and len(set(item.choices)) == 4
        assert all(c.startswith(" ") and not c.startswith("  ") and c.strip() for c in item.choices)
        assert 0 <= item.gold < 4
        assert len(item.context) < 800  # well under ~200 tokens


@pytest.mark.parametrize("name", OFFLINE)
def test_gold_position_is_spread(name: str) -> None:
    golds = [item.gold for item in TASKS[name].items(seed=0)]
    assert len(set(golds)) == 4
    assert max(golds.count(g) for g in range(4)) <= 20


def test_arith_gold_is_the_sum() -> None:
    task = TASKS["arith"]
    for item in task.items(seed=0, limit=200):
        a, op, b = question(task, item).split()
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert item.choices[item.gold] == f" {value}"
        assert all(int(c) != value for i, c in enumerate(item.choices) if i != item.gold)


def test_arith_few_shot_answers_are_right() -> None:
    for shot, answer in TASKS["arith"].few_shot:
        a, op, b = shot.split()
        assert str({"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]) == answer


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_python_eval_gold_is_the_value(seed: int) -> None:
    task = TASKS["python-eval"]
    for item in task.items(seed=seed, limit=200):
        value = safe_eval(question(task, item))
        for index, choice in enumerate(item.choices):
            assert (safe_eval(choice) == value) == (index == item.gold), (item, choice)
        assert f"assert {question(task, item)} ==" in item.context
    for shot, answer in task.few_shot:
        assert safe_eval(shot) == safe_eval(answer)


def test_python_eval_covers_many_kinds_of_expression() -> None:
    task = TASKS["python-eval"]
    text = " ".join(question(task, item) for item in task.items(seed=0, limit=200))
    for needle in ("len(", "sorted(", "sum(", "//", "%", ".upper()", ".join(", ".split(", "]["):
        assert needle in text


@pytest.mark.parametrize("seed", [0, 1])
def test_code_complete_gold_is_the_only_working_code(seed: int) -> None:
    task = TASKS["code-complete"]
    families = {name: family for family in tasks._CODE_FAMILIES for name in family.names}
    for item in task.items(seed=seed, limit=100):
        code = question(task, item)
        fn = re.match(r"def (\w+)\(", code).group(1)
        family = families[fn]
        passes = [tasks.code_passes(code + choice + family.tail, fn, family.inputs)
                  for choice in item.choices]
        assert passes == [i == item.gold for i in range(4)], item


def test_pydoc_cloze_gold_ends_a_sentence_of_the_docs() -> None:
    topics = pytest.importorskip("pydoc_data.topics").topics
    path = ROOT / "benchmarks" / "data" / "pydoc_cloze.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) >= 100
    found = 0
    for rec in records:
        assert rec["answer"] == rec["choices"][0] and rec["answer"] not in rec["choices"][1:]
        assert not set(rec["choices"][1:]) & set(rec["question"].lower().split())
        text = " ".join(topics.get(rec["topic"], "").split())
        found += f"{rec['question']} {rec['answer']}." in text
    # The snapshot was built from Python 3.11.7; other versions reword a few sentences.
    assert found >= 0.8 * len(records)


def test_facts_file_is_well_formed() -> None:
    task = TASKS["facts"]
    assert len(task.records) >= 60
    questions = [record.question for record in task.records]
    assert len(set(questions)) == len(questions)
    assert all(q.endswith("?") for q in questions)
    item = next(i for i in task.items(limit=100) if i.id == "facts-001")
    assert item.context.endswith("Question: What is the capital of France?\nAnswer:")
    assert item.choices[item.gold] == " Paris"


def test_default_root_is_the_package_root() -> None:
    assert sorted(load_tasks()) == sorted(OFFLINE)


def test_file_task_limit_is_capped_by_the_file() -> None:
    assert len(TASKS["facts"].items(limit=1000)) == len(TASKS["facts"].records)


def test_few_shot_examples_precede_the_question() -> None:
    item = TASKS["arith"].items(limit=1)[0]
    assert item.context.startswith("Question: What is 2 + 3?\nAnswer: 5\n\n")
    assert item.context.count("Question:") == 4


def test_unknown_task_name_suggests_close_match() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_task("arihm", ROOT)
    assert info.value.suggestions[0] == "arith"
    assert "did you mean 'arith'" in str(info.value)
    assert get_task("arith", ROOT).name == "arith"


def test_unknown_suite_name() -> None:
    with pytest.raises(UnknownNameError, match="offline"):
        load_suite("ofline", ROOT)


# --- invalid task files -------------------------------------------------------------------------

GOOD = """\
name: tiny
version: 1
description: test task
category: math
kind: multiple_choice
source: generator:arith
n_items: 5
"""


def write_task(tmp_path: Path, text: str, name: str = "tiny.yaml") -> Path:
    folder = tmp_path / "benchmarks"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_minimal_task_loads(tmp_path: Path) -> None:
    write_task(tmp_path, GOOD)
    task = load_tasks(tmp_path)["tiny"]
    assert len(task.items()) == 5 and task.chance == 0.25
    assert task.template == tasks.DEFAULT_TEMPLATE


@pytest.mark.parametrize(("text", "key"), [
    (GOOD + "shots: 3\n", "shots"),
    (GOOD.replace("version: 1\n", ""), "version"),
    (GOOD.replace("generator:arith", "generator:arithmetic"), "source"),
    (GOOD.replace("generator:arith", "http://example.com/x"), "source"),
    (GOOD.replace("generator:arith", "file:../outside.jsonl"), "source"),
    (GOOD.replace("generator:arith", "file:data/missing.jsonl"), "source"),
    (GOOD.replace("n_items: 5", "n_items: five"), "n_items"),
    (GOOD.replace("version: 1", "version: true"), "version"),
    (GOOD.replace("version: 1", "version: 0"), "version"),
    (GOOD.replace("category: math", "category: maths"), "category"),
    (GOOD.replace("multiple_choice", "generate"), "kind"),
    (GOOD + "template: 'What is it?'\n", "template"),
    (GOOD + "few_shot: [{question: '1 + 1'}]\n", "few_shot"),
    (GOOD + "options: {max_value: 9}\n", "options.max_value"),
    (GOOD + "options: {ops: 3}\n", "options.ops"),
])
def test_invalid_task_file_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = write_task(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_tasks(tmp_path)
    assert info.value.key == key
    assert str(path) in str(info.value) and f"key '{key}'" in str(info.value)


def test_unknown_key_suggests_the_known_one(tmp_path: Path) -> None:
    write_task(tmp_path, GOOD + "fewshot: []\n")
    with pytest.raises(ConfigError, match="did you mean 'few_shot'"):
        load_tasks(tmp_path)


def test_not_a_mapping_and_bad_yaml_name_the_file(tmp_path: Path) -> None:
    path = write_task(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_tasks(tmp_path)
    path.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_tasks(tmp_path)


def test_duplicate_task_names_rejected(tmp_path: Path) -> None:
    write_task(tmp_path, GOOD)
    path = write_task(tmp_path, GOOD, name="zz-copy.yaml")  # loaded second
    with pytest.raises(ConfigError) as info:
        load_tasks(tmp_path)
    assert info.value.key == "name" and info.value.path == str(path)


@pytest.mark.parametrize(("record", "key"), [
    ({"id": "x-1", "question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "e"}, "answer"),
    ({"id": "x-1", "question": "Q?", "choices": ["a", "a", "c", "d"], "answer": "a"}, "answer"),
    ({"id": "x-1", "question": "Q?", "choices": [" a", "b", "c", "d"], "answer": " a"}, "choices"),
    ({"id": "x-1", "question": "Q?", "choices": ["a", "b", "c", "d"]}, "answer"),
])
def test_invalid_data_file_names_file_line_and_key(tmp_path: Path, record: dict, key: str) -> None:
    write_task(tmp_path, GOOD.replace("generator:arith", "file:data/x.jsonl"))
    data = tmp_path / "benchmarks" / "data" / "x.jsonl"
    data.parent.mkdir()
    data.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_tasks(tmp_path)
    assert info.value.key == key and info.value.entry == "line 1"
    assert str(data) in str(info.value)


def test_generator_options_change_items(tmp_path: Path) -> None:
    write_task(tmp_path, GOOD + "options: {ops: '+', max_operand: 20}\n")
    task = load_tasks(tmp_path)["tiny"]
    for item in task.items(limit=20):
        a, op, b = question(task, item).split()
        assert op == "+" and int(a) <= 20 and int(b) <= 20


def test_suite_with_unknown_task_is_rejected(tmp_path: Path) -> None:
    write_task(tmp_path, GOOD)
    path = write_task(tmp_path, "offline: [tiny, tinny-typo]\n", name="suites.yaml")
    with pytest.raises(ConfigError) as info:
        load_suite("offline", tmp_path)
    assert info.value.path == str(path) and info.value.key == "offline"


def test_repo_benchmarks_copy_loads(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks")
    assert sorted(load_tasks(tmp_path)) == sorted(OFFLINE)
