"""Scale feature attention (SFA) of the integrated-attention CNN: three convolution branches of
growing receptive field, summed.

The paper (eq. 1-4, fig. 2)::

    B1 = Conv3x3(Conv3x3(Conv1x1(X)))
    B2 = Conv3x3(Conv1x1(X))
    B3 = Conv1x1(X)
    out = B1 + B2 + B3

Figure 2 draws one ``1 x 1`` convolution per branch, so the three ``1 x 1`` convolutions are
separate layers (not shared). The branches see ``1``, ``3`` and ``5`` pixels across: the sum mixes
three scales. Each "Conv" of the formula is a convolution unit ``Conv - Norm - ReLU`` (our choice:
the paper draws boxes labelled only by kernel size; without a nonlinearity the whole block would
collapse into a single linear ``5 x 5`` convolution). MONAI's ``Convolution`` provides the unit;
MONAI has no block with this branch layout.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

__all__ = ["ScaleFeatureAttention"]


class ScaleFeatureAttention(nn.Module):
    """``out = B1 + B2 + B3`` over three convolution branches, for 2D or 3D feature maps.

    Args:
        spatial_dims: 2 or 3 (``3 x 3`` kernels become ``3 x 3 x 3``).
        in_channels: channels of ``X``, at least 1.
        out_channels: channels of every branch and of the output, at least 1.
        norm: ``"batch"`` (default) or ``"instance"``, the normalisation of every convolution unit.

    Raises:
        ValueError: when an argument breaks the rule given above.

    Example::

        sfa = ScaleFeatureAttention(2, 64, 64)
        y = sfa(torch.randn(2, 64, 32, 32))  # (2, 64, 32, 32)
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str = "batch") -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"ScaleFeatureAttention: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ScaleFeatureAttention: {name} must be a positive integer, got {value!r}")
        if norm not in ("batch", "instance"):
            raise ValueError(f"ScaleFeatureAttention: norm must be 'batch' or 'instance', got {norm!r}")

        def unit(channels_in: int, kernel_size: int) -> Convolution:
            # No bias: the normalisation that follows removes it.
            return Convolution(
                spatial_dims, channels_in, out_channels, kernel_size=kernel_size, act="relu", norm=norm, bias=False
            )

        self.branch1 = nn.Sequential(unit(in_channels, 1), unit(out_channels, 3), unit(out_channels, 3))
        self.branch2 = nn.Sequential(unit(in_channels, 1), unit(out_channels, 3))
        self.branch3 = unit(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch1(x) + self.branch2(x) + self.branch3(x)
