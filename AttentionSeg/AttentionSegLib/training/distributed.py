"""Multi-GPU / multi-node training: DistributedDataParallel under ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them the run is one process
(rank 0 of 1) and every call here is a no-op or the identity. Under DDP the process group uses
NCCL on CUDA and gloo on the CPU; every rank trains on its own share of each epoch's samples, and
rank 0 alone validates and writes files. Decisions that depend on a clock or on validation (stop,
learning rate under a time limit) are rank 0's, broadcast, so that every rank steps alike.

Example:
    >>> ranks = Ranks.from_environment({"RANK": "1", "WORLD_SIZE": "2"})
    >>> ranks.rank, ranks.world_size, ranks.distributed
    (1, 2, True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["Ranks"]


@dataclass(frozen=True)
class Ranks:
    """This process's place in the training job.

    Args:
        rank: global rank (0 writes files and validates).
        world_size: number of processes.
        local_rank: rank on this node (the CUDA device index).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] | None = None) -> Ranks:
        """The ranks ``torchrun`` set (one process when it did not)."""
        environment = os.environ if environment is None else environment
        return cls(
            int(environment.get("RANK", "0")),
            int(environment.get("WORLD_SIZE", "1")),
            int(environment.get("LOCAL_RANK", "0")),
        )

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        """Join the process group (once) when there are several processes."""
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @staticmethod
    def stop() -> None:
        """Leave the process group, if this process joined one."""
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model that trains: DistributedDataParallel around ``model`` under DDP, else ``model``."""
        if not self.distributed:
            return model
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def from_rank_0(self, values: list[float], device: torch.device) -> list[float]:
        """Rank 0's values, shared with every rank (so all ranks decide and step alike)."""
        if not self.distributed:
            return [float(value) for value in values]
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        return tensor.tolist()

    def agree(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's decision, shared with every rank (so all stop at the same epoch)."""
        return bool(self.from_rank_0([1.0 if flag else 0.0], device)[0])
