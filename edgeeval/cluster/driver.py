"""The head of a cluster run: hands pieces to Ray and stores each result as it comes back.

Ray does the scheduling; this module only says what runs where and keeps the books:

- every-node (default): one Ray actor per distinct host (nodes that share a machine count
  once), pinned to its node with NodeAffinitySchedulingStrategy(soft=False) and holding one
  CPU there; it measures one variant at a time (an actor runs its calls in turn), each in a
  child process as on one machine. A worker that dies loses the variant it was measuring (a
  crash record, with the reason); the actor restarts on its node and the next variant goes on
  (sent again if it reached the actor while it was still restarting).
  A node that is gone fails its remaining variants at once, each recorded with the reason.
- shard-accuracy: each variant's accuracy items are cut into shards (edgeeval.cluster.pieces)
  run as Ray tasks of one CPU anywhere; Ray retries a shard whose worker or node died on
  another worker (`max_retries`). When all shards of a variant are in, they are merged into the
  scores a single-machine run gives and stored as one record.

Results reach the head's store (the run's JSONL and SQLite, edgeeval.store) as each piece
finishes (a ray.wait loop); finished shards go to the run's shard log, so `--resume RUN` redoes
only missing pieces.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval.catalog.models import Catalog, Variant
from edgeeval.cluster import pieces
from edgeeval.cluster.connect import connect, disconnect, require_ray, worker_nodes
from edgeeval.cluster.node import DeviceWorker, node_host, probe_host, run_shard
from edgeeval.engine.process import Event
from edgeeval.errors import EdgeevalError, RunNotFoundError
from edgeeval.report.fleet import write_fleet
from edgeeval.report.render import render_run
from edgeeval.run.accuracy import select_run_tasks
from edgeeval.run.runner import failed_record, unfetched_info
from edgeeval.run.speed import refuse_knob_sweep
from edgeeval.sandbox.jail import choose as choose_sandbox
from edgeeval.settings import ISO_TIME
from edgeeval.store import runs as store
from edgeeval.text import Progress

OnEvent = Callable[[dict[str, Any]], None]
EVERY_NODE, SHARD_ACCURACY = "every-node", "shard-accuracy"
WAIT_S = 0.5  # how often the head looks at the progress queue while pieces run
#: A variant sent while its host's actor is restarting fails at once with Ray's
#: ActorUnavailableError; it is sent again, after RESEND_WAIT_S, at most RESEND_LIMIT times.
RESEND_LIMIT, RESEND_WAIT_S = 5, 2.0


@dataclass(frozen=True)
class ClusterOptions:
    """How to use the cluster: its address, the mode, shards (default: the cluster's CPUs),
    a folder of model files every node shares, retries of a lost shard."""

    address: str
    mode: str = EVERY_NODE
    shards: int | None = None
    shared_models: str | None = None
    local_cpus: int | None = None
    retries: int = 3


@dataclass(frozen=True)
class ClusterOutcome:
    run_id: str
    records: list[rec.ModelRecord]
    paths: dict[str, Path]
    fleet: str


@dataclass
class _Head:
    """What the head's loop needs: ray, the run, the progress queue and callbacks."""

    ray: Any
    run_id: str
    settings: rec.RunSettings
    options: ClusterOptions
    catalog: Catalog | None
    progress: Progress
    on_event: OnEvent | None
    events: Any = None
    inflight: dict[Any, Any] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)  # pieces a node said it began

    def wait(self) -> list[Any]:
        """The in-flight pieces that finished (maybe none), after passing on progress."""
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=WAIT_S)
        self.drain()
        return ready

    def drain(self) -> None:
        if self.events is None:
            return
        try:
            batch = self.events.get_nowait_batch(self.events.qsize())
        except Exception:  # noqa: BLE001 (progress is best effort)
            return
        for event in batch:
            if event.get("event") == "started":
                self.started.add(str(event.get("piece")))
            if self.on_event is not None:
                self.on_event(event)
            if event.get("event") == "worker":
                self._worker(event)
                continue
            text = event.get("message") or event.get("event", "")
            self.progress(f"[node {str(event.get('node', ''))[:8]}] {event.get('piece')}: {text}")

    def _worker(self, event: dict[str, Any]) -> None:
        """A worker's task or items event from a node (cluster.node.Relay): to a progress
        printer that draws them (cli/progress.py: a bar per piece, or lines with a rate and
        an ETA), else a line per finished chunk."""
        worker = Event.from_line(str(event.get("line", "")))
        if worker is None:
            return
        piece = str(event.get("piece", ""))
        shown = getattr(self.progress, "event", None)
        if shown is not None:
            shown(piece, worker)
        elif worker.kind == "items":
            self.progress(f"{piece}: {worker.task}: {worker.done}/{worker.planned} items")


