"""The machine a benchmark ran on, for its printed header: figures only hold for the CPU that made them."""
from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

FEATURES = ("avx2", "avx512_vnni", "avx512_bf16", "amx_bf16")  # what the engine's fast paths use (docs/performance.md)


def cpu() -> str:
    """e.g. "2 cores, AMD EPYC (avx2/avx512_vnni/avx512_bf16)", from /proc/cpuinfo (platform's name elsewhere)."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor() or platform.machine())
    flags = next((set(line.split(":", 1)[1].split()) for line in info.splitlines() if line.startswith("flags")), set())
    return f"{os.cpu_count()} cores, {name} ({'/'.join(f for f in FEATURES if f in flags) or 'no avx2'})"


def describe(*packages: str) -> str:
    """The CPU and the versions of torch and `packages` (those installed)."""
    versions = []
    for name in ("torch", *packages):
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return f"{cpu()}; {', '.join(versions)}"
