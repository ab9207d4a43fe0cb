"""Ray, imported only when a cluster run asks for it, and the cluster's nodes.

`--cluster ADDRESS` takes what `ray.init` takes: `auto` (the cluster `ray start` started on
this machine), `HOST:PORT` of a head, `ray://HOST:PORT` (Ray client; needs `ray[client]`), or
`local` for a cluster started in this process (its nodes are this machine; it listens on
127.0.0.1 only and stops when the run ends).

A HOST:PORT (or ray://HOST:PORT) address is probed before Ray is started: the name must
resolve within RESOLVE_TIMEOUT_S and the port accept a TCP connection within
PROBE_TIMEOUT_S, so an unreachable address fails in seconds, naming it, instead of after Ray's
own minutes of retries.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import socket
from dataclasses import dataclass
from typing import Any

from edgeeval.errors import ClusterError, ClusterUnavailableError

#: Object store of a `local` cluster: results are small records, models never travel.
LOCAL_OBJECT_STORE_BYTES = 100 * 1024 * 1024
#: How long the address probe waits for a name to resolve, and for the port to answer.
RESOLVE_TIMEOUT_S = 5.0
PROBE_TIMEOUT_S = 5.0
_NEXT_STEP = (
    "Start one with `ray start --head` (then `--cluster auto`), pass its HOST:PORT, or use "
    "`--cluster local`"
)


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
    """Connect this process (the head's driver) to the cluster; return the ray module. A
    HOST:PORT address that does not resolve or answer is a ClusterError within seconds."""
    if address not in ("local", "auto"):
        probe(address)
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
            f"cannot reach a Ray cluster at {address!r}: {exc}. {_NEXT_STEP}"
        ) from exc
    return ray


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT`, `ray://HOST:PORT` or `[IPv6]:PORT`; ClusterError
    otherwise."""
    rest = address.removeprefix("ray://")
    host, sep, port_text = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ClusterError(
            f"--cluster {address!r} is not an address: give HOST:PORT (e.g. 10.0.0.5:6379), "
            "ray://HOST:PORT, `auto` or `local`"
        )
    return host, int(port_text)


def probe(address: str) -> None:
    """ClusterError naming `address` unless its host resolves within RESOLVE_TIMEOUT_S and its
    port accepts a TCP connection within PROBE_TIMEOUT_S."""
    host, port = split_address(address)
    # getaddrinfo cannot be interrupted: it runs in a thread that is left behind on a timeout
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        found = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        infos = found.result(timeout=RESOLVE_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        raise ClusterError(
            f"cannot reach a Ray cluster at {address!r}: the name {host!r} did not resolve "
            f"within {RESOLVE_TIMEOUT_S:.0f} s. {_NEXT_STEP}"
        ) from None
    except (OSError, UnicodeError) as exc:
        raise ClusterError(
            f"cannot reach a Ray cluster at {address!r}: the name {host!r} does not resolve "
            f"({exc}). {_NEXT_STEP}"
        ) from None
    finally:
        pool.shutdown(wait=False)
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(PROBE_TIMEOUT_S)
                sock.connect(sockaddr)
            return
        except OSError as exc:
            last = exc
    why = "timed out" if isinstance(last, TimeoutError) else (last.strerror if last else "")
    raise ClusterError(
        f"cannot reach a Ray cluster at {address!r}: nothing answers on {host} port {port} "
        f"({why or last}). {_NEXT_STEP}"
    )


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
