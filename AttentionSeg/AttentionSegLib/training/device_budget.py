"""The device budget: what one training step may use on the device a run plans for (the experiment
planner fits the patch, widths and batch size to it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from AttentionSegLib.errors import AttentionSegError

__all__ = ["DeviceBudget"]


@dataclass(frozen=True)
class DeviceBudget:
    """What a training step may use.

    Attributes:
        kind: "cpu" or "cuda".
        memory_bytes: memory for one training step (GPU memory, or a share of the RAM).
        threads: CPU threads (compute budget on a CPU).
        name: for messages.
    """

    kind: str
    memory_bytes: int
    threads: int
    name: str

    @classmethod
    def for_device(cls, device: str = "auto", gpu_memory_gib: float | None = None) -> DeviceBudget:
        """The budget of ``device`` here, or of a GPU with ``gpu_memory_gib`` (planned even where
        none is present)."""
        if gpu_memory_gib is not None:
            if not gpu_memory_gib > 0:
                raise AttentionSegError(f"--gpu-memory must be positive GiB, got {gpu_memory_gib}")
            return cls("cuda", int(gpu_memory_gib * 2**30 * 0.85), os.cpu_count() or 1, f"GPU {gpu_memory_gib:g} GiB")
        import torch

        from AttentionSegLib.devices import resolve_device

        resolved = resolve_device(device)
        if resolved.type == "cuda":
            properties = torch.cuda.get_device_properties(resolved)
            memory = int(properties.total_memory * 0.85)  # CUDA context and allocator slack
            return cls(
                "cuda", memory, os.cpu_count() or 1, f"{properties.name} {properties.total_memory / 2**30:.0f} GiB"
            )
        ram = _physical_memory_bytes()
        threads = torch.get_num_threads()
        # A step may use half the RAM (at most 12 GiB): the cases themselves are held in memory too.
        return cls("cpu", int(min(ram / 2, 12 * 2**30)), threads, f"CPU, {threads} threads")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "memory_bytes": self.memory_bytes, "threads": self.threads, "name": self.name}


def _physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30
