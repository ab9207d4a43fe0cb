"""The macOS and CUDA memory paths, with the platform readings mocked."""

import os
import sys
from types import SimpleNamespace

from edgeeval.engine import process
from edgeeval.engine.memprobe import NvmlReader, macos_footprint

PY = sys.executable


class FakeLibproc:
    def __init__(self, footprint: int, status: int = 0) -> None:
        self.footprint, self.status, self.calls = footprint, status, []

    def proc_pid_rusage(self, pid, flavor, ref):
        self.calls.append((pid, flavor))
        ref._obj.fields[7] = self.footprint  # ri_phys_footprint
        ref._obj.fields[6] = self.footprint // 2  # ri_resident_size, must not be picked
        return self.status


def test_macos_footprint_reads_phys_footprint_from_rusage_v2():
    lib = FakeLibproc(3_000_000_000)
    assert macos_footprint(42, libproc=lib, platform="darwin") == 3_000_000_000
    assert lib.calls == [(42, 2)]


def test_macos_footprint_is_none_elsewhere_or_on_failure():
    assert macos_footprint(42, libproc=FakeLibproc(1), platform="linux") is None
    assert macos_footprint(42, libproc=FakeLibproc(1, status=-1), platform="darwin") is None


def fake_nvml(per_pid: dict[int, int], devices: int = 2):
    return SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: devices,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetComputeRunningProcesses=lambda handle: [
            SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in per_pid.items()
        ],
    )


def test_nvml_sums_the_process_memory_over_devices():
    reader = NvmlReader(fake_nvml({100: 500, 200: 7}))
    assert reader.available
    assert reader.process_bytes(100) == 1000  # 500 on each of two devices
    assert reader.process_bytes(300) is None


def test_nvml_without_a_driver_is_unavailable():
    def no_driver():
        raise RuntimeError("NVML Shared Library Not Found")

    nvml = fake_nvml({})
    nvml.nvmlInit = no_driver
    reader = NvmlReader(nvml)
    assert not reader.available and reader.process_bytes(1) is None


class AnyPidNvml:
    """Answers for whatever pid is asked: the child's pid is unknown before it starts."""

    def __init__(self):
        self.asked = []

    def process_bytes(self, pid):
        self.asked.append(pid)
        return 2_500_000_000


def test_the_sampler_records_gpu_and_footprint_peaks(monkeypatch):
    monkeypatch.setattr(process, "macos_footprint", lambda pid: 1_234_000_000)
    nvml = AnyPidNvml()
    outcome = process.run_child([PY, "-c", "sum(range(10**6))"], timeout_s=60, nvml=nvml)
    assert outcome.returncode == 0
    assert outcome.peak_gpu_bytes == 2_500_000_000
    assert outcome.peak_footprint_bytes == 1_234_000_000
    assert nvml.asked and all(pid == nvml.asked[0] for pid in nvml.asked)


class GrowingNvml:
    """Device memory that grows once the child says its accuracy phase began (a file flag)."""

    def __init__(self, flag):
        self.flag = flag

    def process_bytes(self, pid):
        return 3_000_000_000 if self.flag.exists() else 1_000_000_000


def test_the_device_peak_before_the_accuracy_phase_is_kept_apart(tmp_path):
    """The batched accuracy phase adds B sequences' KV cache on the GPU; the device peak up to
    the "accuracy" event is what the ranking adds to the host peak."""
    flag = tmp_path / "accuracy"
    child = (
        "import time\n"
        "from edgeeval.engine.process import emit\n"
        "time.sleep(0.5)\n"
        "emit('accuracy')\n"
        f"open({str(flag)!r}, 'w').close()\n"
        "time.sleep(0.5)\n"
    )
    outcome = process.run_child([PY, "-c", child], timeout_s=60, nvml=GrowingNvml(flag))
    assert outcome.returncode == 0
    assert outcome.gpu_before_accuracy_bytes == 1_000_000_000
    assert outcome.peak_gpu_bytes == 3_000_000_000


def test_rss_and_high_water_mark_come_from_one_status_read():
    import psutil
    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip("/proc/PID/status is Linux's")
    rss, hwm = process.read_rss_hwm(os.getpid())
    assert rss is not None and hwm is not None and hwm >= rss
    assert abs(rss - psutil.Process().memory_info().rss) < 0.05 * rss  # same counter, moments apart
    assert process.read_vm_hwm(os.getpid()) >= hwm
    assert process.read_rss_hwm(2**22 + 12345) == (None, None)  # no such process
