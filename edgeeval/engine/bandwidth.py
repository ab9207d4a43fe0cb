"""Host memory bandwidth, measured once per host and cached, for the generation roofline.

Token generation reads every weight once per token, so it is memory-bound:
    tg ceiling (tokens/s) = bandwidth (bytes/s) / bytes read per token (weights + KV so far)
The probe copies a buffer far larger than any CPU cache with several threads (numpy releases
the GIL while copying) and counts read + write bytes; the best of a few rounds is kept.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgeeval import settings

PROBE_BYTES = 256 * 2**20


def measure_bandwidth(*, n_threads: int, total_bytes: int = PROBE_BYTES, rounds: int = 5) -> float:
    """Best observed copy bandwidth in bytes/s (2 bytes moved per byte copied)."""
    n_threads = max(1, n_threads)
    chunk = total_bytes // n_threads // 8
    sources = [np.ones(chunk, dtype=np.float64) for _ in range(n_threads)]
    targets = [np.empty_like(s) for s in sources]
    best = 0.0
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for _ in range(rounds):
            start = time.perf_counter()
            list(pool.map(lambda i: np.copyto(targets[i], sources[i]), range(n_threads)))
            elapsed = time.perf_counter() - start
            best = max(best, 2 * chunk * 8 * n_threads / elapsed)
    return best


def cached_bandwidth(host_key: str, *, n_threads: int, cache_dir: Path | None = None) -> float:
    """The host's bandwidth from the cache, measuring it the first time."""
    path = (cache_dir or settings.home()) / "hosts" / f"{host_key}.json"
    try:
        return float(json.loads(path.read_text())["mem_bandwidth_bytes_per_s"])
    except (OSError, ValueError, KeyError):
        pass
    value = measure_bandwidth(n_threads=n_threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "mem_bandwidth_bytes_per_s": value,
                "n_threads": n_threads,
                "measured_at": time.strftime(settings.ISO_TIME),
            }
        )
    )
    return value
