"""Channel attention with a shared MLP over max- and average-pooled descriptors (CBAM-style).

``beta = sigmoid(MLP(MaxPool(x)) + MLP(AvgPool(x)))`` with one MLP for both descriptors
(Woo et al., CBAM, ECCV 2018). The integrated-attention CNN writes the output as
``x + x * beta`` (a residual form); plain CBAM uses ``x * beta``: ``residual`` picks one.
MONAI's ``ChannelSELayer`` pools by average only, so it does not implement this formula.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ChannelAttention"]


class ChannelAttention(nn.Module):
    """CBAM channel attention for 2D or 3D feature maps.

    Args:
        spatial_dims: 2 or 3.
        channels: number of feature channels C.
        reduction: the MLP's hidden width is ``max(1, C // reduction)``; default 16.
        residual: return ``x + x * beta`` (default, the integrated-attention CNN's formula)
            instead of ``x * beta``.
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16, residual: bool = True) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"ChannelAttention: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if channels < 1 or reduction < 1:
            raise ValueError(f"ChannelAttention: channels and reduction must be positive, got {channels}, {reduction}")
        hidden = max(1, channels // reduction)
        self.spatial_dims = spatial_dims
        self.residual = residual
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """beta, shaped (B, C, 1, ...) to broadcast over the spatial axes."""
        flat = x.flatten(2)
        beta = torch.sigmoid(self.mlp(flat.amax(dim=2)) + self.mlp(flat.mean(dim=2)))
        return beta.reshape(*beta.shape, *([1] * self.spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = x * self.weights(x)
        return x + gated if self.residual else gated
