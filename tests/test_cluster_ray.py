"""A real local Ray cluster: a head and a second node started on this machine (one CPU each,
a 100 MB object store, no dashboard, 127.0.0.1 only), running SmolLM2 with a small --limit.

- every-node and sharded accuracy give the same accuracy per task as a single-machine run;
- sharded accuracy scores the tasks, items, few-shot count and protocol the run asked for
  (`--tasks arith,facts --limit 4 --num-fewshot 1 --protocol instruct`), as one machine does;
- a worker process killed mid-run is survived: a shard is retried elsewhere (same scores), a
  device measurement is recorded as lost with the reason and the next variant goes on;
- --resume completes an interrupted cluster run, redoing only the missing pieces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

# Ray resolves "127.0.0.1" to the machine's outward address unless told this is a one-machine
# cluster; the test cluster listens on the loopback only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from edgeeval import pipeline  # noqa: E402
from edgeeval import records as rec  # noqa: E402
from edgeeval.catalog.models import load_catalog  # noqa: E402
from edgeeval.cluster.driver import (  # noqa: E402
    EVERY_NODE,
    SHARD_ACCURACY,
    ClusterOptions,
    cluster_bench,
)
from edgeeval.cluster.pieces import load_shards  # noqa: E402
from edgeeval.store import runs as store  # noqa: E402

pytestmark = pytest.mark.real
REPO = Path(__file__).resolve().parent.parent
SETTINGS = rec.RunSettings(
    n_ctx=512,
    n_threads=1,
    repetitions=1,
    pp_tokens=16,
    tg_tokens=4,
    ttft=False,
    task_limit=3,  # 3 items over 2 shards: uneven shards on purpose
)
NODE = {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024, "node_ip_address": "127.0.0.1"}


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The head plus a second node on this machine; its address. Always shut down."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    home = tmp_path_factory.mktemp("node-home")
    with _env(EDGEEVAL_HOME=str(home), EDGEEVAL_ROOT=str(REPO)):  # the nodes' environment
        cluster = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={**NODE, "include_dashboard": False},
        )
        try:
            cluster.add_node(**NODE)
            yield cluster.address
        finally:
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()


@pytest.fixture(scope="module")
def catalog_path(tmp_path_factory: pytest.TempPathFactory, smollm_path: Path) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "models.yaml"
    entries = "\n".join(
        f"  - {{name: {name}, family: smollm, model: SmolLM2, quant: Q4_1, kind: instruct, "
        f'license: Apache-2.0, source: {{local: {{path: "{smollm_path}"}}}}}}'
        for name in ("smol-a", "smol-b")
    )
    path.write_text(f"variants:\n{entries}\nsets:\n  default: [smol-a, smol-b]\n")
    return path


@pytest.fixture(scope="module")
def single_machine(tmp_path_factory: pytest.TempPathFactory, catalog_path: Path) -> rec.ModelRecord:
    """smol-a measured on this machine alone, as `edgeeval bench` does."""
    tmp = tmp_path_factory.mktemp("single")
    with _env(EDGEEVAL_HOME=str(tmp / "home"), EDGEEVAL_REPORTS=str(tmp / "reports")):
        variant = load_catalog(catalog_path).get("smol-a")
        outcome = pipeline.bench([variant], SETTINGS, progress=lambda m: None)
    (record,) = outcome.records
    assert record.status == rec.STATUS_OK, record.error
    return record


def _accuracy(record: rec.ModelRecord) -> dict[str, tuple]:
    """Per task: status, n, acc, acc_norm (what must match between runs)."""
    return {t.task: (t.status, t.n, t.acc, t.acc_norm) for t in record.tasks}


def _variants(catalog_path: Path, *names: str) -> list:
    catalog = load_catalog(catalog_path)
    return [catalog.get(name) for name in names]


def test_every_node_gives_the_single_machine_accuracy(ray_cluster, catalog_path, single_machine):
    sent: list[dict] = []
    outcome = cluster_bench(
        _variants(catalog_path, "smol-a"),
        SETTINGS,
        ClusterOptions(ray_cluster, EVERY_NODE),
        on_event=sent.append,
    )
    # the node's worker events reach the head for the progress display (cluster.node.Relay)
    worker = [json.loads(e["line"]) for e in sent if e.get("event") == "worker"]
    assert {"task", "items"} <= {w["event"] for w in worker}
    assert all(w["planned"] >= w.get("done", 0) for w in worker if w["event"] == "items")
    # both nodes are this machine: it is measured once, and the record carries its fingerprint
    (record,) = outcome.records
    assert record.status == rec.STATUS_OK, record.error
    assert record.host.host_id == single_machine.host.host_id
    assert record.memory is not None and record.speed
    assert _accuracy(record) == _accuracy(single_machine)
    assert "smol-a" in outcome.fleet and (outcome.paths["fleet"]).exists()


def test_sharded_accuracy_survives_a_killed_worker(ray_cluster, catalog_path, single_machine):
    killed: list[int] = []
    started: list[str] = []

    def kill_first_shard(event: dict) -> None:
        if event.get("event") != "started":
            return
        started.append(event["piece"])
        if not killed:
            os.kill(event["pid"], signal.SIGKILL)
            killed.append(event["pid"])

    outcome = cluster_bench(
        _variants(catalog_path, "smol-a"),
        SETTINGS,
        ClusterOptions(ray_cluster, SHARD_ACCURACY),
        on_event=kill_first_shard,
    )
    (record,) = outcome.records
    assert record.status == rec.STATUS_OK, record.error
    assert _accuracy(record) == _accuracy(single_machine)
    assert killed and started.count(started[0]) == 2  # the killed shard ran again
    assert len(load_shards(outcome.run_id)) == 2


#: `bench --tasks arith,facts --limit 4 --num-fewshot 1 --protocol instruct`
ASKED = dataclasses.replace(
    SETTINGS, tasks=("arith", "facts"), task_limit=4, num_fewshot=1, protocol="instruct"
)


def _scored(record: rec.ModelRecord, samples: list[rec.SampleResult]) -> dict[str, tuple]:
    """Per task: accuracy, protocol fields and the ids of the items scored, in order."""
    return {
        t.task: (
            (t.status, t.n, t.acc, t.acc_norm),
            (t.protocol, t.prompt_format, t.thinking, t.n_shot, t.n_source),
            [s.item_id for s in samples if s.task == t.task],
        )
        for t in record.tasks
    }


def test_sharded_accuracy_scores_what_the_run_asked_as_one_machine_does(
    ray_cluster, catalog_path, tmp_path_factory
):
    tmp = tmp_path_factory.mktemp("asked")
    variants = _variants(catalog_path, "smol-a")
    with _env(EDGEEVAL_HOME=str(tmp / "home"), EDGEEVAL_REPORTS=str(tmp / "reports")):
        single = pipeline.bench(variants, ASKED, progress=lambda m: None)
        (alone,) = single.records
        alone_samples = list(store.load_samples(single.run_id))
    assert alone.status == rec.STATUS_OK, alone.error
    outcome = cluster_bench(variants, ASKED, ClusterOptions(ray_cluster, SHARD_ACCURACY))
    (record,) = outcome.records
    assert record.status == rec.STATUS_OK, record.error
    cluster = _scored(record, list(store.load_samples(outcome.run_id)))
    assert list(cluster) == ["arith", "facts"]  # the asked tasks only
    assert cluster == _scored(alone, alone_samples)
    assert all(len(ids) == 4 and n_shot == 1 for _, (*_, n_shot, _), ids in cluster.values())
    manifest = store.load_run_manifest(outcome.run_id)  # run.json: typed, as one machine's
    assert manifest.settings == ASKED and manifest.variants == ("smol-a",)
    assert manifest.cluster is not None and manifest.cluster.mode == SHARD_ACCURACY


def test_every_node_records_a_lost_measurement_and_goes_on(ray_cluster, catalog_path):
    killed: list[int] = []

    def kill_first(event: dict) -> None:
        if event.get("event") == "started" and not killed:
            os.kill(event["pid"], signal.SIGKILL)
            killed.append(event["pid"])

    outcome = cluster_bench(
        _variants(catalog_path, "smol-a", "smol-b"),
        SETTINGS,
        ClusterOptions(ray_cluster, EVERY_NODE),
        on_event=kill_first,
    )
    by_name = {r.variant.name: r for r in outcome.records}
    assert killed
    assert by_name["smol-a"].status == rec.STATUS_CRASH
    assert "died" in by_name["smol-a"].error
    assert by_name["smol-b"].status == rec.STATUS_OK, by_name["smol-b"].error


class _Interrupt(Exception):
    pass


def test_resume_completes_an_interrupted_sharded_run(ray_cluster, catalog_path, single_machine):
    variants = _variants(catalog_path, "smol-a")
    options = ClusterOptions(ray_cluster, SHARD_ACCURACY)

    def stop_after_first_shard(message: str) -> None:
        if "scored on" in message:
            raise _Interrupt(message)

    with pytest.raises(_Interrupt):
        cluster_bench(variants, SETTINGS, options, progress=stop_after_first_shard)
    runs = store.list_runs()
    assert len(runs) == 1
    (kept,) = load_shards(runs[0]).values()  # one shard finished before the interruption
    started: list[str] = []
    outcome = cluster_bench(
        variants,
        SETTINGS,
        options,
        run_id=runs[0],
        on_event=lambda e: started.append(e["piece"]) if e.get("event") == "started" else None,
    )
    (record,) = outcome.records
    assert record.status == rec.STATUS_OK, record.error
    assert _accuracy(record) == _accuracy(single_machine)
    assert started == [f"smol-a shard {1 - kept.shard + 1}/2"]  # only the missing shard ran
    assert dataclasses.asdict(load_shards(runs[0])[kept.key]) == dataclasses.asdict(kept)
