"""AXUNet: Attention Xception UNet (arXiv 2503.20446, 2025).

A UNet whose encoder is an Xception backbone (depthwise-separable convolutions in residual
blocks) with scaled dot-product self-attention modules inside the U. The paper segments glioma
on BraTS 2021 from 2D slices of T1CE, T2 and FLAIR and reports a mean test Dice of 93.73
(WT 92.59, TC 86.81, ET 84.89). No code is public and the paper gives no widths, depths or
training details, so most of the configuration below is ours and is marked so.

Paper to code
-------------
- "Xception backbone" / "depthwise-separable convolutions": ``blocks.separable_conv.SeparableConv``
  (depthwise ``3 x 3`` then pointwise ``1 x 1``).
- Xception residual block "ReLU - SeparableConv3x3 - BN, twice, then max-pool stride 2, with a
  1x1 stride-2 conv + BN shortcut": ``blocks.separable_conv.XceptionBlock(num_convs=2,
  downsample=True)``, one per encoder level (``AXUNet.encoder``).
- Xception middle flow (residual blocks of three ReLU - SeparableConv - BN with an identity
  shortcut): ``XceptionBlock(num_convs=3, downsample=False)``, ``middle_blocks`` of them at the
  bottleneck (``AXUNet.middle``).
- "dot-product self-attention modules" with Q, K, V projections and ``softmax(Q K^T / sqrt(d)) V``:
  MONAI's ``SpatialAttentionBlock`` (``AXUNet.attention``). It flattens the feature map into
  ``N = prod(spatial)`` tokens of ``C`` channels and computes
  ``y = x + W_o * MHSA(GroupNorm(x)) + b_o`` with separate, biased ``to_q``, ``to_k``, ``to_v``
  linear layers, ``attention_heads`` heads of size ``d = C / heads``, and an output projection.
  The GroupNorm, the residual and the output projection are MONAI's (the transformer convention);
  the paper names only the dot-product attention itself.
- "within a UNet-shaped model": full-resolution stem, encoder skips concatenated with the
  up-sampled decoder features at every level, ``1 x 1`` convolution to class logits.

Choices the paper leaves open (all "our choice")
------------------------------------------------
- Widths ``features=(32, 64, 128, 256, 512)``: five levels, so four down-samplings and a patch
  multiple of 16. Xception's own widths (64/128/256/728) are for classification at 299 px.
- Stem: two plain ``3 x 3`` Conv - BN - ReLU at full resolution (Xception's first convolution has
  stride 2; a UNet needs a full-resolution skip).
- Bottleneck: ``middle_blocks=2`` middle-flow blocks (Xception has 8, at 728 channels).
- Where the attention goes: ``attention_levels=(-2, -1)`` — the bottleneck (after the middle
  blocks) and the deepest skip connection (before it is concatenated). Level ``0`` is full
  resolution, ``len(features) - 1`` (or ``-1``) the bottleneck; attention on a skip at level ``l``
  attends over ``prod(patch) / 2**(l * spatial_dims)`` tokens, so shallow levels cost quadratic
  memory (level 0 of a 192 x 192 patch is 36864 tokens). With the defaults the 2D patch
  (192 x 192) gives 576 and 144 tokens, the 3D patch (128^3) 4096 and 512.
- Attention heads ``attention_heads=8``; GroupNorm with ``attention_norm_groups=32`` groups
  (MONAI's default). Attention runs through PyTorch's ``scaled_dot_product_attention`` (same
  formula; on GPU its fused kernels keep memory linear in the token count).
- Decoder: ``2 x 2`` transposed convolution (stride 2), concatenation with the skip, then an
  ``XceptionBlock(num_convs=2, downsample=False)`` (separable convolutions throughout, shortcut
  ``1 x 1`` conv + BN because the concatenation doubles the width).
- Normalisation: batch norm (Xception's); ``norm="instance"`` is offered for small 3D batches.
- 3D form: every 2D layer replaced by its 3D counterpart (separable ``3 x 3 x 3``, ``3^3`` max-pool,
  attention over ``D * H * W`` tokens).
- Task configuration: 3 input channels (T1CE, T2, FLAIR) and 4 output classes — background and
  the BraTS labels necrosis (1), oedema (2), enhancing tumour (4, stored as 3); WT, TC and ET are
  unions of these labels. Training recipe: Dice + cross-entropy, Adam, lr 1e-3, weight decay
  1e-5, poly schedule, 100 epochs, batch size 16 (2D slices).
- Default patch size: 2D ``(192, 192)`` (covers the brain in a 240 x 240 BraTS slice),
  3D ``(128, 128, 128)``.
  Measured peak process memory (CPU, float32, forward + backward, default options): about 11.6 GB
  for one 128^3 sample in 3D, about 5 GB for a 2D batch of 16 slices of 192 x 192.

Parameter count of the default configuration (2D, 3 -> 4 channels): 4,795,204
(3D: 5,618,820).

Example::

    net = AXUNet(spatial_dims=2, in_channels=3, out_channels=4, patch_size=(192, 192))
    logits = net(torch.randn(2, 3, 192, 192))  # (2, 4, 192, 192)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import SpatialAttentionBlock

from .blocks.common import (
    check_features,
    check_network_args,
    check_patch_size,
    conv_transpose_type,
    conv_type,
    norm_type,
)
from .blocks.separable_conv import XceptionBlock
from .spec import ModelInfo, Preset, TrainingRecipe

__all__ = ["AXUNet", "patch_multiple", "MODEL_INFO", "PRESETS"]

NAME = "axunet"
DEFAULT_FEATURES = (32, 64, 128, 256, 512)


class AXUNet(nn.Module):
    """Attention Xception UNet for 2D or 3D segmentation; returns logits.

    Args:
        spatial_dims: 2 (the paper's) or 3.
        in_channels: number of image channels (3 in the paper: T1CE, T2, FLAIR).
        out_channels: number of output classes (logit channels).
        patch_size: training patch, in array order; every axis a multiple of
            ``2 ** (len(features) - 1)``.
        features: channel width of each level, full resolution first; at least 2 levels, every
            width positive; default ``(32, 64, 128, 256, 512)``.
        middle_blocks: number of Xception middle-flow blocks at the bottleneck, at least 0;
            default 2.
        attention_levels: levels that get a self-attention module; ``len(features) - 1`` (or
            ``-1``) is the bottleneck, a smaller level ``l`` the skip connection at resolution
            ``1 / 2**l``; negative values count from the bottleneck; no duplicates, may be empty
            (plain Xception-UNet); default ``(-2, -1)``.
        attention_heads: attention heads; must divide the width of every attention level;
            default 8.
        attention_norm_groups: GroupNorm groups before each attention; must divide the width of
            every attention level; default 32.
        norm: ``"batch"`` (default) or ``"instance"``, for every convolution block.

    Raises:
        ValueError: when an argument breaks the rule given above.

    Example::

        net = AXUNet(3, 3, 4, patch_size=(128, 128, 128), features=(16, 32, 64, 128, 256))
        logits = net(torch.randn(1, 3, 128, 128, 128))  # (1, 4, 128, 128, 128)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        patch_size: Sequence[int],
        features: Sequence[int] = DEFAULT_FEATURES,
        middle_blocks: int = 2,
        attention_levels: Sequence[int] = (-2, -1),
        attention_heads: int = 8,
        attention_norm_groups: int = 32,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_network_args(NAME, spatial_dims, in_channels, out_channels)
        features = check_features(NAME, features)
        check_patch_size(NAME, patch_size, spatial_dims, 2 ** (len(features) - 1))
        if not isinstance(middle_blocks, int) or middle_blocks < 0:
            raise ValueError(f"{NAME}: middle_blocks must be a non-negative integer, got {middle_blocks!r}")
        levels = _check_attention_levels(attention_levels, len(features))
        for level in levels:
            width = features[level]
            if attention_heads < 1 or width % attention_heads:
                raise ValueError(
                    f"{NAME}: attention_heads must be a positive divisor of the width {width} of "
                    f"attention level {level}, got {attention_heads!r}"
                )
            if attention_norm_groups < 1 or width % attention_norm_groups:
                raise ValueError(
                    f"{NAME}: attention_norm_groups must be a positive divisor of the width {width} "
                    f"of attention level {level}, got {attention_norm_groups!r}"
                )
        norm_layer = norm_type(norm, spatial_dims)
        conv = conv_type(spatial_dims)

        self.stem = nn.Sequential(
            conv(in_channels, features[0], 3, padding=1, bias=False),
            norm_layer(features[0]),
            nn.ReLU(inplace=True),
            conv(features[0], features[0], 3, padding=1, bias=False),
            norm_layer(features[0]),
            nn.ReLU(inplace=True),
        )
        self.encoder = nn.ModuleList(
            XceptionBlock(spatial_dims, features[i], features[i + 1], num_convs=2, downsample=True, norm=norm)
            for i in range(len(features) - 1)
        )
        self.middle = nn.Sequential(
            *(
                XceptionBlock(spatial_dims, features[-1], features[-1], num_convs=3, downsample=False, norm=norm)
                for _ in range(middle_blocks)
            )
        )
        self.attention = nn.ModuleDict(
            {
                str(level): SpatialAttentionBlock(
                    spatial_dims,
                    features[level],
                    num_head_channels=features[level] // attention_heads,
                    norm_num_groups=attention_norm_groups,
                    use_flash_attention=True,
                )
                for level in levels
            }
        )
        self.upsample = nn.ModuleList(
            conv_transpose_type(spatial_dims)(features[i + 1], features[i], 2, stride=2)
            for i in range(len(features) - 1)
        )
        self.decoder = nn.ModuleList(
            XceptionBlock(spatial_dims, 2 * features[i], features[i], num_convs=2, downsample=False, norm=norm)
            for i in range(len(features) - 1)
        )
        self.head = conv(features[0], out_channels, 1)

    def _attend(self, level: int, x: torch.Tensor) -> torch.Tensor:
        key = str(level)
        return self.attention[key](x) if key in self.attention else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for block in self.encoder:
            skips.append(block(skips[-1]))
        bottleneck_level = len(skips) - 1
        x = self._attend(bottleneck_level, self.middle(skips.pop()))
        for level in reversed(range(bottleneck_level)):
            x = torch.cat([self.upsample[level](x), self._attend(level, skips[level])], dim=1)
            x = self.decoder[level](x)
        return self.head(x)


def _check_attention_levels(attention_levels: Sequence[int], num_levels: int) -> tuple[int, ...]:
    """Levels as non-negative indices, in ascending order."""
    levels = []
    for level in attention_levels:
        if not isinstance(level, int) or not -num_levels <= level < num_levels:
            raise ValueError(
                f"{NAME}: attention_levels must be integers in [{-num_levels}, {num_levels - 1}] "
                f"for {num_levels} levels, got {tuple(attention_levels)!r}"
            )
        levels.append(level % num_levels)
    if len(set(levels)) != len(levels):
        raise ValueError(f"{NAME}: attention_levels must not name a level twice, got {tuple(attention_levels)!r}")
    return tuple(sorted(levels))


def patch_multiple(spatial_dims: int, options: Mapping[str, Any]) -> tuple[int, ...]:
    """Every patch axis must be a multiple of ``2 ** (len(features) - 1)`` (one halving per level)."""
    features = check_features(NAME, options.get("features", DEFAULT_FEATURES))
    return (2 ** (len(features) - 1),) * spatial_dims


MODEL_INFO = ModelInfo(
    name=NAME,
    description="Attention Xception UNet: Xception separable-conv encoder with dot-product self-attention",
    paper="Attention Xception UNet (AXUNet): A Novel Combination of CNN and Self-Attention "
    "for Brain Tumor Segmentation, arXiv 2503.20446 (2025)",
    factory=AXUNet,
    spatial_dims=(2, 3),
    native_spatial_dims=2,
    default_patch_size={2: (192, 192), 3: (128, 128, 128)},
    patch_multiple=patch_multiple,
    default_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 4},
    recipe=TrainingRecipe(
        loss="dice_ce",
        optimizer="adam",
        learning_rate=1e-3,
        weight_decay=1e-5,
        schedule="poly",
        epochs=100,
        batch_size=16,
        source="our choice",
    ),
    deep_supervision=False,
    clinical_input=False,
    min_patch_multiples=2,  # batch norm at a 1-voxel bottleneck fails in training
    compact_options={
        "features": (8, 16, 32),
        "middle_blocks": 1,
        "attention_levels": (-2, -1),
        "attention_heads": 2,
        "attention_norm_groups": 4,
    },
    notes="Widths, depths, attention placement and the training recipe are not published: ours. "
    "Training with batch norm needs more than one value per channel: with batch size 1 the patch must "
    "exceed the patch multiple on some axis (bottleneck larger than one voxel).",
)

PRESETS: tuple[Preset, ...] = (
    Preset(
        name="axunet_brats2021_2d",
        model=NAME,
        spatial_dims=2,
        in_channels=3,
        out_channels=4,
        patch_size=(192, 192),
        description="BraTS 2021 glioma, 2D slices of T1CE, T2, FLAIR; background + NCR, ED, ET "
        "(architecture details ours: not published)",
    ),
)
