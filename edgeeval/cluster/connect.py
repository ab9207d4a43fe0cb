"""Ray, imported only when a cluster run asks for it, and the cluster's nodes.

`--cluster ADDRESS` takes what `ray.init` takes: `auto` (the cluster `ray start` started on
this machine), `HOST:PORT` of a head, `ray://HOST:PORT` (Ray client; needs `ray[client]`), or
`local` for a cluster started in this process (its nodes are this machine; it listens on
127.0.0.1 only and stops when the run ends).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from edgeeval.errors import ClusterError, ClusterUnavailableError

#: Object store of a `local` cluster: results are small records, models never travel.
LOCAL_OBJECT_STORE_BYTES = 100 * 1024 * 1024


def require_ray() -> Any:
    """The `ray` module; ClusterUnavailableError (saying how to install it) when absent."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ClusterUnavailableError(str(exc) or "ray cannot be imported") from exc


@dataclass(frozen=True)
class Node:
    """One live Ray node that can run work (it has at least one CPU)."""

    node_id: str
    address: str
    cpus: float


def connect(address: str, *, local_cpus: int | None = None) -> Any:
    """Connect this process (the head's driver) to the cluster; return the ray module."""
    ray = require_ray()
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address == "local":
        options.update(
            num_cpus=local_cpus,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            _node_ip_address="127.0.0.1",
        )
        target = None
    else:
        target = address
    try:
        ray.init(address=target, **options)
    except ImportError as exc:  # ray:// without the client extra
        raise ClusterUnavailableError(str(exc)) from exc
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(
            f"cannot reach a Ray cluster at {address!r}: {exc}. Start one with `ray start "
            "--head` (then `--cluster auto`), pass its HOST:PORT, or use `--cluster local`"
        ) from exc
    return ray


def disconnect() -> None:
    """Leave the cluster (a `local` cluster stops with it)."""
    ray = require_ray()
    if ray.is_initialized():
        ray.shutdown()


def worker_nodes(ray: Any) -> list[Node]:
    """Live nodes with at least one CPU, in the order Ray lists them."""
    nodes = [
        Node(n["NodeID"], n.get("NodeManagerAddress", ""), float(n["Resources"].get("CPU", 0)))
        for n in ray.nodes()
        if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1
    ]
    if not nodes:
        raise ClusterError(
            "the Ray cluster has no live node with a CPU to run on; add one with "
            "`ray start --address HEAD:PORT`"
        )
    return nodes
