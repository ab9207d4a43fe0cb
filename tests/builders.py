"""Hand-built records for tests of the later stages (no model involved)."""

from __future__ import annotations

from edgeeval import records as rec

HOST = rec.HostInfo(host_id="h1", hostname="box", os="Linux", os_version="6", machine="x86_64",
                    cpu_model="cpu", cores_physical=2, cores_logical=2, ram_bytes=24 * 10**9,
                    python_version="3.11", edgeeval_version="0", llama_cpp_python_version="0",
                    llama_cpp_system_info="CPU", backend="CPU", gpu_offload=False)


def record(name: str, *, peak_gb: float, acc: float, status: str = rec.STATUS_OK,
           size_gb: float = 0.1, run_id: str = "r1", chance: float = 0.25,
           n: int = 100) -> rec.ModelRecord:
    ok = status == rec.STATUS_OK
    task = rec.TaskScore(task="t", version=1, category="x", chance=chance, n=n, acc=acc,
                         acc_se=0.04, acc_norm=acc, acc_norm_se=0.04, elapsed_s=1.0)
    speed = rec.SpeedResult(test="tg32", n_prompt=0, n_gen=32, n_depth=0, samples_ns=(1, 1),
                            samples_ts=(10.0, 12.0), avg_ts=11.0, stddev_ts=1.4)
    return rec.ModelRecord(
        run_id=run_id,
        variant=rec.VariantInfo(name=name, family="qwen", model=name, quant="Q4_K_M",
                                kind="instruct", size_bytes=int(size_gb * 1e9),
                                sha256=name.ljust(64, "0")[:64]),
        host=HOST, settings=rec.RunSettings(), status=status, started_at="now", duration_s=1.0,
        load_s=0.5 if ok else None, speed=(speed,) if ok else (), tasks=(task,) if ok else (),
        memory=rec.MemoryResult(peak_rss_bytes=int(peak_gb * 1e9), peak_uss_bytes=0,
                                os_maxrss_bytes=0, n_samples=3, interval_ms=20.0),
        error="" if ok else "boom")
