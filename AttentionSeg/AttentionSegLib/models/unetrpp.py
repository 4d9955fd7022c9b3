"""UNETR++: a hierarchical encoder-decoder with Efficient Paired Attention (EPA) in both halves.

Shaker, Maaz, Rasheed, Khan, Yang, Khan. "UNETR++: Delving into Efficient and Accurate 3D Medical
Image Segmentation", IEEE TMI 2024, arXiv 2212.04497. Official code: github.com/Amshaker/unetr_plus_plus
(read for the details the paper leaves out; this file is written from the paper and that reading).

Paper to code
-------------
- "a stem of non-overlapping patches (kernel = stride = (2, 4, 4)) to C1 = 32 channels, then three
  downsampling layers (kernel = stride = 2)": ``UNETRPlusPlus.downsample`` (convolution + group norm).
- "each encoder stage has 3 EPA blocks; widths [32, 64, 128, 256]; 4 heads; keys and values projected to
  p = [64, 64, 64, 32]": ``feature_sizes``, ``depths``, ``num_heads``, ``proj_sizes`` and
  :class:`~.blocks.paired_attention.EPATransformerBlock` (``x + gamma * EPA(LN(x))``, then a 3x3x3
  residual convolution block and a 1x1x1 convolution).
- "the decoder upsamples with transposed convolutions, adds the skip connection and applies EPA blocks;
  the last stage uses a convolution block at full resolution": ``UNETRPlusPlusUpBlock``.
- "deep supervision": ``deep_supervision=True`` adds 1x1 heads on the two coarser decoder outputs; in
  training mode ``forward`` returns ``[full, 1/stem, 1/(2 stem)]`` resolution logits.
- "dropout 0.15": EPA attention-map dropout (``attention_dropout``).

Sizes derive from ``patch_size``: the token count of each stage (and so the positional embeddings
and EPA's token projection) is ``prod(patch_size / (stem_stride * 2**stage))``. The network runs on
exactly that window; sliding-window inference must use it.

Choices the paper leaves open (our choice unless marked "official code")
-------------------------------------------------------------------------
- Full-resolution skip: a residual block from the image to ``full_resolution_features`` = 16
  channels, instance norm (official code).
- Stem group norm: the official code uses ``num_groups = in_channels``, which fails when 32 is not
  divisible by the channel count; we use ``gcd(in_channels, 32)`` (identical for 1, 2 and 4 channels).
- The spatial branch output is laid out per token (see ``blocks/paired_attention.py``); the official
  code interleaves tokens and channels there.
- Linear layers start from a truncated normal (std 0.02), as the official encoder.
- 2D form: the same network with 2D convolutions and a (4, 4) stem; EPA is dimension-agnostic.
- Multiply-adds of the Synapse preset (1x1x64x128x128, 14 classes, deep-supervision heads built) are
  counted with ``torch.utils.flop_counter`` (FLOPs / 2); the paper's "47.98 G FLOPs" are fvcore
  multiply-adds.

Example::

    >>> net = UNETRPlusPlus(3, in_channels=1, out_channels=14, patch_size=(64, 128, 128))
    >>> net(torch.zeros(1, 1, 64, 128, 128)).shape
    torch.Size([1, 14, 64, 128, 128])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks.dynunet_block import UnetOutBlock, UnetResBlock

from .blocks.common import (
    check_network_args,
    check_patch_size,
    check_stem_stride,
    conv_transpose_type,
    conv_type,
    init_linear_trunc_normal,
)
from .blocks.paired_attention import EPATransformerBlock
from .spec import ModelInfo, Preset, TrainingRecipe

__all__ = ["UNETRPlusPlus", "patch_multiple", "MODEL_INFO", "PRESETS"]

NAME = "unetrpp"
DEFAULT_STEM_STRIDE = {2: (4, 4), 3: (2, 4, 4)}


def patch_multiple(spatial_dims: int, options: Mapping[str, Any]) -> tuple[int, ...]:
    """Stem stride times 2**(stages - 1) on every axis: (16, 32, 32) in 3D, (32, 32) in 2D by default."""
    stages = len(options.get("feature_sizes", (32, 64, 128, 256)))
    return tuple(
        s * 2 ** (stages - 1)
        for s in check_stem_stride(NAME, spatial_dims, options.get("stem_stride"), DEFAULT_STEM_STRIDE)
    )


class UNETRPlusPlusUpBlock(nn.Module):
    """Transposed-convolution upsampling, additive skip, then EPA blocks (or one residual block)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        upsample: tuple[int, ...],
        spatial_size: tuple[int, ...] | None,
        depth: int,
        proj_size: int,
        num_heads: int,
        attention_dropout: float,
    ) -> None:
        super().__init__()
        self.upsample = conv_transpose_type(spatial_dims)(
            in_channels, out_channels, upsample, stride=upsample, bias=False
        )
        if spatial_size is None:  # the last decoder stage: full resolution, a convolution block
            self.blocks = UnetResBlock(
                spatial_dims, out_channels, out_channels, kernel_size=3, stride=1, norm_name="instance"
            )
        else:
            self.blocks = nn.Sequential(
                *[
                    EPATransformerBlock(
                        spatial_dims,
                        spatial_size,
                        out_channels,
                        proj_size,
                        num_heads,
                        attention_dropout=attention_dropout,
                    )
                    for _ in range(depth)
                ]
            )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.upsample(x) + skip)


