"""Facts for `edgeeval doctor` and the one place the default GPU offload is decided.

What llama-cpp-python was built with (CPU, Metal, CUDA, Vulkan, ... from llama.cpp's system info
and ggml's backend devices), whether it can offload layers, the devices and their memory, and,
when the build cannot use a GPU this machine has, the exact command that installs one that can.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeeval.engine.host import LibraryInfo, backend_name
from edgeeval.errors import ConfigError
from edgeeval.records import RunSettings, kv_pairs

if TYPE_CHECKING:  # backend loads numpy and llama_cpp: the check takes its probe as given
    from edgeeval.engine.backend import FlashSupport

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
#: Layers offloaded by default when the build can offload (llama-bench's default, "all").
ALL_LAYERS = 99
#: CMAKE_ARGS per GPU backend for building llama-cpp-python.
CMAKE_ARGS = {
    "metal": "-DGGML_METAL=on",
    "cuda": "-DGGML_CUDA=on",
    "vulkan": "-DGGML_VULKAN=on",
    "cpu": "-DGGML_METAL=off",
}


def default_n_gpu_layers(library: LibraryInfo) -> int:
    """Layers to offload when the user did not say: all (ALL_LAYERS) when llama.cpp reports GPU
    offload support, else 0. `library` is engine.backend.library_info().

    >>> default_n_gpu_layers(LibraryInfo(gpu_offload=True))
    99
    >>> default_n_gpu_layers(LibraryInfo(gpu_offload=False))
    0
    """
    return ALL_LAYERS if library.gpu_offload else 0


def install_command(backend: str) -> str:
    """The pip command that (re)builds llama-cpp-python for `backend` (metal, cuda, vulkan, cpu),
    bypassing pip's wheel cache so a wheel built for another backend is never reused.

    >>> install_command("cuda").split(" pip install ")
    ['CMAKE_ARGS="-DGGML_CUDA=on"', '--force-reinstall --no-cache-dir llama-cpp-python==0.3.36']
    """
    return (
        f'CMAKE_ARGS="{CMAKE_ARGS[backend]}" pip install --force-reinstall --no-cache-dir '
        f"{LLAMA_CPP_PYTHON}"
    )


def _exists(path: str) -> bool:
    return Path(path).exists()


@dataclass(frozen=True)
class Platform:
    """What the machine offers a GPU build; gathered by `probe_platform` (mockable in tests)."""

    system: str  # sys.platform
    machine: str
    nvidia: bool  # an NVIDIA driver (nvidia-smi or /proc/driver/nvidia)
    vulkan: bool  # a Vulkan loader/tool (vulkaninfo)


def probe_platform(
    which: Callable[[str], str | None] = shutil.which, exists: Callable[[str], bool] = _exists
) -> Platform:
    """This machine's Platform."""
    import platform

    return Platform(
        system=sys.platform,
        machine=platform.machine().lower(),
        nvidia=bool(which("nvidia-smi")) or exists("/proc/driver/nvidia/version"),
        vulkan=bool(which("vulkaninfo")),
    )


def suggested_backend(plat: Platform) -> str | None:
    """The GPU backend this machine can use (metal, cuda, vulkan), or None.

    >>> suggested_backend(Platform("darwin", "arm64", False, False))
    'metal'
    >>> suggested_backend(Platform("linux", "x86_64", False, False)) is None
    True
    """
    if plat.system == "darwin" and plat.machine in ("arm64", "aarch64"):
        return "metal"
    if plat.nvidia:
        return "cuda"
    if plat.vulkan:
        return "vulkan"
    return None


@dataclass(frozen=True)
class Diagnosis:
    """Everything `edgeeval doctor` prints."""

    llama_cpp_python_version: str
    build: str  # CPU, Metal, CUDA, Vulkan, ...
    system_info: str
    gpu_offload: bool
    default_n_gpu_layers: int
    devices: list[dict[str, Any]] = field(default_factory=list)
    suggested_backend: str | None = None
    fix: str | None = None  # the command that gets a GPU build, when one would help


def diagnose(library: LibraryInfo, plat: Platform) -> Diagnosis:
    """The Diagnosis from `library` (engine.backend.library_info()) and `plat`."""
    system_info = library.system_info
    offload = library.gpu_offload
    devices = list(library.devices)
    gpu_backends = {d.get("backend") for d in devices if d.get("type") in ("GPU", "iGPU")}
    build = backend_name(system_info + " " + " ".join(map(str, gpu_backends)), offload)
    suggestion = suggested_backend(plat)
    fix = None
    if suggestion and not offload:
        fix = install_command(suggestion)
    return Diagnosis(
        llama_cpp_python_version=library.llama_cpp_python_version,
        build=build,
        system_info=system_info,
        gpu_offload=offload,
        default_n_gpu_layers=default_n_gpu_layers(library),
        devices=devices,
        suggested_backend=suggestion,
        fix=fix,
    )


#: engine.backend.flash_attn_support's signature: each device's answer per (K, V) pair, or None
FlashProbe = Callable[[Sequence[tuple[str, str]]], "Sequence[FlashSupport] | None"]


def check_flash_attn(settings: RunSettings, probe: FlashProbe) -> None:
    """Refuse, before anything loads, flash attention forced on (`-fa on`) where this build's
    devices that would run the layers cannot run it for the run's KV cache types (`probe` is
    engine.backend.flash_attn_support: ggml's own answer per device). llama.cpp would not
    refuse: it runs the op on another device (the CPU), so the speed measured would not be
    flash attention's. `auto` and `off` are never refused (llama.cpp decides, or it is off);
    a build that cannot say (None) is not refused either."""
    if True not in (settings.flash_attn, *settings.sweep_flash_attn):
        return
    pairs = kv_pairs(settings)
    answers = probe(pairs)
    if not answers:
        return
    layers = settings.sweep_n_gpu_layers or (settings.n_gpu_layers,)
    gpus = {a.kind for a in answers if a.kind not in ("CPU", "accelerator")}
    kinds = ({"CPU"} if 0 in layers or not gpus else set()) | (gpus if set(layers) - {0} else set())
    for a in answers:
        if a.kind in kinds and not a.supported and (a.type_k, a.type_v) in pairs:
            raise ConfigError(
                f"-fa on: this llama.cpp build cannot run flash attention on {a.device} with "
                f"KV cache K {a.type_k} / V {a.type_v} (ggml's {a.device} backend lacks the op; "
                "llama.cpp would move it to the CPU); allowed here: -fa off, or -fa auto "
                "(llama.cpp decides), or other KV cache types",
                path="the command line",
                key="--flash-attn",
            )
