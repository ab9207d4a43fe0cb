"""Cluster runs without a cluster: shards cover every item once and merge into the scores of
a single-machine run; the shard log round-trips; the fleet report ranks each host under its
own memory; without Ray, `--cluster` says how to install it and the rest works as before."""

from __future__ import annotations

import builtins
import dataclasses
import json
import sys
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeeval import records as rec
from edgeeval.cli.main import main
from edgeeval.cluster import pieces
from edgeeval.errors import ClusterUnavailableError
from edgeeval.metrics import score_samples
from edgeeval.report import fleet
from edgeeval.run.accuracy import shard_positions
from edgeeval.score.generate import task_score
from edgeeval.store import runs as store
from tests import builders as b


@given(st.integers(0, 60), st.integers(1, 9))
def test_shards_cover_every_item_exactly_once(n_items, n_shards):
    seen = [i for k in range(n_shards) for i in shard_positions(n_items, k, n_shards)]
    assert sorted(seen) == list(range(n_items))


def test_a_shard_outside_the_range_is_refused():
    with pytest.raises(ValueError, match="not in 0..1"):
        shard_positions(5, 2, 2)


def _mc_sample(i: int) -> rec.SampleResult:
    logliks = (-1.0, -0.5) if i % 3 else (-0.2, -2.0)  # two in three pick choice 1
    return rec.SampleResult("mc", f"mc-{i}", gold=i % 2, logliks=logliks, choice_chars=(3, 3))


def _gen_sample(i: int) -> rec.GenSampleResult:
    status = rec.STATUS_ERROR if i == 4 else rec.STATUS_OK  # one harness error
    return rec.GenSampleResult(
        "gen", f"gen-{i}", "generate", status, "q", "a", gold="1", correct=i % 2 == 0
    )


MC_META = {"task": "mc", "version": 2, "category": "knowledge", "chance": 0.5}


class _Gen:
    name, version, category, chance = "gen", 1, "math", 0.0


def _shards(n_items: int, n_shards: int, *, sha: str = "f" * 64) -> list[pieces.ShardResult]:
    """Shards as workers return them: each scored its own items with the real scorers."""
    out = []
    for k in range(n_shards):
        pos = shard_positions(n_items, k, n_shards)
        mc = [_mc_sample(i) for i in pos]
        gen = [_gen_sample(i) for i in pos]
        mc_score = score_samples(mc, **MC_META, elapsed_s=1.0) if pos else None
        gen_score = (
            task_score(_Gen(), gen, metric="acc", elapsed_s=2.0, prompt_format="chat")
            if pos
            else None
        )
        tasks = (
            pieces.ShardTask("mc", "multiple_choice", mc_score, tuple(pos), samples=tuple(mc)),
            pieces.ShardTask("gen", "generate", gen_score, tuple(pos), generations=tuple(gen)),
        )
        key = pieces.shard_key("m", sha, rec.RunSettings(), k, n_shards)
        out.append(pieces.ShardResult(key, "m", sha, 10, "s", k, n_shards, "h", "box", 1.0, tasks))
    return out


@pytest.mark.parametrize(("n_items", "n_shards"), [(10, 1), (10, 2), (10, 3), (2, 4)])
def test_merged_shards_score_like_one_machine(n_items, n_shards):
    scores, samples, gens = pieces.merge_shards(list(reversed(_shards(n_items, n_shards))))
    whole_mc = [_mc_sample(i) for i in range(n_items)]
    whole_gen = [_gen_sample(i) for i in range(n_items)]
    single = score_samples(whole_mc, **MC_META)
    single_gen = task_score(_Gen(), whole_gen, metric="acc", prompt_format="chat")
    ignore = {"elapsed_s": 0.0}
    assert dataclasses.replace(scores[0], **ignore) == dataclasses.replace(single, **ignore)
    assert dataclasses.replace(scores[1], **ignore) == dataclasses.replace(single_gen, **ignore)
    assert samples == whole_mc and gens == whole_gen  # in the task's item order


