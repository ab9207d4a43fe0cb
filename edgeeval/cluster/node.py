"""What runs on a node of the cluster: the node's host fingerprint, one variant measured on
the node's own hardware (as on one machine: run.runner.bench_one), and one shard of a
variant's accuracy tasks (scored as on one machine: run.accuracy.score_tasks).

Plain Python: edgeeval.cluster.driver wraps these in Ray tasks and actors. Model files are
fetched and sha256-verified on the node itself (into the node's cache), or read from a folder
the user says every node shares (`shared_models`), verified there too.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval import settings as env
from edgeeval.catalog.models import Catalog, Variant, load_catalog
from edgeeval.cluster.pieces import ShardResult, ShardTask, shard_key
from edgeeval.engine import host as hostinfo
from edgeeval.engine.backend import library_info
from edgeeval.engine.process import Event
from edgeeval.errors import FetchError
from edgeeval.fetch.sources import LocalFile, fetch, verify_file
from edgeeval.gguf.check import check_gguf
from edgeeval.quant.build import ensure_file
from edgeeval.text import Progress

Measured = tuple[rec.ModelRecord, list[rec.SampleResult], list[rec.GenSampleResult]]


def node_id() -> str:
    """The Ray node this code runs on ("" outside a Ray worker)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 (progress must never fail a measurement)
        return ""


def report(events: Any, piece: str, event: str, **fields: Any) -> None:
    """Send one progress event to the head's queue (a ray.util.queue.Queue), best effort."""
    if events is None:
        return
    try:
        events.put_nowait({"piece": piece, "event": event, "node": node_id(), **fields})
    except Exception:  # noqa: BLE001 (a full or gone queue loses a progress line, nothing else)
        pass


class Relay:
    """A piece's progress on its node, sent to the head's queue: lines as "progress" events,
    and the worker's task and item events (engine.process.Event, as its JSON line, in `line`)
    as "worker" events, so the head draws the bar or the lines with a rate and an ETA that one
    machine draws (cli/progress.py). Callable as text.Progress; run.runner hands it each
    worker event through `event`."""

    FORWARDED = ("task", "items", "scoring", "done", "loading")

    def __init__(self, events: Any, piece: str) -> None:
        self.events, self.piece = events, piece

    def __call__(self, message: str) -> None:
        report(self.events, self.piece, "progress", message=message)

    def event(self, model: str, event: Event) -> None:
        if event.kind in self.FORWARDED:
            report(self.events, self.piece, "worker", line=event.to_line())


def node_host(*, bandwidth: bool = True) -> rec.HostInfo:
    """This node's host fingerprint (the memory bandwidth is measured once per host)."""
    return hostinfo.collect(library_info(), bandwidth=bandwidth)


def local_model(
    variant: Variant,
    *,
    shared_models: str | None,
    catalog: Catalog | None,
    progress: Progress = lambda m: None,
) -> LocalFile:
    """The variant's verified file on this node: from the shared folder when one is given
    (a `local:` source keeps its own path), else fetched into this node's cache or built."""
    if shared_models and variant.source.kind != "local":
        path = Path(shared_models) / variant.filename
        if not path.is_file():
            raise FetchError(
                f"{variant.name}: {path} is not on node {node_id()[:12] or '?'} "
                f"(--shared-models {shared_models}); copy the file there, or drop "
                "--shared-models to fetch it on every node"
            )
        actual = verify_file(
            path, size_bytes=variant.size_bytes, sha256=variant.sha256, remove_on_mismatch=False
        )
        return LocalFile(path, actual, path.stat().st_size)
    if variant.source.kind == "derived":
        return ensure_file(variant, catalog or load_catalog(), progress=progress)
    return fetch(variant, progress=progress)