def _reason(exc: BaseException) -> str:
    """One line for a lost piece: the node's own error when it raised one, else Ray's."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, EdgeevalError):
        return str(cause)
    base = cause if isinstance(cause, BaseException) else exc
    first = (str(base).strip().splitlines() or [""])[0]
    return f"{type(base).__name__}: {first}"[:300]


def cluster_bench(
    variants: list[Variant],
    run_settings: rec.RunSettings,
    options: ClusterOptions,
    *,
    run_id: str | None = None,
    force: bool = False,
    budget_gb: float | None = None,
    progress: Progress = lambda m: None,
    catalog: Catalog | None = None,
    on_event: OnEvent | None = None,
) -> ClusterOutcome:
    """Run the sweep over the cluster and write the run's reports and fleet report. With an
    existing `run_id`, resume it: finished records and shards are not redone."""
    if options.mode not in (EVERY_NODE, SHARD_ACCURACY):
        raise ValueError(f"unknown cluster mode {options.mode!r}")
    refuse_knob_sweep(run_settings, "--cluster")  # one record per variant and host
    require_ray()  # before anything is measured or written
    if run_id is not None:
        store.check_run_id(run_id)
    if run_settings.allow_code_exec:  # refuse before any node is asked when no sandbox works
        choose_sandbox(unsafe=run_settings.unsafe_code_exec)
    select_run_tasks(run_settings)  # bad task or suite names fail here, before any node is asked
    head_host = node_host()
    resuming = run_id is not None and (store.run_dir(run_id) / store.MANIFEST).exists()
    run_id = run_id or store.new_run_id()
    finished = _finished(run_id) if resuming else []
    ray = connect(options.address, local_cpus=options.local_cpus)
    try:
        from ray.util.queue import Queue

        head = _Head(ray, run_id, run_settings, options, catalog, progress, on_event)
        head.events = Queue(actor_options={"num_cpus": 0})
        nodes = worker_nodes(ray)
        _write_manifest(run_id, head_host, run_settings, variants, options, nodes, resuming)
        if options.mode == EVERY_NODE:
            _every_node(head, variants, nodes, pieces.ok_keys(finished), force)
        else:
            _sharded(head, variants, head_host, finished)
        head.drain()
    finally:
        disconnect()
    run_id, _rows, paths = render_run(run_id, budget_gb=budget_gb)
    records = list(store.load_records(run_id))
    fleet_path, fleet = write_fleet(run_id)
    return ClusterOutcome(run_id, records, {**paths, "fleet": fleet_path}, fleet)


def _write_manifest(
    run_id: str,
    host: rec.HostInfo,
    run_settings: rec.RunSettings,
    variants: list[Variant],
    options: ClusterOptions,
    nodes: list[Any],
    resuming: bool,
) -> None:
    """Write run.json (typed, as a single-machine run writes it, with the cluster); resuming,
    the first invocation's keys are kept and this one is added to `resumed_at`."""
    now = time.strftime(ISO_TIME)
    keep = store.read_manifest(run_id) if resuming else {}
    earlier = rec.from_dict(rec.RunManifest, keep) if resuming else None
    manifest = rec.RunManifest(
        run_id=run_id,
        host=host,
        settings=run_settings,
        variants=tuple(v.name for v in variants),
        created_at=earlier.created_at if earlier else now,
        resumed_at=(*earlier.resumed_at, now) if earlier else (),
        cluster=rec.ClusterInfo(options.address, options.mode, tuple(n.node_id for n in nodes)),
    )
    store.save_run_manifest(manifest, keep=keep)


def _finished(run_id: str) -> list[rec.ModelRecord]:
    """The run's stored records ([] when it was interrupted before the first one)."""
    try:
        return list(store.load_records(run_id))
    except RunNotFoundError:
        return []