def test_thinking_rows_are_merged_each_from_its_own_items():
    """A reasoning template scored twice (thinking on and off): each shard has a part per
    mode, and each merged row is scored from its own mode's items only."""

    def part(k: int, thinking: str) -> pieces.ShardTask:
        pos = shard_positions(6, k, 2)
        right = thinking == "on"  # thinking on answers everything right
        gens = tuple(
            dataclasses.replace(_gen_sample(i), correct=right, thinking=thinking) for i in pos
        )
        score = task_score(_Gen(), gens, metric="acc", prompt_format="chat")
        return pieces.ShardTask(
            "gen",
            "generate",
            dataclasses.replace(score, thinking=thinking),
            tuple(pos),
            generations=gens,
            thinking=thinking,
        )

    shards = [
        pieces.ShardResult(
            f"k{k}", "m", "f" * 64, 10, "s", k, 2, "h", "box", 1.0, (part(k, "on"), part(k, "off"))
        )
        for k in range(2)
    ]
    scores, _, gens = pieces.merge_shards(shards)
    assert [(s.thinking, s.n, s.acc) for s in scores] == [("on", 5, 1.0), ("off", 5, 0.0)]
    assert [g.thinking for g in gens] == ["on"] * 6 + ["off"] * 6


def test_shards_of_different_files_or_missing_shards_are_refused():
    mixed = _shards(6, 2)
    mixed[1] = dataclasses.replace(mixed[1], sha256="e" * 64)
    with pytest.raises(ValueError, match="different files"):
        pieces.merge_shards(mixed)
    with pytest.raises(ValueError, match="shards 0..2 exactly once"):
        pieces.merge_shards(_shards(6, 3)[:2])


def test_a_skipped_task_stays_skipped_when_merged():
    skipped = rec.TaskScore("he", 1, "code", 0.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, status="skipped")
    parts = [pieces.ShardTask("he", "code", skipped), pieces.ShardTask("he", "code", skipped)]
    assert pieces.merge_task(parts) == skipped


def test_the_shard_log_round_trips_and_skips_a_torn_line():
    run_id = store.new_run_id()
    shards = _shards(5, 2)
    for shard in shards:
        pieces.save_shard(run_id, shard)
    with open(pieces.shards_path(run_id), "ab") as fh:
        fh.write(b'{"key": "torn')
    loaded = pieces.load_shards(run_id)
    assert loaded == {s.key: s for s in shards}


def test_accuracy_record_carries_the_merged_scores_and_no_memory():
    info = rec.VariantInfo("m", "f", "m", "Q4", "instruct", 10, "")
    record, samples, gens = pieces.accuracy_record(
        "r", _shards(6, 2), info, b.HOST, rec.RunSettings(), started_at="t", duration_s=1.0
    )
    assert record.status == rec.STATUS_OK and record.memory is None
    assert record.variant.sha256 == "f" * 64 and [t.task for t in record.tasks] == ["mc", "gen"]
    assert len(samples) == len(gens) == 6


def test_fleet_ranks_each_host_side_by_side_under_its_own_memory():
    small = b.host("h2", "phone", ram_bytes=2 * 10**9)
    records = [
        b.record("big", peak_gb=4.0, acc=0.9),
        b.record("tiny", peak_gb=0.5, acc=0.5),
        b.record("big", peak_gb=4.0, acc=0.9, host_info=small),
        b.record("tiny", peak_gb=0.5, acc=0.5, host_info=small),
    ]
    devices = fleet.fleet_devices(records)
    assert [d.host.hostname for d in devices] == ["box", "phone"]
    assert devices[0].best.name == "tiny"  # best capability per GB on the big box
    assert devices[1].best.name == "tiny"
    assert next(r for r in devices[1].rows if r.name == "big").over_budget  # 4 GB > 2 GB
    table = fleet.side_by_side(devices)
    assert "| big |" in table and "phone (h2)" in table and "box (h1)" in table
    choice = fleet.choice_table(devices)
    assert choice.count("| tiny |") == 2


