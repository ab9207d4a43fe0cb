"""Energy counters around a timed region: Linux RAPL (powercap), NVIDIA NVML, macOS powermetrics.

One small interface: `meter.start()` returns an opaque mark, `meter.stop(mark)` the joules
spent since, with the method and the domains measured. `default_meter()` picks what this
machine exposes (cached per process); where nothing is exposed it returns an `Unavailable`
meter whose `reason` says why ("not available here: ..."), never a reading of 0 J.

- RAPL: `/sys/class/powercap/intel-rapl:N/energy_uj` (a package) and its sub-zone named
  `dram`, in microjoules. AMD CPUs expose the same `intel-rapl` zones on Linux 5.8 and later
  (the package domain; DRAM where the platform has it). Core/uncore sub-zones are left out,
  because the package already includes them. Each counter wraps at its
  `max_energy_range_uj`: a reading lower than the one before means one wrap, so the spend is
  `max - before + after` (two wraps within one timed region would need minutes of a whole
  package at full power; not handled). Since Linux 5.10 `energy_uj` is readable by root only:
  the reason then says so.
- NVML: `nvmlDeviceGetTotalEnergyConsumption` per GPU (millijoules since the driver loaded,
  Volta and later), through the optional `nvidia-ml-py` package (module `pynvml`, the `cuda`
  extra), imported only when asked.
- macOS: `powermetrics --samplers cpu_power,gpu_power` sampled while the region runs; it
  needs root, and without it the reason says to run with sudo. The figure is the mean
  "Combined Power" times the region's wall time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

POWERCAP_ROOT = Path("/sys/class/powercap")
NOT_AVAILABLE = "not available here"


@dataclass(frozen=True)
class Energy:
    """Joules spent between a start and a stop, how they were read and over which domains."""

    joules: float
    method: str  # "rapl", "nvml", "powermetrics", or several joined with "+"
    domains: tuple[str, ...]


class EnergyMeter(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def domains(self) -> tuple[str, ...]: ...

    def start(self) -> Any: ...

    def stop(self, mark: Any) -> Energy | None: ...


@dataclass(frozen=True)
class Unavailable:
    """No counter on this machine: every stop gives None, `reason` says why."""

    reason: str
    method: str = ""
    domains: tuple[str, ...] = ()

    def start(self) -> None:
        return None

    def stop(self, mark: Any) -> Energy | None:
        return None


# --- Linux RAPL through powercap ------------------------------------------------------------


@dataclass(frozen=True)
class RaplZone:
    name: str  # "package-0", "dram" (prefixed with its package: "package-0/dram")
    energy_file: Path
    max_range_uj: int


def wrapped_delta(before: int, after: int, max_range: int) -> int:
    """Counter units spent from `before` to `after` on a counter that wraps at `max_range`.

    >>> wrapped_delta(100, 250, 1000), wrapped_delta(900, 50, 1000)
    (150, 150)
    """
    return after - before if after >= before else max_range - before + after


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def rapl_zones(root: Path = POWERCAP_ROOT) -> tuple[list[RaplZone], str]:
    """(package and DRAM zones whose counters can be read, why none when the list is empty)."""
    if not root.is_dir():
        return [], f"{root} does not exist (no powercap driver: a VM or a non-Linux kernel)"
    packages = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
    zones: list[RaplZone] = []
    unreadable: list[str] = []
    for pkg in packages:
        try:
            pkg_name = (pkg / "name").read_text().strip()
        except OSError:
            continue
        candidates = [(pkg_name, pkg)]
        for sub in sorted(pkg.glob(f"{pkg.name}:*")):
            try:
                if (sub / "name").read_text().strip() == "dram":
                    candidates.append((f"{pkg_name}/dram", sub))
            except OSError:
                continue
        for name, zone in candidates:
            try:
                _read_int(zone / "energy_uj")
                max_range = _read_int(zone / "max_energy_range_uj")
            except PermissionError:
                unreadable.append(str(zone / "energy_uj"))
                continue
            except (OSError, ValueError):
                continue
            zones.append(RaplZone(name, zone / "energy_uj", max_range))
    if zones:
        return zones, ""
    if unreadable:
        return [], (
            f"RAPL counters exist but only root may read them ({unreadable[0]}); run as root "
            "or make them readable (sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj "
            "/sys/class/powercap/intel-rapl:*:*/energy_uj)"
        )
    return [], f"no readable RAPL package zone under {root}"


@dataclass(frozen=True)
class RaplMeter:
    zones: tuple[RaplZone, ...]
    method: str = "rapl"

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(z.name for z in self.zones)

    def start(self) -> list[int] | None:
        try:
            return [_read_int(z.energy_file) for z in self.zones]
        except (OSError, ValueError):  # a counter gone unreadable: no reading, no crash
            return None

    def stop(self, mark: list[int] | None) -> Energy | None:
        after = self.start()
        if mark is None or after is None:
            return None
        spent_uj = sum(
            wrapped_delta(before, now, zone.max_range_uj)
            for zone, before, now in zip(self.zones, mark, after, strict=True)
        )
        return Energy(spent_uj / 1e6, self.method, self.domains)


# --- NVIDIA NVML ----------------------------------------------------------------------------


def _import_pynvml() -> ModuleType | None:
    try:
        import pynvml  # the optional nvidia-ml-py package (the `cuda` extra)
    except ImportError:
        return None
    return pynvml


def nvml_meter(nvml: ModuleType | None = None) -> tuple[NvmlMeter | None, str]:
    """(a meter over every GPU whose total energy counter answers, why not when None)."""
    nvml = nvml if nvml is not None else _import_pynvml()
    if nvml is None:
        return None, "no NVML (install the cuda extra: pip install 'edgeeval[cuda]')"
    try:
        nvml.nvmlInit()
        count = nvml.nvmlDeviceGetCount()
    except Exception as exc:  # NVMLError: no driver, no device
        return None, f"NVML did not start ({type(exc).__name__}: {exc})"
    handles, names = [], []
    for index in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # NotSupported before Volta
            name = nvml.nvmlDeviceGetName(handle)
        except Exception:
            continue
        handles.append(handle)
        names.append(f"gpu{index}: {name.decode() if isinstance(name, bytes) else name}")
    if not handles:
        return None, f"NVML found {count} GPU(s), none with a total energy counter"
    return NvmlMeter(nvml, tuple(handles), tuple(names)), ""


@dataclass(frozen=True)
class NvmlMeter:
    nvml: ModuleType
    handles: tuple[Any, ...]
    domains: tuple[str, ...]
    method: str = "nvml"

    def start(self) -> list[int] | None:
        try:
            return [self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles]
        except Exception:  # NVMLError (a GPU fallen off the bus): no reading, no crash
            return None

    def stop(self, mark: list[int] | None) -> Energy | None:
        after = self.start()
        if mark is None or after is None:
            return None
        spent_mj = sum(b - a for a, b in zip(mark, after, strict=True))  # u64: never wraps
        return Energy(spent_mj / 1e3, self.method, self.domains)


# --- macOS powermetrics ---------------------------------------------------------------------

_COMBINED = re.compile(r"Combined Power \(CPU \+ GPU \+ ANE\):\s*([\d.]+)\s*mW")
_CPU_GPU = re.compile(r"^(CPU|GPU) Power:\s*([\d.]+)\s*mW", re.MULTILINE)


def powermetrics_watts(text: str) -> float | None:
    """Mean power in watts over the samples of `powermetrics` output, None without samples.

    >>> powermetrics_watts("Combined Power (CPU + GPU + ANE): 1500 mW\\n"
    ...                    "Combined Power (CPU + GPU + ANE): 2500 mW\\n")
    2.0
    """
    combined = [float(v) for v in _COMBINED.findall(text)]
    if not combined:  # older macOS: "CPU Power" and "GPU Power" lines, added sample by sample
        found = _CPU_GPU.findall(text)
        cpu = [float(v) for k, v in found if k == "CPU"]
        gpu = [float(v) for k, v in found if k == "GPU"]
        combined = [c + (gpu[i] if i < len(gpu) else 0.0) for i, c in enumerate(cpu)]
    return sum(combined) / len(combined) / 1e3 if combined else None


@dataclass
class PowermetricsMeter:
    """Samples `powermetrics` every `interval_ms` while a region runs (needs root)."""

    interval_ms: int = 100
    popen: Callable[..., Any] = subprocess.Popen
    clock: Callable[[], float] = time.perf_counter
    method: str = "powermetrics"
    domains: tuple[str, ...] = ("cpu+gpu+ane",)

    def start(self) -> tuple[Any, float] | None:
        try:
            proc = self.popen(
                ["powermetrics", "--samplers", "cpu_power,gpu_power", "-i", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            return None
        return proc, self.clock()

    def stop(self, mark: tuple[Any, float] | None) -> Energy | None:
        if mark is None:
            return None
        proc, started = mark
        elapsed = self.clock() - started
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        watts = powermetrics_watts(out or "")
        return None if watts is None else Energy(watts * elapsed, self.method, self.domains)


# --- which one ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Combined:
    """Several meters read together (a CPU package and a GPU): their joules add up."""

    meters: tuple[EnergyMeter, ...]

    @property
    def method(self) -> str:
        return "+".join(m.method for m in self.meters)

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(d for m in self.meters for d in m.domains)

    def start(self) -> list[Any]:
        return [m.start() for m in self.meters]

    def stop(self, mark: list[Any]) -> Energy | None:
        readings = [m.stop(k) for m, k in zip(self.meters, mark, strict=True)]
        if any(r is None for r in readings):
            return None
        return Energy(sum(r.joules for r in readings if r), self.method, self.domains)


def find_meter(
    *,
    platform: str = sys.platform,
    powercap_root: Path = POWERCAP_ROOT,
    nvml: ModuleType | None = None,
    use_nvml: bool = True,
    is_root: bool | None = None,
) -> EnergyMeter:
    """Every counter this machine exposes, combined; `Unavailable` with the reasons if none."""
    found: list[EnergyMeter] = []
    reasons: list[str] = []
    if platform.startswith("linux"):
        zones, why = rapl_zones(powercap_root)
        if zones:
            found.append(RaplMeter(tuple(zones)))
        else:
            reasons.append(f"RAPL: {why}")
    if platform == "darwin":
        root = is_root if is_root is not None else os.geteuid() == 0
        if root:
            found.append(PowermetricsMeter())
        else:
            reasons.append("powermetrics: needs root (run edgeeval with sudo to measure energy)")
    if use_nvml:
        meter, why = nvml_meter(nvml)
        if meter is not None:
            found.append(meter)
        else:
            reasons.append(f"NVML: {why}")
    if not found:
        return Unavailable(f"{NOT_AVAILABLE} ({'; '.join(reasons) or platform})")
    return found[0] if len(found) == 1 else Combined(tuple(found))


_DEFAULT: EnergyMeter | None = None


def default_meter() -> EnergyMeter:
    """This process's meter, found once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = find_meter()
    return _DEFAULT
