"""`edgeeval doctor`: what this llama-cpp-python build can use, and how to get a GPU build."""

from __future__ import annotations

import argparse
import dataclasses
import json

from edgeeval import settings


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `doctor`."""
    p = sub.add_parser(
        "doctor",
        help="show the llama.cpp build (CPU/Metal/CUDA/Vulkan), GPU offload, devices and "
        "memory, and the command that installs a GPU build",
    )
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from edgeeval.engine.backend import library_info
    from edgeeval.engine.doctor import diagnose, install_command, probe_platform

    found = diagnose(library_info(), probe_platform())
    if args.json:
        print(json.dumps(dataclasses.asdict(found), indent=1))
        return 0
    print(f"llama-cpp-python {found.llama_cpp_python_version}, built for: {found.build}")
    print(f"GPU offload:      {'yes' if found.gpu_offload else 'no'}")
    print(f"default --n-gpu-layers: {found.default_n_gpu_layers}")
    print(f"llama.cpp system info: {found.system_info}")
    print("devices:")
    for dev in found.devices:
        total = dev.get("memory_total_bytes") or 0
        free = dev.get("memory_free_bytes") or 0
        print(
            f"  {dev.get('type', '?'):11} {dev.get('backend', '?'):7} {dev.get('name', '?')}: "
            f"{dev.get('description', '')} ({free / settings.GB:.1f} of "
            f"{total / settings.GB:.1f} GB free)"
        )
    if not found.devices:
        print("  (ggml reports none)")
    if found.fix:
        print(
            f"\nthis machine has a GPU usable through {found.suggested_backend}, but this build "
            f"cannot offload to it. Rebuild llama-cpp-python with:\n  {found.fix}\n"
            f"(or `make install BACKEND={found.suggested_backend}`)"
        )
    elif not found.gpu_offload:
        print("\nno GPU found for llama.cpp; a GPU build is installed with one of:")
        for backend in ("metal", "cuda", "vulkan"):
            print(f"  {install_command(backend)}")
    return 0