class UNETRPlusPlus(nn.Module):
    """UNETR++ for 2D or 3D patches.

    Args:
        spatial_dims: 3 (the paper) or 2.
        in_channels: image channels.
        out_channels: classes (logit channels, background included).
        patch_size: the training and inference window, array order; every axis a multiple of
            ``stem_stride * 2**(len(feature_sizes) - 1)`` (default (16, 32, 32) in 3D, (32, 32) in 2D).
        feature_sizes: encoder widths per stage; default (32, 64, 128, 256) (Synapse).
        depths: EPA blocks per encoder stage; default (3, 3, 3, 3). Decoder stages use ``decoder_depth``.
        proj_sizes: EPA spatial projection length per encoder stage; default (64, 64, 64, 32).
        decoder_proj_size: EPA projection length in decoder stages; default 64 (official code).
        decoder_depth: EPA blocks per decoder stage; default 3.
        num_heads: EPA heads; must divide every width; default 4.
        stem_stride: patch-embedding kernel = stride; default (2, 4, 4) in 3D, (4, 4) in 2D.
        full_resolution_features: channels of the full-resolution skip and last decoder; default 16.
        attention_dropout: EPA attention dropout; default 0.15.
        deep_supervision: build two auxiliary heads; in training mode forward returns a list.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        patch_size: Sequence[int],
        feature_sizes: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[int] = (3, 3, 3, 3),
        proj_sizes: Sequence[int] = (64, 64, 64, 32),
        decoder_proj_size: int = 64,
        decoder_depth: int = 3,
        num_heads: int = 4,
        stem_stride: Sequence[int] | int | None = None,
        full_resolution_features: int = 16,
        attention_dropout: float = 0.15,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        check_network_args(NAME, spatial_dims, in_channels, out_channels)
        feature_sizes, depths, proj_sizes = tuple(feature_sizes), tuple(depths), tuple(proj_sizes)
        stages = len(feature_sizes)
        if stages < 2 or len(depths) != stages or len(proj_sizes) != stages:
            raise ValueError(
                f"{NAME}: feature_sizes, depths and proj_sizes need the same length (at least 2), got "
                f"{feature_sizes}, {depths}, {proj_sizes}"
            )
        if any(width % num_heads or width % 2 for width in feature_sizes):
            raise ValueError(
                f"{NAME}: every feature size must be even and divisible by num_heads={num_heads}, got {feature_sizes}"
            )
        if min(depths) < 1 or decoder_depth < 1:
            raise ValueError(f"{NAME}: depths and decoder_depth must be at least 1, got {depths}, {decoder_depth}")
        stem = check_stem_stride(NAME, spatial_dims, stem_stride, DEFAULT_STEM_STRIDE)
        multiple = tuple(s * 2 ** (stages - 1) for s in stem)
        self.patch_size = check_patch_size(NAME, patch_size, spatial_dims, multiple)
        self.deep_supervision = deep_supervision
        stage_sizes = [tuple(p // (s * 2**i) for p, s in zip(self.patch_size, stem)) for i in range(stages)]
        conv = conv_type(spatial_dims)

        self.downsample = nn.ModuleList(
            [
                nn.Sequential(
                    conv(in_channels, feature_sizes[0], stem, stride=stem, bias=False),
                    nn.GroupNorm(math.gcd(in_channels, feature_sizes[0]), feature_sizes[0]),
                )
            ]
        )
        for i in range(stages - 1):
            self.downsample.append(
                nn.Sequential(
                    conv(feature_sizes[i], feature_sizes[i + 1], 2, stride=2, bias=False),
                    nn.GroupNorm(feature_sizes[i], feature_sizes[i + 1]),
                )
            )
        self.encoder_stages = nn.ModuleList(
            [
                nn.Sequential(
                    *[
                        EPATransformerBlock(
                            spatial_dims,
                            stage_sizes[i],
                            feature_sizes[i],
                            proj_sizes[i],
                            num_heads,
                            attention_dropout=attention_dropout,
                        )
                        for _ in range(depths[i])
                    ]
                )
                for i in range(stages)
            ]
        )
        self.full_resolution_skip = UnetResBlock(
            spatial_dims, in_channels, full_resolution_features, kernel_size=3, stride=1, norm_name="instance"
        )
        # Decoder stages from coarse to fine; the last one returns to full resolution.
        self.decoder_stages = nn.ModuleList(
            [
                UNETRPlusPlusUpBlock(
                    spatial_dims,
                    feature_sizes[i + 1],
                    feature_sizes[i],
                    (2,) * spatial_dims,
                    stage_sizes[i],
                    decoder_depth,
                    decoder_proj_size,
                    num_heads,
                    attention_dropout,
                )
                for i in reversed(range(stages - 1))
            ]
        )
        self.decoder_stages.append(
            UNETRPlusPlusUpBlock(
                spatial_dims, feature_sizes[0], full_resolution_features, stem, None, 0, 0, num_heads, 0.0
            )
        )
        self.head = UnetOutBlock(spatial_dims, full_resolution_features, out_channels)
        if deep_supervision:
            self.auxiliary_heads = nn.ModuleList(
                [UnetOutBlock(spatial_dims, feature_sizes[i], out_channels) for i in range(min(2, stages - 1))]
            )
        self.apply(init_linear_trunc_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        features = x
        for downsample, stage in zip(self.downsample, self.encoder_stages):
            features = stage(downsample(features))
            skips.append(features)
        decoded = [features]
        for decoder, skip in zip(self.decoder_stages[:-1], reversed(skips[:-1])):
            decoded.append(decoder(decoded[-1], skip))
        logits = self.head(self.decoder_stages[-1](decoded[-1], self.full_resolution_skip(x)))
        if self.deep_supervision and self.training:
            # decoded[-1] is stage 0 (1/stem), decoded[-2] stage 1
            return [logits] + [head(decoded[-1 - i]) for i, head in enumerate(self.auxiliary_heads)]
        return logits


MODEL_INFO = ModelInfo(
    name=NAME,
    description="UNETR++: hierarchical encoder-decoder with efficient paired (channel + spatial) attention",
    paper="Shaker et al., UNETR++: Delving into Efficient and Accurate 3D Medical Image Segmentation, "
    "IEEE TMI 2024, arXiv 2212.04497",
    factory=UNETRPlusPlus,
    spatial_dims=(2, 3),
    native_spatial_dims=3,
    default_patch_size={3: (64, 128, 128), 2: (256, 256)},
    patch_multiple=patch_multiple,
    default_config={"spatial_dims": 3, "in_channels": 1, "out_channels": 14},
    # Official Synapse trainer: SGD (Nesterov, momentum 0.99), lr 0.01, poly schedule, 1000 epochs, Dice + CE.
    recipe=TrainingRecipe(
        loss="dice_ce",
        optimizer="sgd",
        learning_rate=1e-2,
        weight_decay=3e-5,
        schedule="poly",
        epochs=1000,
        batch_size=2,
        momentum=0.99,
        source="official code",
    ),
    deep_supervision=True,
    compact_options={
        "feature_sizes": (8, 16),
        "depths": (1, 1),
        "proj_sizes": (8, 4),
        "decoder_depth": 1,
        "decoder_proj_size": 8,
        "num_heads": 2,
        "full_resolution_features": 4,
    },
    notes="Runs on exactly its patch size (positional embeddings and token projections depend on it).",
)

PRESETS = (
    Preset(
        name="unetrpp_synapse",
        model=NAME,
        spatial_dims=3,
        in_channels=1,
        out_channels=14,
        patch_size=(64, 128, 128),
        options={"deep_supervision": True},
        description="Synapse multi-organ CT (paper: 42.96 M parameters, 47.98 G multiply-adds, DSC 87.22)",
    ),
)