# --- every node measures every variant -----------------------------------------------------------


def _affinity(node_id: str) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def _devices(head: _Head, nodes: list[Any]) -> dict[str, tuple[Any, rec.HostInfo]]:
    """One pinned DeviceWorker actor per distinct host (host_id), by host_id."""
    ray = head.ray
    probe = ray.remote(probe_host)
    fingerprints = ray.get(
        [
            probe.options(num_cpus=0, scheduling_strategy=_affinity(n.node_id)).remote()
            for n in nodes
        ]
    )
    first: dict[str, tuple[str, rec.HostInfo]] = {}
    for node, host in zip(nodes, fingerprints, strict=True):
        if host.host_id in first:
            head.progress(f"node {node.node_id[:8]} is on {host.hostname} again: measured once")
        first.setdefault(host.host_id, (node.node_id, host))
    device = ray.remote(DeviceWorker)
    return {
        host_id: (
            device.options(
                num_cpus=1,
                max_restarts=-1,
                max_task_retries=0,
                scheduling_strategy=_affinity(node_id),
            ).remote(head.events),
            host,
        )
        for host_id, (node_id, host) in first.items()
    }


def _every_node(
    head: _Head, variants: list[Variant], nodes: list[Any], done: set[str], force: bool
) -> None:
    devices = _devices(head, nodes)
    queues = {host_id: list(variants) for host_id in devices}

    def submit(host_id: str) -> None:
        if not queues[host_id]:
            return
        variant = queues[host_id].pop(0)
        actor, host = devices[host_id]
        piece = _piece(variant, host)
        ref = actor.measure.remote(
            variant,
            head.settings,
            run_id=head.run_id,
            done=frozenset(done),
            force=force,
            shared_models=head.options.shared_models,
            catalog=head.catalog,
            piece=piece,
        )
        head.inflight[ref] = (host_id, variant)

    for host_id in devices:
        submit(host_id)
    resent: dict[tuple[str, str], int] = {}
    while head.inflight:
        for ref in head.wait():
            host_id, variant = head.inflight.pop(ref)
            key, host = (host_id, variant.name), devices[host_id][1]
            may_resend = (
                _piece(variant, host) not in head.started and resent.get(key, 0) < RESEND_LIMIT
            )
            if not _store_device_result(head, ref, variant, host, may_resend=may_resend):
                resent[key] = resent.get(key, 0) + 1
                head.progress(
                    f"{variant.name} on {host.hostname}: its actor is restarting after a lost "
                    f"worker; sent again ({resent[key]}/{RESEND_LIMIT})"
                )
                time.sleep(RESEND_WAIT_S)
                queues[host_id].insert(0, variant)
            submit(host_id)


def _piece(variant: Variant, host: rec.HostInfo) -> str:
    return f"{variant.name} on {host.hostname}"


def _unavailable(head: _Head, exc: BaseException) -> bool:
    """Whether a piece failed with ActorUnavailableError: its actor was restarting after a
    worker died. Ray raises it both for the piece that was running when the worker died and
    for a piece that reached the actor while it restarted; the caller tells the two apart by
    the node's "started" event, and sends only a piece that never began again (the actor
    comes back on its node)."""
    unavailable = getattr(head.ray.exceptions, "ActorUnavailableError", None)
    # a Ray without it reports every loss as RayActorError
    return unavailable is not None and isinstance(exc, unavailable)


def _store_device_result(
    head: _Head, ref: Any, variant: Variant, host: rec.HostInfo, *, may_resend: bool = False
) -> bool:
    """Store a finished piece's record, or a crash record for a lost one. Returns False, and
    stores nothing, when `may_resend` and the piece only met a restarting actor."""
    try:
        out = head.ray.get(ref)
    except head.ray.exceptions.RayError as exc:
        if may_resend and _unavailable(head, exc):
            return False
        reason = f"lost on {host.hostname} (its worker or node died): {_reason(exc)}"
        head.progress(f"{variant.name} on {host.hostname}: {reason}")
        info = unfetched_info(variant)
        store.save_record(
            failed_record(head.run_id, info, host, head.settings, rec.STATUS_CRASH, reason)
        )
        return True
    if out is None:
        head.progress(f"{variant.name} on {host.hostname}: already measured (resume), skipping")
        return True
    record, samples, generations = out
    head.progress(f"{variant.name} on {host.hostname}: {record.status} {record.error}".rstrip())
    store.save_record(record, samples, generations=generations)
    return True


