"""Sharded accuracy on a Ray cluster: the offline suite over 1 and 2 single-threaded workers.

For each worker count W this starts a local Ray cluster of W CPUs on this machine (127.0.0.1
only), runs `edgeeval bench --cluster local --shard-accuracy --shards W --threads 1` through
edgeeval.cluster.driver on one model, and takes the sharded record's duration (first shard
submitted to last shard merged: model loads, file checks and scoring, on the workers). It
prints the speed-up of W workers over one, checks that every task's score is identical, and
writes the figures to reports/cluster/<time>.json.

The target is a speed-up of at least 1.8x for 2 workers on a quiet machine with 2 free cores;
on a shared machine the timings are noise.

    .venv/bin/python benchmarks/cluster_scaling.py [--model NAME] [--limit N] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.catalog.models import load_catalog
from edgeeval.cluster.driver import SHARD_ACCURACY, ClusterOptions, cluster_bench
from edgeeval.engine.backend import library_info
from edgeeval.engine.host import collect
from edgeeval.fetch.sources import fetch

TARGET = 1.8


def _scores(record: rec.ModelRecord) -> dict[str, list]:
    return {t.task: [t.status, t.n, t.acc, t.acc_norm] for t in record.tasks}


def run_once(model: str, workers: int, limit: int | None, reports: Path) -> dict:
    """One sharded run on a local cluster of `workers` CPUs; its time and scores."""
    os.environ["EDGEEVAL_REPORTS"] = str(reports / f"w{workers}")
    variant = load_catalog().get(model)
    run_settings = rec.RunSettings(n_threads=1, task_limit=limit, suite="offline")
    options = ClusterOptions("local", SHARD_ACCURACY, shards=workers, local_cpus=workers)
    start = time.perf_counter()
    outcome = cluster_bench([variant], run_settings, options)
    wall = time.perf_counter() - start
    (record,) = outcome.records
    if record.status != rec.STATUS_OK:
        raise SystemExit(f"{workers} worker(s): {record.status}: {record.error}")
    return {"seconds": record.duration_s, "wall_s": wall, "scores": _scores(record)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct-q4_k_m")
    parser.add_argument("--limit", type=int, help="items per task (default: all)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    out_dir = settings.reports_dir() / "cluster"
    fetch(load_catalog().get(args.model))  # downloaded once, before anything is timed
    results = {}
    with tempfile.TemporaryDirectory(prefix="edgeeval-cluster-") as tmp:
        for workers in counts:
            results[workers] = run_once(args.model, workers, args.limit, Path(tmp))
            print(f"{workers} worker(s): {results[workers]['seconds']:.1f} s", file=sys.stderr)
    base = results[counts[0]]
    identical = all(r["scores"] == base["scores"] for r in results.values())
    speedups = {w: base["seconds"] / r["seconds"] for w, r in results.items()}
    for workers, result in results.items():
        print(f"{workers} worker(s): {result['seconds']:7.1f} s  speed-up {speedups[workers]:.2f}x")
    print(f"scores identical across worker counts: {identical}")
    last = counts[-1]
    verdict = "met" if speedups[last] >= TARGET else "not met (noisy on a shared machine?)"
    print(f"target >= {TARGET}x for {last} workers: {verdict}")
    host = collect(library_info(), bandwidth=False)
    report = {
        "model": args.model,
        "suite": "offline",
        "limit": args.limit,
        "threads_per_worker": 1,
        "results": {str(w): r for w, r in results.items()},
        "speedup": {str(w): s for w, s in speedups.items()},
        "identical_scores": identical,
        "target_speedup": TARGET,
        "host": rec.to_dict(host),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"written to {path}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
