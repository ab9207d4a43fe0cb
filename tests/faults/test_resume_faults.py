"""Resume means resume: `--resume RUN` measures the run's own models with its own settings, a
conflicting option or an unknown id is an error, a run interrupted before its first model
finished resumes, Ctrl-C prints the run id, and bad values are refused at parse time.

The model measurement is replaced by a fake (no llama.cpp): these tests are about the wiring.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from edgeeval import pipeline
from edgeeval import records as rec
from edgeeval.catalog.models import load_catalog
from edgeeval.cli.main import main
from edgeeval.engine import hostlock
from edgeeval.errors import ConfigError
from edgeeval.run import runner
from edgeeval.store import runs as store
from tests import builders

FAST = ["--suite", "", "--n-ctx", "256", "--reps", "2", "--threads", "1"]


@pytest.fixture()
def catalog(tmp_path) -> str:
    """Two variants whose files are small local files (hashed for real, never loaded)."""
    entries = []
    for name in ("m-a", "m-b"):
        (tmp_path / f"{name}.gguf").write_bytes(name.encode() * 100)
        entries.append(
            f"  - {{name: {name}, family: qwen, model: M, quant: Q8_0, kind: base, license: mit, "
            f'source: {{local: {{path: "{tmp_path / name}.gguf"}}}}}}'
        )
    path = tmp_path / "models.yaml"
    path.write_text("variants:\n" + "\n".join(entries) + "\nsets:\n  default: [m-a, m-b]\n")
    return str(path)


class FakeMeasure:
    """Stands in for runner.measure_variant: records each call; raises KeyboardInterrupt
    (as a Ctrl-C would) when it reaches a variant named in `interrupt_at`."""

    def __init__(self, interrupt_at: str = "") -> None:
        self.calls: list[tuple[str, rec.RunSettings]] = []
        self.interrupt_at = interrupt_at

    def __call__(self, variant, file, *, run_id, host, settings, **_):
        if variant.name == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls.append((variant.name, settings))
        record = builders.record(
            variant.name, peak_gb=0.1, acc=0.5, run_id=run_id, host_info=host, settings=settings
        )
        return dataclasses.replace(record, variant=runner.variant_info(variant, file)), [], []


@pytest.fixture()
def measure(monkeypatch) -> FakeMeasure:
    fake = FakeMeasure()
    monkeypatch.setattr(runner, "measure_variant", fake)
    return fake


def _bench(catalog: str, *args: str) -> int:
    return main(["--catalog", catalog, "bench", *args])


def _interrupted_run(catalog: str, measure: FakeMeasure, at: str, capsys) -> str:
    """Start a run that Ctrl-C stops when it reaches `at`; return its id (from the message)."""
    measure.interrupt_at = at
    assert _bench(catalog, *FAST) == 130
    err = capsys.readouterr().err
    (run_id,) = store.list_runs()
    assert f"resume with: edgeeval --catalog {catalog} bench --resume {run_id}" in err
    assert "finished measurements are saved" in err
    measure.interrupt_at = ""
    return run_id


def test_ctrl_c_prints_the_run_id_to_resume(catalog, measure, capsys):
    run_id = _interrupted_run(catalog, measure, "m-b", capsys)
    assert [r.variant.name for r in store.load_records(run_id)] == ["m-a"]


def test_resume_without_options_uses_the_runs_models_and_settings(catalog, measure, capsys):
    run_id = _interrupted_run(catalog, measure, "m-b", capsys)
    measure.calls.clear()
    manifest = store.read_manifest(run_id)
    assert _bench(catalog, "--resume", run_id) == 0
    err = capsys.readouterr().err
    assert "m-a: already measured in this run (resume), skipping" in err
    ((name, used),) = measure.calls  # only the missing model, with the run's settings
    assert name == "m-b"
    assert (used.n_ctx, used.repetitions, used.n_threads, used.suite) == (256, 2, 1, "")
    after = store.read_manifest(run_id)
    assert after["settings"] == manifest["settings"] and after["variants"] == ["m-a", "m-b"]
    assert len(after["resumed_at"]) == 1
    assert {r.variant.name for r in store.load_records(run_id)} == {"m-a", "m-b"}


def test_a_run_interrupted_before_its_first_model_resumes(catalog, measure, capsys):
    run_id = _interrupted_run(catalog, measure, "m-a", capsys)
    assert not (store.run_dir(run_id) / "records.jsonl").exists()
    assert store.read_manifest(run_id)["variants"] == ["m-a", "m-b"]
    assert _bench(catalog, "--resume", run_id) == 0
    assert [(n, s.n_ctx) for n, s in measure.calls] == [("m-a", 256), ("m-b", 256)]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--n-ctx", "4096"], "--n-ctx 4096 differs from the run's 256; drop it to resume"),
        (["--threads", "1,2"], "--threads 1,2 differs from the run's 1; drop it to resume"),
        (["--no-mmap"], "--no-mmap differs from the run's use_mmap=True; drop it to resume"),
        (["--models", "m-a"], "--models m-a differs from the run's m-a, m-b; drop it"),
    ],
)
def test_an_option_that_differs_from_the_run_is_refused(catalog, measure, capsys, option, message):
    run_id = _interrupted_run(catalog, measure, "m-b", capsys)
    measure.calls.clear()
    assert _bench(catalog, "--resume", run_id, *option) == 2
    err = capsys.readouterr().err
    assert message in err and run_id in err
    assert measure.calls == [] and len(store.load_records(run_id)) == 1


def test_options_that_agree_and_a_new_timeout_are_accepted(catalog, measure, capsys):
    run_id = _interrupted_run(catalog, measure, "m-b", capsys)
    measure.calls.clear()
    assert _bench(catalog, "--resume", run_id, "--n-ctx", "256", "--timeout", "5") == 0
    ((_, used),) = measure.calls
    assert used.n_ctx == 256 and used.timeout_s == 5.0


def test_an_unknown_run_id_lists_the_closest_and_starts_nothing(catalog, measure, capsys):
    run_id = _interrupted_run(catalog, measure, "m-b", capsys)
    typo = run_id[:-1] + ("x" if run_id[-1] != "x" else "y")
    assert _bench(catalog, "--resume", typo) == 1
    err = capsys.readouterr().err
    assert f"no run '{typo}' to resume" in err and f"did you mean '{run_id}'" in err
    assert store.list_runs() == [run_id] and [n for n, _ in measure.calls] == ["m-a"]


def test_the_library_refuses_to_resume_with_other_settings(catalog, measure, capsys):
    run_id = _interrupted_run(catalog, measure, "m-b", capsys)
    stored = pipeline.stored_run(run_id)
    variants = load_catalog(catalog).select(list(stored.variants))
    with pytest.raises(pipeline.ResumeConflictError) as info:
        pipeline.bench(
            variants,
            dataclasses.replace(stored.settings, seed=7),
            run_id=run_id,
            progress=lambda _: None,
        )
    assert info.value.option == "setting seed" and info.value.stored == "0"


def test_a_second_bench_is_refused_and_allow_concurrent_proceeds_marked(catalog, measure, capsys):
    with hostlock.acquire("other-run"):
        assert _bench(catalog, *FAST) == 4
        err = capsys.readouterr().err
        assert f"pid {os.getpid()}" in err and "--allow-concurrent" in err
        assert store.list_runs() == [] and measure.calls == []  # refused before a run exists
        assert _bench(catalog, *FAST, "--allow-concurrent") == 0
    (run_id,) = store.list_runs()
    assert store.read_manifest(run_id)["allow_concurrent"] is True
    records = store.load_records(run_id)
    assert records and all(r.settings.allow_concurrent for r in records)
    report = (store.run_dir(run_id) / "report.md").read_text()
    assert "Measured with --allow-concurrent" in report
    # a clean resume does not count the unlocked measurements as done
    measure.calls.clear()
    assert _bench(catalog, "--resume", run_id) == 0
    assert [n for n, s in measure.calls if not s.allow_concurrent] == ["m-a", "m-b"]
    assert store.read_manifest(run_id)["allow_concurrent"] is True  # the run stays marked


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--budget-gb", "0"], "--budget-gb"),
        (["--budget-gb", "-1"], "--budget-gb"),
        (["--reps", "0"], "--reps"),
        (["--limit", "0"], "--limit"),
        (["--n-ctx", "0"], "--n-ctx"),
        (["--timeout", "0"], "--timeout"),
        (["--timeout", "nan"], "--timeout"),
        (["--n-batch", "512,0"], "--n-batch"),
        (["--flash-attn", "2"], "--flash-attn"),
    ],
)
def test_out_of_range_values_are_refused_at_parse_time(capsys, measure, argv, named):
    with pytest.raises(SystemExit) as info:
        main(["bench", *argv])
    assert info.value.code == 2
    assert f"argument {named}" in capsys.readouterr().err
    assert measure.calls == []


def test_out_of_range_settings_are_refused_before_a_run_starts(catalog, measure):
    with pytest.raises(ConfigError) as info:  # refused where the settings are built
        pipeline.bench([], rec.RunSettings(repetitions=0, suite=""), progress=lambda _: None)
    assert info.value.key == "repetitions" and "at least 1" in str(info.value)
    assert store.list_runs() == []


def test_a_bad_profile_value_is_an_error_naming_the_setting(tmp_path, monkeypatch, catalog, capsys):
    profiles = tmp_path / "speed.yaml"
    profiles.write_text(json.dumps({"broken": {"repetitions": 0}}))
    monkeypatch.setattr("edgeeval.catalog.profiles.default_path", lambda: profiles)
    assert _bench(catalog, "--suite", "", "--profile", "broken") == 2
    assert "key 'repetitions': must be at least 1, got 0" in capsys.readouterr().err


def test_the_concurrency_mark_keeps_old_keys_and_changes_the_key_when_set():
    plain = rec.RunSettings()
    assert plain.key() == "eb3870389e6d58ce"  # as computed before the field existed (a3bfe0c)
    assert rec.RunSettings(allow_concurrent=True).key() != plain.key()


# --- the worker's journal and what --resume keeps of it ---------------------------------------


def _journal_lines() -> list:
    from edgeeval import contracts as ct

    speed = rec.SpeedResult("pp16", 16, 0, 0, (1,), (1.0,), 1.0, 0.0)
    chunk = rec.TaskScore("arith", 1, "math", 0.25, 2, 0.5, 0.35, 0.5, 0.35, 1.5)
    rows = [rec.SampleResult("arith", f"a-{i}", 0, (-1.0, -2.0), (1, 1)) for i in range(4)]
    return [
        ct.JournalLine(ct.J_CHECK, ct.WorkerResult(weights_bytes=10)),
        ct.JournalLine(ct.J_LOAD, ct.WorkerResult(load_s=0.2)),
        ct.JournalLine(ct.J_SPEED, ct.WorkerResult(speed=(speed,))),
        ct.JournalLine(ct.J_SPEED_DONE),
        ct.JournalLine(ct.J_ITEMS, ct.WorkerResult(samples=tuple(rows[:2])), "arith", 40, chunk),
        ct.JournalLine(ct.J_ITEMS, ct.WorkerResult(samples=tuple(rows[2:])), "arith", 40, chunk),
        ct.JournalLine(ct.J_ERROR, ct.WorkerResult(error="tasks: boom", failed_phase="tasks")),
    ]


def test_a_journal_torn_by_a_kill_keeps_every_whole_line_and_resume_drops_the_error(tmp_path):
    from edgeeval.store import journal as journals

    path = journals.journal_path("run-1", "smol:abc:key:host", "smol/../x", tmp_path)
    assert path.parent == tmp_path / "run-1" / "journal" and path.name.startswith("smol_.._x-")
    text = "".join(rec.to_json(line) + "\n" for line in _journal_lines())
    path.write_text(text + '{"kind": "items", "adds": {"sam')  # the kill came mid-write
    prior, journal = journals.resume_from(path)
    assert journal.skipped == 1 and len(journal.lines) == 7
    assert journal.open_tasks["arith"][:2] == (4, 40)
    assert journal.open_tasks["arith"][2].elapsed_s == 3.0  # the task's time over both chunks
    assert prior.speed_done and prior.result.load_s == 0.2 and not prior.result.error
    assert [s.item_id for s in prior.result.samples] == ["a-0", "a-1", "a-2", "a-3"]
    again = journals.resume_from(path)[1]  # rewritten: the error and the torn line are gone
    assert again.skipped == 0 and [line.kind for line in again.lines][-1] == "items"


def test_without_its_memory_a_speed_phase_is_measured_again(tmp_path):
    from edgeeval.store import journal as journals

    path = journals.journal_path("run-1", "k", "smol", tmp_path)
    path.write_text("".join(rec.to_json(line) + "\n" for line in _journal_lines()))
    prior, _ = journals.resume_from(path, speed=False)
    assert not prior.speed_done and prior.result.speed == () and prior.result.load_s is None
    assert len(prior.result.samples) == 4  # the scored items are kept all the same
    assert journals.resume_from(tmp_path / "none.jsonl") is None


def test_the_estimate_comes_at_a_tasks_first_chunk_and_warns_of_the_total_limit():
    from edgeeval.engine.process import Event
    from edgeeval.run.runner import _Watch

    said: list[str] = []
    watch = _Watch("smol", rec.RunSettings(timeout_s=60.0), said.append)
    first = Event("items", task="humaneval", done=16, planned=164, fresh=16, seconds=128.0)
    watch.event(first)
    watch.event(dataclasses.replace(first, done=32, fresh=32, seconds=256.0))
    watch.event(Event("working", done=99))  # decodes: the stall watch's, not printed
    assert said[0] == "smol: humaneval: 16/164 items"
    assert said[1] == (
        "smol: humaneval: estimate 1184 s more for 148 of 164 items (8.00 s per item over the "
        "first 16)"
    )
    assert said[2].startswith("smol: warning: the --timeout of 60 s will stop humaneval after")
    assert said[3] == "smol: humaneval: 32/164 items" and len(said) == 4  # one estimate a task


def test_a_journal_written_before_a_field_was_added_still_resumes(tmp_path):
    """--resume may run a later edgeeval than the attempt that wrote the journal: a TaskScore
    field added since (found on a real resume: n_thinking_forced) takes its default, and the
    scored items are kept rather than scored again."""
    from edgeeval import contracts as ct

    lines = []
    for line in _journal_lines()[:-1]:
        data = rec.to_dict(line)
        if data["chunk"] is not None:
            del data["chunk"]["n_shot"]  # as if written before TaskScore had it
        del data["adds"]["eval_batch"]  # and before WorkerResult had this one
        lines.append(json.dumps(data))
    path = tmp_path / "old.jsonl"
    path.write_text("\n".join(lines) + "\n")
    journal = ct.read_journal(path)
    assert journal.skipped == 0 and journal.speed_done
    assert journal.open_tasks["arith"][:2] == (4, 40)
    assert len(journal.prior().result.samples) == 4
