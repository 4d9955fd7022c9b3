"""A 2D network run on the slices of 3D volumes (``--slice-wise``).

The wrapper takes (B, C, 1, H, W) slabs, so that cropping, augmentation and sliding-window
inference stay 3D with a (1, h, w) window; the model file stores the bare 2D network.

Example:
    >>> from AttentionSegLib.models import build_model
    >>> model = SliceWise(build_model("unet", 2, 1, 3, (32, 32), channels=[4, 8], strides=[2]))
    >>> model(torch.zeros(2, 1, 1, 32, 32)).shape
    torch.Size([2, 3, 1, 32, 32])
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["SliceWise"]


class SliceWise(nn.Module):
    """A 2D network applied to (B, C, 1, H, W) slabs of a 3D volume.

    Args:
        network: the 2D network; its extra inputs (a clinical vector) pass through unchanged. Deep
            supervision's list of outputs is returned as a list of slabs.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, *args: torch.Tensor):
        output = self.network(x.squeeze(2), *args)
        if isinstance(output, list):
            return [item.unsqueeze(2) for item in output]
        return output.unsqueeze(2)
