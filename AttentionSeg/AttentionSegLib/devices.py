"""Device choice shared by training and inference: ``auto`` takes CUDA when present."""

from __future__ import annotations

import contextlib

from AttentionSegLib.errors import AttentionSegError

__all__ = ["DEVICE_CHOICES", "resolve_device", "autocast", "is_out_of_memory"]

DEVICE_CHOICES = ("auto", "cuda", "cpu")


def resolve_device(name: str = "auto", local_rank: int = 0):
    """``auto``: CUDA (device ``local_rank``) when available, else the CPU; ``cuda`` without a GPU
    is an error rather than a silent CPU run. Returns a ``torch.device``."""
    import torch  # here, so that the command line starts without loading PyTorch

    if name not in DEVICE_CHOICES:
        raise AttentionSegError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AttentionSegError("--device cuda: no CUDA GPU is available to PyTorch on this machine (use auto or cpu)")
    return torch.device("cuda", local_rank)


def autocast(device):
    """Mixed precision on CUDA (bfloat16 where supported, else float16); nothing on the CPU."""
    import torch

    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()