def test_fleet_prefers_a_variant_that_fits_when_the_best_does_not():
    small = b.host("h2", "phone", ram_bytes=1 * 10**9)
    records = [
        b.record("dense", peak_gb=0.9, acc=0.95, host_info=small),
        b.record("sparse", peak_gb=1.5, acc=0.99, host_info=small),
    ]
    (device,) = fleet.fleet_devices(records)
    assert device.best.name == "dense"


def test_fleet_of_a_stored_run_is_written(capsys):
    run_id = store.new_run_id()
    store.write_manifest(run_id, {"run_id": run_id})
    store.save_record(b.record("tiny", peak_gb=0.5, acc=0.5, run_id=run_id))
    store.save_record(
        b.record("tiny", peak_gb=0.5, acc=0.4, run_id=run_id, host_info=b.host("h2", "mac"))
    )
    assert len(store.load_records(run_id)) == 2  # one per host, not one per variant
    assert main(["fleet", run_id]) == 0
    out = capsys.readouterr().out
    assert "box (h1)" in out and "mac (h2)" in out and (store.run_dir(run_id) / "fleet.md").exists()


def test_run_json_is_one_typed_manifest_and_old_ones_still_load():
    """run.json as one machine wrote it before RunManifest, and as a cluster wrote it (no
    created_at, its own cluster block), both load typed; writing one back keeps the keys."""
    settings = rec.RunSettings(tasks=("arith",), task_limit=4)
    old_single = {
        "run_id": "s1",
        "created_at": "2026-01-01T00:00:00+0000",
        "host": rec.to_dict(b.HOST),
        "settings": rec.to_dict(settings),
        "variants": ["a", "b"],
        "allow_concurrent": False,
        "imported_from": "elsewhere.jsonl",  # a key the type does not know
    }
    store.write_manifest("s1", old_single)
    typed = store.load_run_manifest("s1")
    assert (typed.settings, typed.host, typed.variants) == (settings, b.HOST, ("a", "b"))
    assert typed.cluster is None and typed.resumed_at == ()
    store.save_run_manifest(typed, keep=old_single)
    assert store.read_manifest("s1") == json.loads(json.dumps(old_single))  # key for key
    old_cluster = {
        "run_id": "c1",
        "host": rec.to_dict(b.HOST),
        "settings": rec.to_dict(settings),
        "variants": ["a"],
        "cluster": {"address": "local", "mode": "shard-accuracy", "nodes": ["n1", "n2"]},
    }
    store.write_manifest("c1", old_cluster)
    cluster = store.load_run_manifest("c1").cluster
    assert cluster == rec.ClusterInfo("local", "shard-accuracy", ("n1", "n2"))
    resumed = dataclasses.replace(store.load_run_manifest("c1"), resumed_at=("later",))
    store.save_run_manifest(resumed)
    again = {**old_cluster, "allow_concurrent": False, "resumed_at": ["later"]}
    assert store.read_manifest("c1") == json.loads(json.dumps(again))
    store.write_manifest("bad", {"run_id": "bad", "settings": {"n_ctx": "x" * 3, "tasks": 5}})
    with pytest.raises((TypeError, ValueError)):
        store.load_run_manifest("bad")


@pytest.fixture()
def no_ray(monkeypatch):
    """Ray made unimportable, as on a machine without the extra."""
    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", guarded)
    monkeypatch.setitem(sys.modules, "ray", None)


def test_without_ray_cluster_says_how_to_install_it(no_ray, capsys):
    assert (
        main(["bench", "--cluster", "local", "--models", "qwen2.5-coder-0.5b-instruct-q4_k_m"]) == 2
    )
    err = capsys.readouterr().err
    assert "pip install 'edgeeval[ray]'" in err and "without --cluster" in err
    from edgeeval.cluster.connect import require_ray

    with pytest.raises(ClusterUnavailableError):
        require_ray()


