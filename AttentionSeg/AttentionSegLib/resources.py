"""What this machine has: memory available now (and, on CUDA, free GPU memory), for the checks
that refuse work which would not fit before it starts."""

from __future__ import annotations

import os

__all__ = ["available_memory_bytes", "format_bytes"]


def available_memory_bytes() -> int:
    """Memory a new allocation can get without swapping: MemAvailable of /proc/meminfo (Linux),
    else the physical memory (other systems)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40  # unknown: do not refuse on a guess


def format_bytes(n_bytes: float) -> str:
    """``1.5 GiB``, ``320 MiB``, ``931 TiB``."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.3g} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.3g} PiB"
