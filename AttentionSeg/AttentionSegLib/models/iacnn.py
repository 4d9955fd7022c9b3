"""Integrated-attention CNN: a U-Net with scale, spatial and channel attention (IACNN).

"基于综合注意力机制的卷积神经网络" (a convolutional neural network based on an integrated attention
mechanism) for medical image segmentation, a Chinese journal paper; our copy has no title page
(authors and venue unknown). It segments 2D skin lesions
(ISIC 2018: Dice 89.72, IoU 82.93) and colon polyps (CVC-ClinicDB: Dice 89.86, IoU 82.05) from
RGB images cropped to 256 x 256. No code is public; widths, norms and the 3D form are ours.

Paper to code
-------------
- "The encoder has 5 convolution layers, down-sampling to extract low-level features":
  ``IACNN.encoder``, five levels, each a double ``Conv3x3 - Norm - ReLU`` (``_double_conv``);
  levels 1-4 start with a ``2 x 2`` max-pool.
- "5 deconvolution layers ... restore the image step by step to its original size": ``IACNN.upsample``,
  ``2 x 2`` stride-2 transposed convolutions, each followed by concatenation with the skip and a
  double convolution (``IACNN.decoder``), then a ``1 x 1`` convolution to the logits (``IACNN.head``).
- "Skip connections prevent the loss of information during down-sampling": the encoder output of
  each of the four upper levels is concatenated with the decoder's up-sampled features.
- Figure 1 ("SFA, SA+CA, SA+CA, SA+CA" along the skip connections) and "in the encoder ... we
  designed the scale feature attention model": SFA at the first (full-resolution) level, applied
  to the level's output in the encoder (``IACNN.sfa``); SA and CA on the next three skip levels
  (``IACNN.skip_attention``).
- SFA, eq. (1)-(4): ``B1 = Conv3x3(Conv3x3(Conv1x1(X)))``, ``B2 = Conv3x3(Conv1x1(X))``,
  ``B3 = Conv1x1(X)``, ``out = B1 + B2 + B3``: ``blocks.scale_feature_attention.ScaleFeatureAttention``
  (three separate ``1 x 1`` convolutions, as figure 2 draws them).
- SA, eq. (5)-(6): ``alpha = Sigmoid(x . x^T)``, ``out = x + x . alpha``:
  ``blocks.affinity_attention.AffinityAttention`` (``mode`` "channel" or "spatial", see below).
- CA, eq. (7)-(8): ``beta = Sigmoid(MLP(Pmax(X), Pavg(X)))``, ``out = X + X . beta``; figure 4 sends
  each pooled descriptor through the MLP, read as CBAM's ``Sigmoid(MLP(Pmax(X)) + MLP(Pavg(X)))``
  with one shared MLP: ``blocks.channel_attention.ChannelAttention(residual=True)``.
- The text's list of modules swaps the abbreviations ("spatial attention (CA), channel attention
  (SA)"); figures 1, 3, 4 and the formulas use SA for eq. (5)-(6) and CA for eq. (7)-(8), as here.
- Loss, eq. (9)-(11): ``LossB + LossD`` (binary cross-entropy on one probability ``p_i`` per pixel
  plus Dice): recipe loss ``"bce_dice"``, hence one output logit in the paper's configuration.
- "Adam, initial learning rate 0.0001, batch_size 16, L2 coefficient 1e-5, 500 iterations", "images
  cropped to 256 x 256": ``MODEL_INFO.recipe`` and ``default_patch_size[2]``.

Choices the paper leaves open (all "our choice")
------------------------------------------------
- Depth: five resolution levels (the classic U-Net, patch multiple 16). Figure 1 shows four
  attention sites, i.e. four skip connections, so the decoder has four transposed convolutions;
  we read the paper's "5 deconvolution layers" as the decoder spanning the five levels.
- Widths ``features=(64, 128, 256, 512, 1024)``, the U-Net's (the paper's baseline).
- Convolution unit: ``Conv - Norm - ReLU`` with batch norm (``norm="instance"`` offered for small
  3D batches), two per level, as in U-Net; the same unit for every "Conv" of SFA (a nonlinearity
  between SFA's convolutions keeps the branches from collapsing into one linear convolution).
- SFA sits after the first level's double convolution, in the encoder path: its output is both
  the first skip and the input of the second level. It keeps the width (``features[0]``).
- SA reading, per skip level: ``sa_modes=("channel", "channel", "spatial")`` for the skip levels at
  1/2, 1/4 and 1/8 resolution. The spatial (voxel x voxel) affinity is used only at 1/8, where a
  256 x 256 patch gives 32 x 32 = 1024 voxels (a 1024 x 1024 matrix per sample); at 1/2 it would be
  16384 x 16384 (1 GiB per sample in float32). The channel reading is used above. The formula has
  no scaling: on post-ReLU (non-negative) skips every dot product is >= 0, so ``alpha >= 0.5`` and
  it saturates towards 1 as ``N`` (channel reading) or ``C`` (spatial reading) grows; kept as
  written.
- SA and CA in sequence on each of those skips, SA first: ``skip' = CA(SA(skip))`` (the paper
  writes "SA+CA" and gives no order; sequential, as in CBAM).
- CA's MLP: hidden width ``C // ca_reduction`` with ``ca_reduction=16`` (CBAM's), ReLU between.
- 3D form: every 2D layer replaced by its 3D counterpart (``3 x 3 x 3`` kernels, ``2^3`` pooling and
  transposed convolutions; SA and CA flatten ``D * H * W`` voxels). Default 3D patch 96^3 (level
  1/8 then has 12^3 = 1728 voxels for the spatial affinity).
- Output: one logit (sigmoid + BCE/Dice) in the paper's configuration; any ``out_channels`` works.
- Schedule: constant learning rate (the paper names only an "initial" rate); "500 iterations" read as
  500 epochs.

Parameter count of the default configuration (2D, 3 -> 1 channels): 31,205,241
(3D: 90,690,809).

Example::

    net = IACNN(spatial_dims=2, in_channels=3, out_channels=1, patch_size=(256, 256))
    logits = net(torch.randn(2, 3, 256, 256))  # (2, 1, 256, 256)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

from .blocks.affinity_attention import AFFINITY_MODES, AffinityAttention
from .blocks.channel_attention import ChannelAttention
from .blocks.common import (
    check_features,
    check_network_args,
    check_patch_size,
    conv_transpose_type,
    conv_type,
    max_pool_type,
)
from .blocks.scale_feature_attention import ScaleFeatureAttention
from .spec import ModelInfo, Preset, TrainingRecipe

__all__ = ["IACNN", "patch_multiple", "MODEL_INFO", "PRESETS"]

NAME = "iacnn"
NUM_LEVELS = 5
DEFAULT_FEATURES = (64, 128, 256, 512, 1024)
DEFAULT_SA_MODES = ("channel", "channel", "spatial")


def _double_conv(spatial_dims: int, in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        *(
            Convolution(spatial_dims, channels, out_channels, kernel_size=3, act="relu", norm=norm, bias=False)
            for channels in (in_channels, out_channels)
        )
    )


class IACNN(nn.Module):
    """Integrated-attention CNN for 2D or 3D segmentation; returns logits.

    Args:
        spatial_dims: 2 (the paper's) or 3.
        in_channels: number of image channels (3 in the paper: RGB).
        out_channels: number of output logit channels (1 in the paper: lesion vs background with a
            sigmoid).
        patch_size: training patch, in array order; every axis a multiple of 16.
        features: channel width of each of the five levels, full resolution first; five positive
            integers; default ``(64, 128, 256, 512, 1024)``.
        sa_modes: SA's affinity for the skip levels at 1/2, 1/4 and 1/8 resolution, each
            ``"channel"`` (``C x C``) or ``"spatial"`` (``N x N`` over the level's voxels, quadratic
            memory); three values; default ``("channel", "channel", "spatial")``.
        ca_reduction: CA's MLP hidden width is ``max(1, C // ca_reduction)``; a positive integer;
            default 16.
        norm: ``"batch"`` (default) or ``"instance"``, for every convolution unit.

    Raises:
        ValueError: when an argument breaks the rule given above.

    Example::

        net = IACNN(3, 1, 2, patch_size=(96, 96, 96), features=(16, 32, 64, 128, 256))
        logits = net(torch.randn(1, 1, 96, 96, 96))  # (1, 2, 96, 96, 96)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        patch_size: Sequence[int],
        features: Sequence[int] = DEFAULT_FEATURES,
        sa_modes: Sequence[str] = DEFAULT_SA_MODES,
        ca_reduction: int = 16,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_network_args(NAME, spatial_dims, in_channels, out_channels)
        check_patch_size(NAME, patch_size, spatial_dims, patch_multiple(spatial_dims, {}))
        features = check_features(NAME, features, NUM_LEVELS)
        sa_modes = tuple(sa_modes) if isinstance(sa_modes, Sequence) and not isinstance(sa_modes, str) else (sa_modes,)
        if len(sa_modes) != NUM_LEVELS - 2 or any(mode not in AFFINITY_MODES for mode in sa_modes):
            raise ValueError(
                f"{NAME}: sa_modes must be {NUM_LEVELS - 2} values from {AFFINITY_MODES}, one per SA+CA skip level, "
                f"got {sa_modes!r}"
            )
        if not isinstance(ca_reduction, int) or ca_reduction < 1:
            raise ValueError(f"{NAME}: ca_reduction must be a positive integer, got {ca_reduction!r}")
        if norm not in ("batch", "instance"):
            raise ValueError(f"{NAME}: norm must be 'batch' or 'instance', got {norm!r}")

        pool = max_pool_type(spatial_dims)
        self.encoder = nn.ModuleList(
            [_double_conv(spatial_dims, in_channels, features[0], norm)]
            + [
                nn.Sequential(pool(2), _double_conv(spatial_dims, features[level - 1], features[level], norm))
                for level in range(1, NUM_LEVELS)
            ]
        )
        self.sfa = ScaleFeatureAttention(spatial_dims, features[0], features[0], norm=norm)
        self.skip_attention = nn.ModuleList(
            nn.Sequential(
                AffinityAttention(mode),
                ChannelAttention(spatial_dims, features[level], reduction=ca_reduction, residual=True),
            )
            for level, mode in zip(range(1, NUM_LEVELS - 1), sa_modes)
        )
        upsample = conv_transpose_type(spatial_dims)
        self.upsample = nn.ModuleList(
            upsample(features[level + 1], features[level], 2, stride=2) for level in range(NUM_LEVELS - 1)
        )
        self.decoder = nn.ModuleList(
            _double_conv(spatial_dims, 2 * features[level], features[level], norm) for level in range(NUM_LEVELS - 1)
        )
        self.head = conv_type(spatial_dims)(features[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.sfa(self.encoder[0](x))]
        for stage in self.encoder[1:]:
            skips.append(stage(skips[-1]))
        x = skips.pop()
        attended = [skips[0]] + [attention(skip) for attention, skip in zip(self.skip_attention, skips[1:])]
        for level in reversed(range(NUM_LEVELS - 1)):
            x = self.decoder[level](torch.cat([self.upsample[level](x), attended[level]], dim=1))
        return self.head(x)


def patch_multiple(spatial_dims: int, options: Mapping[str, Any]) -> tuple[int, ...]:
    """Every patch axis must be a multiple of 16: four halvings, whatever the options."""
    return (2 ** (NUM_LEVELS - 1),) * spatial_dims


MODEL_INFO = ModelInfo(
    name=NAME,
    description="Integrated-attention CNN: U-Net with scale feature (SFA), affinity (SA) and channel (CA) attention",
    paper="Integrated attention convolutional neural network (综合注意力卷积神经网络) for medical image "
    "segmentation, Chinese journal paper (authors and venue not in our copy); no public code",
    factory=IACNN,
    spatial_dims=(2, 3),
    native_spatial_dims=2,
    default_patch_size={2: (256, 256), 3: (96, 96, 96)},
    patch_multiple=patch_multiple,
    default_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1},
    recipe=TrainingRecipe(
        loss="bce_dice",
        optimizer="adam",
        learning_rate=1e-4,
        weight_decay=1e-5,
        schedule="constant",
        epochs=500,
        batch_size=16,
        source="paper (loss, optimizer, learning rate, weight decay, batch size, 500 iterations read as epochs); "
        "our choice (constant schedule)",
    ),
    deep_supervision=False,
    clinical_input=False,
    min_patch_multiples=2,  # batch norm at a 1-voxel bottleneck fails in training
    compact_options={
        "features": (4, 8, 8, 16, 16),
        "sa_modes": ("channel", "spatial", "spatial"),
        "ca_reduction": 2,
    },
    notes="Widths, norms, SA's reading per level and the 3D form are ours. SA's spatial reading costs "
    "memory quadratic in the voxel count of its level: keep it on coarse levels (sa_modes). SA has no "
    "scaling, so with non-negative (post-ReLU) skips its sigmoid saturates near 1. The default 3D "
    "configuration is large (about 91 M parameters): narrower features suit 3D better. Training with batch "
    "norm needs more than one value per channel: with batch size 1 the patch must exceed 16 on some axis.",
)

PRESETS: tuple[Preset, ...] = (
    Preset(
        name="iacnn_isic2018",
        model=NAME,
        spatial_dims=2,
        in_channels=3,
        out_channels=1,
        patch_size=(256, 256),
        description="ISIC 2018 skin lesions, RGB 256 x 256, one logit (lesion vs background), BCE + Dice "
        "(widths and norms ours: not published)",
    ),
)
