import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from edgeeval import metrics
from edgeeval.engine import bandwidth
from edgeeval.report.speed import speed_rows
from tests import builders


def test_tg_ceiling_is_bandwidth_over_bytes_per_token():
    assert metrics.tg_ceiling(50e9, 500_000_000) == pytest.approx(100.0)
    assert metrics.tg_ceiling(50e9, 400_000_000, 100_000_000) == pytest.approx(100.0)


def test_bandwidth_is_measured_once_per_host_then_cached(tmp_path, monkeypatch):
    calls = []

    def fake_measure(*, n_threads):
        calls.append(n_threads)
        return 12.5e9

    monkeypatch.setattr(bandwidth, "measure_bandwidth", fake_measure)
    assert bandwidth.cached_bandwidth("h1", n_threads=2, cache_dir=tmp_path) == 12.5e9
    assert bandwidth.cached_bandwidth("h1", n_threads=2, cache_dir=tmp_path) == 12.5e9
    assert calls == [2]
    assert bandwidth.cached_bandwidth("h2", n_threads=2, cache_dir=tmp_path) == 12.5e9
    assert calls == [2, 2]


def test_the_probe_copies_the_whole_buffer_each_round_and_keeps_the_best_rate(monkeypatch):
    """Read + write bytes over the fastest round's time, with a fake clock: rounds of 0.5 s,
    0.25 s and 0.4 s moving 8 MiB (read) + 8 MiB (written) give 16 MiB / 0.25 s."""
    ticks = iter([0.0, 0.5, 10.0, 10.25, 20.0, 20.4])
    monkeypatch.setattr(bandwidth, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    copied = []
    real_copyto = np.copyto

    def counting_copyto(dst, src):
        real_copyto(dst, src)
        copied.append((dst.nbytes, bool((dst == 1).all())))

    monkeypatch.setattr(np, "copyto", counting_copyto)
    rate = bandwidth.measure_bandwidth(n_threads=2, total_bytes=8 * 2**20, rounds=3)
    assert copied == [(4 * 2**20, True)] * 6  # two threads, three rounds, every byte copied
    assert rate == 2 * 8 * 2**20 / 0.25


@pytest.mark.parametrize(
    ("gpu_offload", "n_gpu_layers", "has_roofline"),
    [
        (False, 0, True),  # CPU build
        (True, 0, True),  # a GPU build asked to keep every layer on the CPU
        (False, 99, True),  # layers asked for, but the build cannot offload: all on the CPU
        (True, 99, False),  # layers on the GPU: the host's bandwidth is not the ceiling
        (True, -1, False),
    ],
)
def test_the_host_roofline_is_given_only_when_generation_reads_host_memory(
    gpu_offload, n_gpu_layers, has_roofline
):
    host = builders.host("h9", "box", gpu_offload=gpu_offload, mem_bandwidth_bytes_per_s=20e9)
    tg = dataclasses.replace(builders.speed("tg32", [40.0, 44.0]), n_gpu_layers=n_gpu_layers)
    record = dataclasses.replace(
        builders.record("m", peak_gb=1.0, acc=0.5, host_info=host, speeds=[tg]),
        weights_bytes=400_000_000,
    )
    (row,) = speed_rows([record])
    if has_roofline:
        assert row["roofline_ts"] == pytest.approx(20e9 / 400_000_000)  # no KV facts: weights
        assert row["roofline_efficiency"] == pytest.approx(42.0 / 50.0)
    else:
        assert row["roofline_ts"] is None and row["roofline_efficiency"] is None