class DeviceWorker:
    """Measures variants on one host, in a child process each (edgeeval.run.runner), one at a
    time: the driver makes one Ray actor of this class per host, and Ray runs an actor's calls
    one after another, so no two measurements share a machine."""

    def __init__(self, events: Any = None) -> None:
        self.events = events
        self.host = node_host()

    def host_info(self) -> rec.HostInfo:
        return self.host

    def measure(
        self,
        variant: Variant,
        run_settings: rec.RunSettings,
        *,
        run_id: str,
        done: frozenset[str],
        force: bool,
        shared_models: str | None,
        catalog: Catalog | None,
        piece: str,
    ) -> Measured | None:
        """The variant's record, samples and generations measured here; None when `done`
        already holds its key (resume). A failure before loading is a skipped record. The
        same steps as on one machine (run.runner.bench_one: pre-flight with eval_batch)."""
        from edgeeval.run.runner import bench_one

        report(self.events, piece, "started", pid=os.getpid(), host=self.host.hostname)
        progress = Relay(self.events, piece)
        got = bench_one(
            variant,
            run_settings,
            lambda: local_model(
                variant, shared_models=shared_models, catalog=catalog, progress=progress
            ),
            run_id=run_id,
            host=self.host,
            done=done,
            force=force,
            root=env.package_root(),  # threads 0 become this host's physical cores there
            progress=progress,
            where=f"on {self.host.hostname}: ",
        )
        if got.record is None:
            return None
        return got.record, got.samples, got.generations


def run_shard(
    variant: Variant,
    run_settings: rec.RunSettings,
    shard: int,
    n_shards: int,
    *,
    shared_models: str | None,
    catalog: Catalog | None,
    events: Any = None,
) -> ShardResult:
    """Score shard `shard` of `n_shards` of the run's tasks with the variant, in this process,
    on `run_settings.n_threads or 1` threads (a worker is one CPU): the tasks the run selected
    (run.accuracy.select_run_tasks), scored by the single-machine path (score_tasks) over
    every n-th item."""
    from edgeeval.engine.backend import LlamaBackend
    from edgeeval.engine.batch import resolve_eval_batch
    from edgeeval.run.accuracy import score_tasks, select_run_tasks
    from edgeeval.run.speed import expand_sweep, load_options

    piece = f"{variant.name} shard {shard + 1}/{n_shards}"
    report(events, piece, "started", pid=os.getpid())
    start = time.perf_counter()
    file = local_model(variant, shared_models=shared_models, catalog=catalog)
    host = node_host(bandwidth=False)
    tasks = select_run_tasks(run_settings)
    threads = run_settings.n_threads or 1
    primary = expand_sweep(run_settings, cores_physical=threads)[0]
    point = dataclasses.replace(primary, n_threads=threads)
    check_gguf(file.path)  # refuse a malformed file before native code parses it
    backend = LlamaBackend(str(file.path), load_options(run_settings, point))
    try:
        got = score_tasks(
            backend,
            tasks,
            run_settings,
            model_kind=variant.kind,
            reasoning=variant.reasoning,
            eval_batch=resolve_eval_batch(run_settings.eval_batch, point.n_gpu_layers),
            n_threads=threads,
            shard=(shard, n_shards),
            on_task=lambda name, i, n: report(events, piece, "progress", message=f"task {name}"),
        )
    finally:
        backend.close()
    parts = tuple(
        ShardTask(
            r.task,
            r.kind,
            r.score,
            r.positions,
            samples=r.samples,
            generations=r.gen_samples,
            thinking=r.thinking,
        )
        for r in got.results
    )
    return ShardResult(
        key=shard_key(variant.name, file.sha256, run_settings, shard, n_shards),
        variant=variant.name,
        sha256=file.sha256,
        size_bytes=file.size_bytes,
        settings_key=run_settings.key(),
        shard=shard,
        n_shards=n_shards,
        host_id=host.host_id,
        hostname=host.hostname,
        elapsed_s=time.perf_counter() - start,
        tasks=parts,
    )


def probe_host() -> rec.HostInfo:
    """This node's fingerprint without the bandwidth test (to tell machines apart first)."""
    return node_host(bandwidth=False)
