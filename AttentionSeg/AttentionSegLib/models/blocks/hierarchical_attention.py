"""Hierarchical-attentional perception (HAP), DANIE's local attention stream: channel attention, then
spatial attention, then a learnable dynamic calibration.

DANIE (ECAI 2024) describes HAP as "a hierarchical attention flow of channel attention and spatial
attention that highlights important features, with a dynamic calibration designed to integrate them"
and finds in its ablation that the channel-first order beats spatial-first and that the calibration
helps. The summary gives no formulas, so the ones below are our reading:

- channel attention (CBAM, Woo et al. 2018): ``F1 = F * sigmoid(MLP(MaxPool(F)) + MLP(AvgPool(F)))``,
  the shared :class:`~.channel_attention.ChannelAttention` with ``residual=False``;
- spatial attention (CBAM): ``F2 = F1 * sigmoid(conv_k([max_c(F1); mean_c(F1)]))``, one k x k (x k)
  convolution from the two channel-pooled maps to one map; MONAI has no CBAM spatial branch
  (its ``SpatialAttentionBlock`` is self-attention), hence :class:`SpatialAttention` here;
- dynamic calibration: ``out = F + gamma * F2`` with a learnable per-channel ``gamma`` (initialised to
  1), which re-weights the attended features against the block's input channel by channel.
  Without calibration (``calibration=False``, the paper's ablation) ``out = F2``: plain CBAM.

``order="spatial_first"`` swaps the two attentions (the ablation's other arm).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .channel_attention import ChannelAttention
from .common import conv_type

__all__ = ["SpatialAttention", "HierarchicalAttention", "HAP_ORDERS"]

HAP_ORDERS = ("channel_first", "spatial_first")


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``x * sigmoid(conv([max over channels; mean over channels]))``.

    Args:
        spatial_dims: 2 or 3.
        kernel_size: odd edge of the convolution over the two pooled maps; default 7 (CBAM).
    """

    def __init__(self, spatial_dims: int, kernel_size: int = 7) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"SpatialAttention: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SpatialAttention: kernel_size must be a positive odd integer, got {kernel_size!r}")
        self.conv = conv_type(spatial_dims)(2, 1, kernel_size, padding=kernel_size // 2)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map, shaped (B, 1, *spatial) to broadcast over the channels."""
        pooled = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class HierarchicalAttention(nn.Module):
    """HAP: channel attention then spatial attention (or the reverse), then dynamic calibration.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        reduction: channel-attention MLP hidden width is ``max(1, C // reduction)``; default 16 (CBAM).
        kernel_size: spatial-attention convolution edge, odd; default 7 (CBAM).
        order: ``"channel_first"`` (default, the paper's choice) or ``"spatial_first"``.
        calibration: add the learnable per-channel calibration ``x + gamma * attended`` (default True);
            False returns the attended features alone.

    Example::

        >>> hap = HierarchicalAttention(2, channels=32)
        >>> hap(torch.randn(1, 32, 16, 16)).shape
        torch.Size([1, 32, 16, 16])
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        reduction: int = 16,
        kernel_size: int = 7,
        order: str = "channel_first",
        calibration: bool = True,
    ) -> None:
        super().__init__()
        if order not in HAP_ORDERS:
            raise ValueError(f"HierarchicalAttention: order must be one of {HAP_ORDERS}, got {order!r}")
        self.order = order
        self.channel_attention = ChannelAttention(spatial_dims, channels, reduction, residual=False)
        self.spatial_attention = SpatialAttention(spatial_dims, kernel_size)
        self.calibration = nn.Parameter(torch.ones(1, channels, *([1] * spatial_dims))) if calibration else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "channel_first":
            attended = self.spatial_attention(self.channel_attention(x))
        else:
            attended = self.channel_attention(self.spatial_attention(x))
        if self.calibration is None:
            return attended
        return x + self.calibration * attended
