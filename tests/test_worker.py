"""The bench worker's phases: what a failing phase keeps, how sweeps reload, and models whose
chat template is broken (they load; their generate tasks fall back to completion prompts)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgeeval import contracts as ct
from edgeeval import records as rec
from edgeeval.catalog.models import load_catalog
from edgeeval.engine.backend import LlamaBackend, LoadOptions, ModelFacts
from edgeeval.fetch.sources import fetch
from edgeeval.run import accuracy, worker
from edgeeval.run.runner import measure_variant
from edgeeval.score.generate import score_generate_task
from edgeeval.store import runs as store
from edgeeval.tasks.suite import load_suite, tasks_dir
from tests.builders import HOST
from tests.fake_backend import FakeBackend
from tests.test_quantize import write_tiny_llama

REPO = Path(__file__).resolve().parent.parent
# eval_batch 1: these check the phases, one sequence at a time (tests/test_batch.py: batching)
FAST = {
    "repetitions": 1,
    "pp_tokens": 8,
    "tg_tokens": 2,
    "n_ctx": 256,
    "task_limit": 2,
    "eval_batch": 1,
}
LONE_SURROGATE = '{{ "\\ud800" }}{% for m in messages %}{{ m["content"] }}{% endfor %}'


def _root(tmp_path: Path, *tasks: str) -> Path:
    """A package root whose task folder has suite `t` with `tasks` (copied from the repo)."""
    root = tmp_path / "root"
    bench = tasks_dir(root)
    bench.mkdir(parents=True)
    for task in tasks:
        shutil.copy(tasks_dir(REPO) / f"{task}.yaml", bench)
    (bench / "suites.yaml").write_text(f"t: [{', '.join(tasks)}]\n")
    return root


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf", n_embd=64, n_ff=128)


class LoadedFake(FakeBackend):
    """A FakeBackend that loads like LlamaBackend; every load is recorded in `loads`."""

    loads: list[LoadOptions] = []

    def __init__(self, path: str, options: LoadOptions) -> None:
        super().__init__(liked=(" 5",))
        self.options = options
        LoadedFake.loads.append(options)

    def model_facts(self) -> ModelFacts:
        return ModelFacts(n_ctx_train=512, n_params=1234, model_size_bytes=0)

    def close(self) -> None:
        self.calls.append(("close",))


@pytest.fixture()
def fake_loads(monkeypatch: pytest.MonkeyPatch) -> list[LoadOptions]:
    LoadedFake.loads = []
    monkeypatch.setattr(worker, "LlamaBackend", LoadedFake)
    return LoadedFake.loads


def _spec(gguf: Path, root: Path, **settings: object) -> ct.WorkerSpec:
    run = rec.RunSettings(**{**FAST, "suite": "t", **settings})  # type: ignore[arg-type]
    return ct.WorkerSpec(str(gguf), str(root), run, cores_physical=2, model_kind="instruct")


def test_a_failing_task_phase_keeps_the_speed_already_measured(
    tmp_path, tiny_gguf, fake_loads, monkeypatch
):
    def boom(*args: object, **kwargs: object) -> None:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(accuracy, "score_items", boom)
    result = worker.measure(_spec(tiny_gguf, _root(tmp_path, "arith")))
    assert result.failed_phase == ct.PHASE_TASKS
    assert result.error.startswith("tasks: UnicodeEncodeError")
    assert [s.test for s in result.speed] == ["pp8", "tg2"]
    assert len(result.ttft) == 1 and result.load_s is not None
    assert result.n_params == 1234 and result.weights_bytes > 0
    assert result.tasks == ()


def test_a_failing_load_keeps_the_header_facts(tmp_path, tiny_gguf, monkeypatch):
    def refuse(path: str, options: LoadOptions) -> None:
        raise RuntimeError("llama.cpp could not load it")

    monkeypatch.setattr(worker, "LlamaBackend", refuse)
    result = worker.measure(_spec(tiny_gguf, _root(tmp_path, "arith")))
    assert result.failed_phase == ct.PHASE_LOAD and "could not load" in result.error
    assert result.weights_bytes and result.kv_cache_bytes and result.speed == ()


def test_sweeps_reload_only_for_new_load_options_and_tasks_run_on_the_primary(
    tmp_path, tiny_gguf, fake_loads
):
    spec = _spec(tiny_gguf, _root(tmp_path, "arith"), sweep_n_batch=(64, 32), sweep_threads=(1, 2))
    result = worker.measure(spec)
    assert result.error == ""
    assert [o.n_batch for o in fake_loads] == [64, 32, 64]  # primary, sweep, primary again
    assert {(s.n_batch, s.n_threads) for s in result.speed} == {(64, 1), (64, 2), (32, 1), (32, 2)}
    assert [t.task for t in result.tasks] == ["arith"] and result.tasks[0].n == 2


# --- real loads of tiny models with broken templates (llama.cpp, no download) ---

BROKEN = {
    "syntax-error": "{% for m in messages %}{{ m['content'] }}",
    "deep-nesting": "{% if true %}" * 3000 + "x" + "{% endif %}" * 3000,
}


@pytest.mark.llama
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_chat_template_does_not_stop_the_model_loading(tmp_path, name):
    path = write_tiny_llama(
        tmp_path / f"{name}.gguf", n_embd=64, n_ff=128, chat_template=BROKEN[name]
    )
    backend = LlamaBackend(str(path), LoadOptions(n_ctx=256, n_threads=1))
    try:
        assert backend.chat_template() == BROKEN[name]
        (task,) = load_suite("t", _root(tmp_path, "word-math"))
        items = task.items(limit=2)
        score, samples = score_generate_task(backend, task, items, model_kind="instruct")
    finally:
        backend.close()
    assert score.prompt_format == "completion" and len(samples) == 2
    assert "chat template" in score.reason and "used completion prompts instead" in score.reason
    assert all(s.prompt.startswith("Question: ") for s in samples)


@pytest.mark.llama
def test_a_task_that_raises_in_the_child_still_gives_a_record_with_its_speed(tmp_path):
    """A few-shot question with a lone surrogate cannot be tokenized: word-math raises in the
    child (a refused chat template would fall back to completion prompts instead)."""
    path = write_tiny_llama(tmp_path / "tiny.gguf", n_embd=64, n_ff=128)
    root = _root(tmp_path, "arith", "word-math")
    task_file = tasks_dir(root) / "word-math.yaml"
    task_file.write_text(
        task_file.read_text().replace('question: "Sara has', 'question: "\\ud800 Sara has')
    )
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "variants:\n  - {name: tiny, family: smollm, model: tiny, quant: F32, kind: instruct, "
        f"license: MIT, source: {{local: {{path: '{path}'}}}}}}\nsets:\n  default: [tiny]\n"
    )
    variant = load_catalog(catalog).get("tiny")
    settings = rec.RunSettings(**{**FAST, "suite": "t", "ttft": False})  # type: ignore[arg-type]
    record, samples, generated = measure_variant(
        variant,
        fetch(variant),
        run_id="r1",
        host=HOST,
        settings=settings,
        root=root,
        progress=lambda message: None,
    )
    assert record.status == rec.STATUS_ERROR
    assert "tasks: UnicodeEncodeError" in record.error
    assert [s.test for s in record.speed] == ["pp8", "tg2"] and record.load_s is not None
    assert [t.task for t in record.tasks] == ["arith"]  # scored before word-math raised
    assert len(samples) == 2 and generated == []
    store.save_record(record, samples, generations=generated)
    (stored,) = store.load_records("r1")
    assert stored.speed == record.speed and stored.status == rec.STATUS_ERROR