# --- accuracy sharded over every worker ----------------------------------------------------------


@dataclass
class _Sharded:
    variant: Variant
    have: dict[int, pieces.ShardResult]
    started: float
    started_at: str
    failed: bool = False


def _is_done(
    variant: Variant,
    settings: rec.RunSettings,
    host: rec.HostInfo,
    finished: list[rec.ModelRecord],
) -> bool:
    return any(
        r.status == rec.STATUS_OK
        and r.variant.name == variant.name
        and r.settings.key() == settings.key()
        and r.host.host_id == host.host_id
        and (not variant.sha256 or r.variant.sha256 == variant.sha256)
        for r in finished
    )


def _sharded(
    head: _Head, variants: list[Variant], host: rec.HostInfo, finished: list[rec.ModelRecord]
) -> None:
    ray, settings = head.ray, head.settings
    n = head.options.shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
    stored = list(pieces.load_shards(head.run_id).values())
    shard = ray.remote(run_shard).options(num_cpus=1, max_retries=head.options.retries)
    states: dict[str, _Sharded] = {}
    for variant in variants:
        if _is_done(variant, settings, host, finished):
            head.progress(f"{variant.name}: already scored in this run (resume), skipping")
            continue
        have = {
            r.shard: r
            for r in stored
            if r.variant == variant.name
            and r.settings_key == settings.key()
            and r.n_shards == n
            and (not variant.sha256 or r.sha256 == variant.sha256)
        }
        state = _Sharded(variant, have, time.monotonic(), time.strftime(ISO_TIME))
        states[variant.name] = state
        if have:
            head.progress(f"{variant.name}: {len(have)}/{n} shards already scored (resume)")
        for k in range(n):
            if k not in have:
                ref = shard.remote(
                    variant,
                    settings,
                    k,
                    n,
                    shared_models=head.options.shared_models,
                    catalog=head.catalog,
                    events=head.events,
                )
                head.inflight[ref] = (variant.name, k)
        if len(have) == n:
            _finish(head, state, host)
    while head.inflight:
        for ref in head.wait():
            name, k = head.inflight.pop(ref)
            _take_shard(head, states[name], ref, k, n, host)


def _take_shard(head: _Head, state: _Sharded, ref: Any, k: int, n: int, host: rec.HostInfo) -> None:
    if state.failed:
        return
    try:
        result = head.ray.get(ref)
    except head.ray.exceptions.RayError as exc:
        state.failed = True
        reason = f"shard {k + 1}/{n} failed: {_reason(exc)}"
        head.progress(f"{state.variant.name}: {reason}")
        for other, (name, _) in list(head.inflight.items()):
            if name == state.variant.name:
                head.ray.cancel(other)
        info = unfetched_info(state.variant)
        store.save_record(
            failed_record(head.run_id, info, host, head.settings, rec.STATUS_ERROR, reason)
        )
        return
    pieces.save_shard(head.run_id, result)
    state.have[k] = result
    head.progress(
        f"{state.variant.name}: shard {k + 1}/{n} scored on {result.hostname} "
        f"in {result.elapsed_s:.1f} s ({len(state.have)}/{n})"
    )
    if len(state.have) == n:
        _finish(head, state, host)


def _finish(head: _Head, state: _Sharded, host: rec.HostInfo) -> None:
    shards = [state.have[k] for k in sorted(state.have)]
    info = unfetched_info(state.variant)
    info = rec.VariantInfo(**{**rec.to_dict(info), "size_bytes": shards[0].size_bytes})
    try:
        record, samples, gens = pieces.accuracy_record(
            head.run_id,
            shards,
            info,
            host,
            head.settings,
            started_at=state.started_at,
            duration_s=time.monotonic() - state.started,
        )
    except ValueError as exc:  # the nodes scored different files
        record = failed_record(head.run_id, info, host, head.settings, rec.STATUS_ERROR, str(exc))
        samples, gens = [], []
    head.progress(f"{state.variant.name}: {record.status} (merged {len(shards)} shards)")
    store.save_record(record, samples, generations=gens)
