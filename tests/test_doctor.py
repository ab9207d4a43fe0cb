"""GPU by default where there is one, and `edgeeval doctor`. No GPU is on the test machine: the
platform facts (llama.cpp's build info, ggml's devices, the OS and drivers) are mocked."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from edgeeval.cli import bench as cli_bench
from edgeeval.cli.main import build_parser, main
from edgeeval.engine import backend, doctor
from edgeeval.engine.doctor import Platform, diagnose, probe_platform
from edgeeval.engine.host import LibraryInfo

CPU_ONLY = LibraryInfo(
    llama_cpp_python_version="0.3.36",
    system_info="CPU : SSE3 = 1 | AVX2 = 1 |",
    gpu_offload=False,
    devices=({"name": "CPU", "description": "EPYC", "type": "CPU", "backend": "CPU"},),
)
METAL = LibraryInfo(
    llama_cpp_python_version="0.3.36",
    system_info="Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 |",
    gpu_offload=True,
    devices=(
        {
            "name": "Metal",
            "description": "Apple M3 Pro",
            "type": "GPU",
            "backend": "Metal",
            "memory_free_bytes": 12 * 10**9,
            "memory_total_bytes": 18 * 10**9,
        },
    ),
)
CUDA = dataclasses.replace(
    METAL,
    system_info="CUDA : ARCHS = 900 | CPU : AVX2 = 1 |",
    devices=({**METAL.devices[0], "name": "CUDA0", "backend": "CUDA"},),
)
MAC = Platform("darwin", "arm64", nvidia=False, vulkan=False)
NVIDIA_LINUX = Platform("linux", "x86_64", nvidia=True, vulkan=False)
PLAIN_LINUX = Platform("linux", "x86_64", nvidia=False, vulkan=False)


def test_cpu_build_on_a_mac_says_how_to_get_metal():
    found = diagnose(CPU_ONLY, MAC)
    assert (found.build, found.gpu_offload, found.default_n_gpu_layers) == ("CPU", False, 0)
    assert found.fix == (
        'CMAKE_ARGS="-DGGML_METAL=on" pip install --force-reinstall --no-cache-dir '
        "llama-cpp-python==0.3.36"
    )


def test_cpu_build_with_an_nvidia_driver_suggests_cuda():
    assert "-DGGML_CUDA=on" in str(diagnose(CPU_ONLY, NVIDIA_LINUX).fix)


@pytest.mark.parametrize(("library", "build"), [(METAL, "Metal"), (CUDA, "CUDA")])
def test_gpu_build_offloads_all_layers_and_needs_no_fix(library, build):
    found = diagnose(library, MAC)
    assert (found.build, found.default_n_gpu_layers, found.fix) == (build, 99, None)


def test_no_gpu_anywhere_means_no_fix_and_zero_layers():
    found = diagnose(CPU_ONLY, PLAIN_LINUX)
    assert (found.fix, found.default_n_gpu_layers, found.suggested_backend) == (None, 0, None)


def test_platform_probe_reads_drivers_and_tools():
    plat = probe_platform(
        which=lambda name: "/usr/bin/vulkaninfo" if name == "vulkaninfo" else None,
        exists=lambda path: path == "/proc/driver/nvidia/version",
    )
    assert (plat.nvidia, plat.vulkan) == (True, True)
    assert doctor.suggested_backend(plat) == "cuda"


def _bench_args(*extra: str):
    return build_parser().parse_args(["bench", *extra])


@pytest.mark.parametrize(("library", "layers"), [(METAL, 99), (CPU_ONLY, 0)])
def test_bench_offloads_all_layers_by_default_only_with_gpu_offload(monkeypatch, library, layers):
    monkeypatch.setattr(backend, "library_info", lambda: library)
    assert cli_bench.run_settings_from_args(_bench_args()).n_gpu_layers == layers


def test_an_explicit_n_gpu_layers_wins(monkeypatch):
    monkeypatch.setattr(backend, "library_info", lambda: METAL)
    assert cli_bench.run_settings_from_args(_bench_args("--n-gpu-layers", "0")).n_gpu_layers == 0


def test_doctor_prints_build_devices_and_the_fix(monkeypatch, capsys):
    monkeypatch.setattr(backend, "library_info", lambda: CPU_ONLY)
    monkeypatch.setattr(doctor, "probe_platform", lambda: MAC)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "built for: CPU" in out and "GPU offload:      no" in out
    assert 'CMAKE_ARGS="-DGGML_METAL=on" pip install --force-reinstall --no-cache-dir' in out
    assert "make install BACKEND=metal" in out


def test_doctor_json_lists_devices_and_memory(monkeypatch, capsys):
    monkeypatch.setattr(backend, "library_info", lambda: CUDA)
    monkeypatch.setattr(doctor, "probe_platform", lambda: NVIDIA_LINUX)
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["build"] == "CUDA" and data["default_n_gpu_layers"] == 99
    assert data["devices"][0]["memory_total_bytes"] == 18 * 10**9 and data["fix"] is None


def test_this_machines_real_build_is_described(capsys):
    """Runs the real probe on this machine's llama-cpp-python (whatever it was built for)."""
    pytest.importorskip("llama_cpp")
    info = backend.library_info()
    assert isinstance(info, LibraryInfo) and info.llama_cpp_python_version == "0.3.36"
    assert info.devices and any(d["type"] == "CPU" for d in info.devices)
    assert main(["doctor"]) == 0
    assert "llama-cpp-python 0.3.36" in capsys.readouterr().out


def test_report_says_which_backend_and_device_ran():
    from edgeeval.records import RunSettings
    from edgeeval.report.sections import ran_on as _ran_on
    from tests.builders import host

    gpu = host(
        "h", "mac", backend="Metal", gpu_offload=True, gpu_devices="Metal: Apple M3 (18.0 GB)"
    )
    assert _ran_on(gpu, RunSettings(n_gpu_layers=99)) == (
        "Metal, 99 layers offloaded to Metal: Apple M3 (18.0 GB)"
    )
    assert _ran_on(gpu, RunSettings(n_gpu_layers=0)) == "Metal build, all layers on the CPU"
    assert _ran_on(host("h", "pc"), RunSettings()) == "CPU"


def _make_dry_run(venv, backend: str) -> str:
    import shutil
    import subprocess

    from tests.conftest import REPO

    if shutil.which("make") is None:
        pytest.skip("needs make")
    done = subprocess.run(
        ["make", "-n", "-C", str(REPO), "install", f"BACKEND={backend}", f"VENV={venv}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_backend_rebuilds_without_pips_cache_only_when_the_backend_changes(tmp_path):
    """`make install BACKEND=...`, dry-run: nothing is built here."""
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".edgeeval-installed").touch()
    # The install stamp is newer than pyproject.toml, so only the backend step can run.
    os.utime(venv / ".edgeeval-installed", (2**31, 2**31))
    cuda = _make_dry_run(venv, "cuda")
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in cuda
    assert "pip install --force-reinstall --no-cache-dir --no-deps llama-cpp-python==0.3.36" in cuda
    (venv / ".llama-backend-cuda").touch()
    assert "pip install" not in _make_dry_run(venv, "cuda")  # same backend: nothing to do
    vulkan = _make_dry_run(venv, "vulkan")
    assert 'CMAKE_ARGS="-DGGML_VULKAN=on"' in vulkan and "rm -f" in vulkan
