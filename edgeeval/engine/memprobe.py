"""Platform-specific memory readings of another process, beyond psutil's RSS/USS.

- macOS: `phys_footprint` from proc_pid_rusage (what Activity Monitor shows as "Memory"); unlike
  RSS it includes the process's Metal (GPU) allocations on unified memory.
- CUDA: the device memory a process holds, through NVML (the `nvidia-ml-py` package, imported
  as `pynvml`) when it is installed and a driver is present.
Both return None when the platform does not provide the reading, so callers just skip it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

RUSAGE_INFO_V2 = 2
# struct rusage_info_v2: uuid[16] then u64 fields; ri_phys_footprint is the 8th u64
# (user_time, system_time, pkg_idle_wkups, interrupt_wkups, pageins, wired_size,
#  resident_size, phys_footprint, ...). The struct is 18 u64 fields + uuid in total for v2.
_FOOTPRINT_INDEX = 7
_V2_U64_FIELDS = 18


class _RusageInfoV2(ctypes.Structure):
    _fields_ = [("uuid", ctypes.c_uint8 * 16), ("fields", ctypes.c_uint64 * _V2_U64_FIELDS)]


def _load_libproc() -> Any | None:
    path = ctypes.util.find_library("proc")
    if not path:
        return None
    try:
        return ctypes.CDLL(path, use_errno=True)
    except OSError:
        return None


def macos_footprint(
    pid: int, *, libproc: Any | None = None, platform: str = sys.platform
) -> int | None:
    """phys_footprint of `pid` in bytes on macOS, else None. `libproc` is injectable for tests."""
    if platform != "darwin":
        return None
    lib = libproc or _load_libproc()
    if lib is None:
        return None
    info = _RusageInfoV2()
    if lib.proc_pid_rusage(int(pid), RUSAGE_INFO_V2, ctypes.byref(info)) != 0:
        return None
    return int(info.fields[_FOOTPRINT_INDEX])


class NvmlReader:
    """Device memory used by one process on NVIDIA GPUs, summed over devices."""

    def __init__(self, nvml: Any | None = None) -> None:
        self.nvml = nvml if nvml is not None else self._import()
        self.handles: list[Any] = []
        if self.nvml is None:
            return
        try:
            self.nvml.nvmlInit()
            count = self.nvml.nvmlDeviceGetCount()
            self.handles = [self.nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception:  # no driver, no device: NVML raises its own NVMLError types
            self.handles = []

    @staticmethod
    def _import() -> Any | None:
        try:
            import pynvml
        except ImportError:
            return None
        return pynvml

    @property
    def available(self) -> bool:
        return bool(self.handles)

    def process_bytes(self, pid: int) -> int | None:
        """Device memory held by `pid` (None when NVML cannot say)."""
        if not self.handles or self.nvml is None:
            return None
        total, seen = 0, False
        for handle in self.handles:
            try:
                procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception:
                continue
            for proc in procs:
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    total += int(proc.usedGpuMemory)
                    seen = True
        return total if seen else None
