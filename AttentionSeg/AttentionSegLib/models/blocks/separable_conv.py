"""Depthwise-separable convolution and the Xception residual block, for 2D or 3D feature maps.

``SeparableConv`` is a depthwise ``k x k`` convolution (one filter per input channel,
``groups=in_channels``) followed by a pointwise ``1 x 1`` convolution that mixes channels
(Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", CVPR 2017).
``XceptionBlock`` is Xception's residual unit::

    main(x)     = BN(SepConv(ReLU(... BN(SepConv(ReLU(x))) ...)))     (num_convs times)
                  then MaxPool(3, stride 2, padding 1)                 (when downsample)
    shortcut(x) = BN(Conv1x1(x, stride 2 when downsample))             (x itself when the shape is kept)
    y           = main(x) + shortcut(x)

With ``num_convs=2, downsample=True`` it is an entry-flow block, with ``num_convs=3,
downsample=False`` and equal widths a middle-flow block. MONAI has no separable convolution
layer (only private ones inside EfficientNet), hence this module.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .common import conv_type, max_pool_type, norm_type

__all__ = ["SeparableConv", "XceptionBlock"]


class SeparableConv(nn.Module):
    """Depthwise ``kernel_size`` convolution followed by a pointwise ``1 x 1`` convolution.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels; the depthwise convolution keeps this width.
        out_channels: output channels of the pointwise convolution.
        kernel_size: odd size of the depthwise kernel on every axis; default 3 ("same" padding).
        bias: whether the pointwise convolution has a bias; default False (a norm follows it).

    Example::

        conv = SeparableConv(2, 32, 64)
        y = conv(torch.randn(1, 32, 16, 16))  # (1, 64, 16, 16)
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = False
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"SeparableConv: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"SeparableConv: in_channels and out_channels must be positive, got {in_channels}, {out_channels}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SeparableConv: kernel_size must be a positive odd integer, got {kernel_size!r}")
        conv = conv_type(spatial_dims)
        self.depthwise = conv(
            in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=False
        )
        self.pointwise = conv(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """Xception residual block: ``num_convs`` x (ReLU - SeparableConv - Norm), optional max-pool,
    plus a shortcut (1x1 convolution + norm when the shape changes, identity otherwise).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels of every separable convolution and of the shortcut.
        num_convs: number of ReLU - SeparableConv - Norm units on the main path, at least 1;
            default 2 (Xception's entry flow; its middle flow uses 3).
        downsample: halve every spatial axis (main path: 3x3 max-pool, stride 2, padding 1;
            shortcut: 1x1 convolution with stride 2); default True.
        kernel_size: odd depthwise kernel size; default 3.
        norm: ``"batch"`` (default, Xception's) or ``"instance"``.

    Example::

        block = XceptionBlock(3, 32, 64)
        y = block(torch.randn(2, 32, 16, 16, 16))  # (2, 64, 8, 8, 8)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        num_convs: int = 2,
        downsample: bool = True,
        kernel_size: int = 3,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"XceptionBlock: num_convs must be at least 1, got {num_convs!r}")
        norm_layer = norm_type(norm, spatial_dims)
        layers: list[nn.Module] = []
        for index in range(num_convs):
            # Not in place: the block's input is also the shortcut's input.
            layers += [
                nn.ReLU(inplace=index > 0),
                SeparableConv(spatial_dims, in_channels if index == 0 else out_channels, out_channels, kernel_size),
                norm_layer(out_channels),
            ]
        if downsample:
            layers.append(max_pool_type(spatial_dims)(kernel_size=3, stride=2, padding=1))
        self.main = nn.Sequential(*layers)
        self.shortcut: nn.Module
        if downsample or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv_type(spatial_dims)(in_channels, out_channels, 1, stride=2 if downsample else 1, bias=False),
                norm_layer(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)
