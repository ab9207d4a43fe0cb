import pytest

from edgeeval import metrics
from edgeeval.engine import bandwidth


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


def test_the_probe_returns_a_plausible_rate():
    rate = bandwidth.measure_bandwidth(n_threads=2, total_bytes=32 * 2**20, rounds=2)
    assert 1e8 < rate < 1e13  # between 0.1 GB/s and 10 TB/s