def test_without_ray_everything_else_works(no_ray, capsys):
    assert main(["tasks"]) == 0
    assert main(["runs"]) == 0
    assert "arith" in capsys.readouterr().out


def test_every_node_and_shard_accuracy_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--cluster", "local", "--every-node", "--shard-accuracy"])
    assert "not allowed with" in capsys.readouterr().err


# --- the every-node loop with Ray faked: a variant that reached a restarting actor ---


class _Unavailable(Exception):
    """Stands for ray.exceptions.ActorUnavailableError."""


class _Died(Exception):
    """Stands for ray.exceptions.RayActorError (the worker died while measuring)."""


class _FakeRay:
    """ray.wait/ray.get over refs that are the results themselves (an exception is raised)."""

    exceptions = SimpleNamespace(ActorUnavailableError=_Unavailable, RayError=Exception)

    def wait(self, refs, num_returns, timeout):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if isinstance(ref, BaseException):
            raise ref
        return ref


class _FakeActor:
    """Answers each variant from a script: a list of outcomes, one per call."""

    def __init__(self, script):
        self.script, self.calls = script, []
        self.measure = SimpleNamespace(remote=self._measure)

    head = None

    def _measure(self, variant, settings, *, piece, **kwargs):
        self.calls.append(variant.name)
        outcome = self.script[variant.name].pop(0)
        if isinstance(outcome, _Began):  # the node said "started", then the worker died
            self.head.started.add(piece)
            return outcome.error
        return outcome


@dataclasses.dataclass
class _Began:
    error: BaseException


def _run_every_node(monkeypatch, script):
    from edgeeval.cluster import driver

    actor, saved, said = _FakeActor(script), [], []
    monkeypatch.setattr(driver, "_devices", lambda head, nodes: {"h1": (actor, b.HOST)})
    monkeypatch.setattr(driver, "RESEND_WAIT_S", 0)
    monkeypatch.setattr(driver.store, "save_record", lambda record, *a, **k: saved.append(record))
    head = driver._Head(
        _FakeRay(), "r1", rec.RunSettings(), driver.ClusterOptions("fake"), None, said.append, None
    )
    actor.head = head
    variants = [SimpleNamespace(name=name) for name in script]
    monkeypatch.setattr(
        driver, "unfetched_info", lambda v: b.record(v.name, peak_gb=1, acc=0).variant
    )
    driver._every_node(head, variants, [], set(), False)
    return actor.calls, saved, said


def test_a_variant_that_reached_a_restarting_actor_is_sent_again(monkeypatch):
    # "a" lost its worker while measuring (Ray says ActorUnavailableError for it too): a crash
    # record, not sent again. "b" arrived while the actor restarted, twice, then ran (None:
    # already measured, so nothing is stored for it). "c" died the older way (RayActorError).
    script = {
        "a": [_Began(_Unavailable("the actor is restarting"))],
        "b": [_Unavailable(), _Unavailable(), None],
        "c": [_Died("worker died")],
    }
    calls, saved, said = _run_every_node(monkeypatch, script)
    assert calls == ["a", "b", "b", "b", "c"]
    assert [(r.variant.name, r.status) for r in saved] == [
        ("a", rec.STATUS_CRASH),
        ("c", rec.STATUS_CRASH),
    ]
    assert sum("sent again" in line for line in said) == 2


def test_sending_again_stops_after_the_limit_and_records_the_loss(monkeypatch):
    from edgeeval.cluster import driver

    script = {"b": [_Unavailable() for _ in range(driver.RESEND_LIMIT + 1)]}
    calls, saved, said = _run_every_node(monkeypatch, script)
    assert calls == ["b"] * (driver.RESEND_LIMIT + 1)
    assert [r.status for r in saved] == [rec.STATUS_CRASH]
    assert "lost on box" in said[-1]
