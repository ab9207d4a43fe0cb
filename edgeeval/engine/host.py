"""The host fingerprint stored on every record: CPU, cores, RAM, OS, llama.cpp build, backend."""

from __future__ import annotations

import hashlib
import platform
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from edgeeval import __version__, settings
from edgeeval.engine.bandwidth import cached_bandwidth
from edgeeval.records import HostInfo


@dataclass(frozen=True)
class LibraryInfo:
    """What the installed llama-cpp-python was built with (engine.backend.library_info): its
    version, llama.cpp's system info line, whether it can offload layers to a GPU, and ggml's
    devices (name, description, type, backend, memory_free_bytes, memory_total_bytes)."""

    llama_cpp_python_version: str = "unknown"
    system_info: str = ""
    gpu_offload: bool = False
    devices: tuple[dict[str, Any], ...] = ()
    build_commit: str = "unknown"  # ggml_commit()
    backends: tuple[str, ...] = ()  # ggml's backend registries ("CPU", "CUDA", ...)

    @property
    def backend(self) -> str:
        """CPU, Metal, CUDA, Vulkan, ... (see backend_name)."""
        return backend_name(self.system_info, self.gpu_offload)


def cpu_model() -> str:
    """Human CPU name: /proc/cpuinfo on Linux, sysctl on macOS, platform as a fallback."""
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def backend_name(system_info: str, gpu_offload: bool) -> str:
    """CPU, Metal, CUDA, Vulkan, ... as llama.cpp's system info string reports them."""
    upper = system_info.upper()
    for name, marker in (
        ("CUDA", "CUDA"),
        ("Metal", "METAL"),
        ("Vulkan", "VULKAN"),
        ("ROCm", "HIP"),
        ("SYCL", "SYCL"),
    ):
        if marker in upper:
            return name
    return "GPU" if gpu_offload else "CPU"


def gpu_devices_text(devices: Sequence[dict[str, Any]]) -> str:
    """ggml's GPU devices in one line: "CUDA0: NVIDIA H200 (141.0 GB)"; "" when none.

    >>> gpu_devices_text([{"type": "GPU", "name": "Metal", "description": "Apple M3",
    ...                    "memory_total_bytes": 17179869184}, {"type": "CPU", "name": "CPU"}])
    'Metal: Apple M3 (17.2 GB)'
    """
    shown = []
    for dev in devices:
        if isinstance(dev, dict) and dev.get("type") in ("GPU", "iGPU", "accelerator"):
            total = dev.get("memory_total_bytes") or 0
            memory = f" ({total / settings.GB:.1f} GB)" if total else ""
            shown.append(f"{dev.get('name', '?')}: {dev.get('description', '')}{memory}")
    return "; ".join(shown)


def device_descriptions(devices: Sequence[dict[str, Any]], types: tuple[str, ...]) -> str:
    """The descriptions of ggml's devices of `types`, ", "-joined: llama-bench's cpu_info
    (CPU and accelerator devices) and gpu_info (GPU and iGPU devices).

    >>> device_descriptions([{"type": "GPU", "description": "NVIDIA H200"},
    ...                      {"type": "CPU", "description": "AMD EPYC"}], ("GPU", "iGPU"))
    'NVIDIA H200'
    """
    return ", ".join(
        str(d.get("description", ""))
        for d in devices
        if isinstance(d, dict) and d.get("type") in types
    )


def physical_cores() -> int:
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def power_source() -> str:
    """ "ac" or "battery" on laptops where the OS tells, else "unknown" (desktops, servers)."""
    try:
        battery = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError):
        return "unknown"
    if battery is None or battery.power_plugged is None:
        return "unknown"
    return "ac" if battery.power_plugged else "battery"


def collect(library: LibraryInfo, *, bandwidth: bool = True) -> HostInfo:
    """Fingerprint this machine; `library` is backend.library_info(). With `bandwidth`, the
    memory bandwidth is measured (once per host, then cached)."""
    cpu = cpu_model()
    ram = psutil.virtual_memory().total
    system = platform.system()
    ident = "|".join(
        [
            socket.gethostname(),
            cpu,
            str(ram),
            system,
            platform.machine(),
            library.llama_cpp_python_version,
        ]
    )
    host_id = hashlib.sha256(ident.encode()).hexdigest()[:12]
    return HostInfo(
        host_id=host_id,
        hostname=socket.gethostname(),
        os=system,
        os_version=platform.release(),
        machine=platform.machine(),
        cpu_model=cpu,
        cores_physical=physical_cores(),
        cores_logical=psutil.cpu_count() or 1,
        ram_bytes=ram,
        python_version=platform.python_version(),
        edgeeval_version=__version__,
        llama_cpp_python_version=library.llama_cpp_python_version,
        llama_cpp_system_info=library.system_info,
        backend=library.backend,
        gpu_offload=library.gpu_offload,
        power_source=power_source(),
        gpu_devices=gpu_devices_text(library.devices),
        build_commit=library.build_commit,
        cpu_info=device_descriptions(library.devices, ("CPU", "accelerator")) or cpu,
        gpu_info=device_descriptions(library.devices, ("GPU", "iGPU")),
        backends=",".join(b for b in library.backends if b != "CPU") or "CPU",
        mem_bandwidth_bytes_per_s=cached_bandwidth(host_id, n_threads=physical_cores())
        if bandwidth
        else None,
    )
