"""Hand-built records for tests of the later stages (no model involved)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from edgeeval import records as rec
from edgeeval.metrics import mean_stddev

HOST = rec.HostInfo(
    host_id="h1",
    hostname="box",
    os="Linux",
    os_version="6",
    machine="x86_64",
    cpu_model="cpu",
    cores_physical=2,
    cores_logical=2,
    ram_bytes=24 * 10**9,
    python_version="3.11",
    edgeeval_version="0",
    llama_cpp_python_version="0",
    llama_cpp_system_info="CPU",
    backend="CPU",
    gpu_offload=False,
)


def host(host_id: str, hostname: str, **changes: object) -> rec.HostInfo:
    """Another machine: HOST with a different id and name (and any other changes)."""
    return dataclasses.replace(HOST, host_id=host_id, hostname=hostname, **changes)


def speed(
    test: str, samples_ts: Sequence[float], *, n_threads: int = 0, n_depth: int = 0
) -> rec.SpeedResult:
    """A speed result whose mean, stddev and ns samples agree with `samples_ts`."""
    tokens = int("".join(c for c in test.split()[0] if c.isdigit()) or 1)
    avg, sd = mean_stddev(samples_ts)
    return rec.SpeedResult(
        test=test,
        n_prompt=tokens if test.startswith("pp") else 0,
        n_gen=tokens if test.startswith("tg") else 0,
        n_depth=n_depth,
        samples_ns=tuple(int(tokens / t * 1e9) for t in samples_ts),
        samples_ts=tuple(samples_ts),
        avg_ts=avg,
        stddev_ts=sd,
        n_threads=n_threads,
    )


def record(
    name: str,
    *,
    peak_gb: float,
    acc: float,
    status: str = rec.STATUS_OK,
    size_gb: float = 0.1,
    run_id: str = "r1",
    chance: float = 0.25,
    n: int = 100,
    acc_se: float = 0.04,
    host_info: rec.HostInfo = HOST,
    settings: rec.RunSettings | None = None,
    family: str = "qwen",
    tg_samples: Sequence[float] = (10.0, 12.0),
    pp_samples: Sequence[float] = (),
    speeds: Sequence[rec.SpeedResult] | None = None,
    started_at: str = "2026-01-01T00:00:00+0000",
) -> rec.ModelRecord:
    """One measured (or failed) variant: a single task with accuracy `acc` ± `acc_se`, a tg32
    test from `tg_samples`, a pp128 test when `pp_samples` is given, or exactly `speeds`."""
    ok = status == rec.STATUS_OK
    task = rec.TaskScore(
        task="t",
        version=1,
        category="x",
        chance=chance,
        n=n,
        acc=acc,
        acc_se=acc_se,
        acc_norm=acc,
        acc_norm_se=acc_se,
        elapsed_s=1.0,
    )
    if speeds is None:
        speeds = ([speed("pp128", pp_samples)] if pp_samples else []) + [speed("tg32", tg_samples)]
    return rec.ModelRecord(
        run_id=run_id,
        variant=rec.VariantInfo(
            name=name,
            family=family,
            model=name,
            quant="Q4_K_M",
            kind="instruct",
            size_bytes=int(size_gb * 1e9),
            sha256=name.ljust(64, "0")[:64],
        ),
        host=host_info,
        settings=settings or rec.RunSettings(),
        status=status,
        started_at=started_at,
        duration_s=1.0,
        load_s=0.5 if ok else None,
        speed=tuple(speeds) if ok else (),
        tasks=(task,) if ok else (),
        memory=rec.MemoryResult(
            peak_rss_bytes=int(peak_gb * 1e9),
            peak_uss_bytes=0,
            os_maxrss_bytes=0,
            n_samples=3,
            interval_ms=20.0,
        ),
        error="" if ok else "boom",
    )
