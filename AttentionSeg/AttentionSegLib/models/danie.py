"""DANIE: Dual Attention Encoder with Joint Preservation, a two-stream (self-attention + hierarchical
attention) hierarchical encoder with a U-Net-like decoder.

"Dual Attention Encoder with Joint Preservation for Medical Image Segmentation", ECAI 2024, Frontiers
in Artificial Intelligence and Applications 392 (doi 10.3233/FAIA240505); Sichuan University and
University of Chinese Academy of Sciences. No public code; this file is written from the paper's
description (abstract and summary), so most details are ours and listed below.

Paper to code
-------------
- "The input image first passes through separate embedding layers": every :class:`DANIEStage` has two.
  "For the self-attentional perception (SAP) stream the embedding divides the input into patches and
  learns a vector for each patch": ``DANIEStage.sap_embedding`` (convolution, kernel = stride = the
  patch) plus a learnable position embedding. "For the hierarchical-attentional perception (HAP)
  stream the embedding applies convolution filters that extract hierarchical features and keep local
  relations": ``DANIEStage.hap_embedding`` (strided 3x3 convolution blocks).
- "SAP uses multi-head self-attention to capture global spatial relations; the heads run in parallel,
  their outputs are concatenated and projected back": :class:`SelfAttentionalPerception`,
  ``t + MHSA(LN(t))`` with MONAI's ``SABlock`` (``softmax(Q K^T / sqrt(d)) V`` per head, then a linear
  projection).
- "HAP: a hierarchical attention flow of channel attention and spatial attention, with a dynamic
  calibration that integrates them": :class:`~.blocks.hierarchical_attention.HierarchicalAttention`
  (CBAM channel attention, then CBAM spatial attention, then ``x + gamma * attended``). The ablation's
  "channel-first beats spatial-first" and "calibration helps" are the options ``hap_order`` and
  ``hap_calibration``.
- "Joint Preservation: ES models the channel dimension globally after the self-attention block":
  :class:`~.blocks.joint_preservation.EnhancingSelfAttentionalPerceptron` (``t + MLP(LN(t))``).
  "EH introduces non-local interaction on top of the local fine features":
  :class:`~.blocks.joint_preservation.EnhancingHierarchicalAttentionalPerceptron` (residual non-local
  block). "Aggregation fuses the two perceptrons' features, processed by convolution blocks, by
  addition": :class:`~.blocks.joint_preservation.JointAggregation`; its output is the stage output,
  the decoder's skip and the next stage's input.
- "DANIE-L" (the configuration the paper reports): the defaults below are our DANIE-L; the paper's
  widths and depths are not in the material we have.

Choices the paper leaves open (all our choice)
-----------------------------------------------
- Hierarchy: 4 stages, widths ``feature_sizes = (48, 96, 192, 384)``, ``depths = (2, 2, 2, 2)`` dual
  attention layers per stage, ``num_heads = (2, 4, 8, 16)`` (24 features per head), ``mlp_ratio = 4``.
  Stage 0 works at 1/``stem_stride`` of the patch (2D (4, 4); 3D (2, 4, 4), which makes Synapse's
  anisotropic CT voxels roughly cubic), each further stage halves every axis.
- One dual attention layer: SAP stream ``t <- ES(SAP(t))``; HAP stream ``h <- EH(HAP(ResBlock(h)))``
  (a MONAI ``UnetResBlock`` supplies the local convolution features HAP attends over). JP's
  aggregation runs once per stage after the last layer.
- Each stage's input is the previous stage's aggregated output (the image for stage 0), so the
  streams exchange information at every scale.
- SAP token size: tokens of stage i cover ``sap_patch_sizes[i]`` stage voxels per axis, default
  ``max(1, 4 // 2**i)`` = (4, 2, 1, 1): stages 0-2 attend over the patch / (4 * stem) grid, like a
  ViT-B/16 (196 tokens for 224 x 224 in 2D; 8 x 8 x 8 = 512 tokens for 64 x 128 x 128 in 3D), the
  last stage over its own 7 x 7 (4 x 4 x 4) grid. Full attention over stage 0 of a 3D patch
  (32 768 voxels) would need a 32 768^2 map per head; this keeps every map at most 512^2.
  The aggregation's transposed convolution returns the tokens to the stage grid.
- EH: keys and values max-pooled by the same ``sap_patch_sizes[i]`` (the non-local paper's
  subsampling), 1/sqrt(C/2) scaling, C/2 inner channels.
- HAP: CBAM reduction 16, 7 x 7 (x 7) spatial kernel, calibration ``gamma`` per channel, starting at 1.
- Norms and activations: LayerNorm and GELU in the token stream; group normalisation
  (``gcd(C, 8)`` groups, which works for batch 1 and for a 1-voxel stage grid, unlike instance or
  batch norm) and leaky ReLU (0.01) in every convolution block.
- Decoder: MONAI ``UnetrUpBlock`` per stage (transposed convolution x2, concatenated skip, residual
  conv block); the last one upsamples by ``stem_stride`` to full resolution with a full-resolution
  skip (``UnetResBlock`` from the image to ``full_resolution_features = 16`` channels); a 1x1 head.
- Linear layers and position embeddings start from a truncated normal (std 0.02), as ViT.
- No dropout (the paper mentions none), no deep supervision.
- 3D form: the same network with 3D convolutions, 3D patches and the 3D stem above.
- Parameters of the default configuration (2D, 1 channel, 9 classes, 224 x 224): 19 651 947;
  3D (1 channel, 9 classes, 64 x 128 x 128): 46 557 579; a batch-1 training step there peaks at about
  2.2 GiB of memory (measured on CPU).
- Recipe: the TransUNet Synapse protocol the paper compares against (SGD, lr 0.01, momentum 0.9,
  weight decay 1e-4, poly, batch 24, Dice + CE); the paper's own recipe is not in our material.

Sizes derive from ``patch_size`` (the position embeddings): the network runs on exactly that window;
sliding-window inference must use it.

Example::

    >>> net = DANIE(2, in_channels=1, out_channels=9, patch_size=(224, 224))
    >>> net(torch.zeros(1, 1, 224, 224)).shape
    torch.Size([1, 9, 224, 224])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution, SABlock, UnetOutBlock, UnetResBlock, UnetrUpBlock

from .blocks.common import (
    check_network_args,
    check_patch_size,
    check_stem_stride,
    conv_type,
    init_linear_trunc_normal,
)
from .blocks.hierarchical_attention import HAP_ORDERS, HierarchicalAttention
from .blocks.joint_preservation import (
    EnhancingHierarchicalAttentionalPerceptron,
    EnhancingSelfAttentionalPerceptron,
    JointAggregation,
)
from .spec import ModelInfo, Preset, TrainingRecipe

__all__ = ["DANIE", "DANIEStage", "SelfAttentionalPerception", "patch_multiple", "MODEL_INFO", "PRESETS"]

NAME = "danie"
DEFAULT_FEATURE_SIZES = (48, 96, 192, 384)
DEFAULT_STEM_STRIDE = {2: (4, 4), 3: (2, 4, 4)}
ACTIVATION = ("leakyrelu", {"negative_slope": 0.01})


def _group_norm(channels: int) -> tuple[str, dict[str, int]]:
    return ("group", {"num_groups": math.gcd(channels, 8)})


def _sap_patch_sizes(stages: int, sap_patch_sizes: Sequence[int] | None) -> tuple[int, ...]:
    if sap_patch_sizes is None:
        return tuple(max(1, 4 // 2**i) for i in range(stages))
    sizes = tuple(sap_patch_sizes)
    if len(sizes) != stages or min(sizes) < 1:
        raise ValueError(
            f"{NAME}: sap_patch_sizes must be {stages} positive integers (one per stage), got {sap_patch_sizes!r}"
        )
    return sizes


def patch_multiple(spatial_dims: int, options: Mapping[str, Any]) -> tuple[int, ...]:
    """Per axis, the lcm over stages of ``stem * 2**i * sap_patch_sizes[i]``: (32, 32) in 2D and
    (16, 32, 32) in 3D by default."""
    stages = len(options.get("feature_sizes", DEFAULT_FEATURE_SIZES))
    sap = _sap_patch_sizes(stages, options.get("sap_patch_sizes"))
    return tuple(
        math.lcm(*(s * 2**i * f for i, f in enumerate(sap)))
        for s in check_stem_stride(
            NAME, spatial_dims, options.get("stem_stride"), DEFAULT_STEM_STRIDE, powers_of_two=True
        )
    )


def _conv_embedding(spatial_dims: int, in_channels: int, out_channels: int, stride: tuple[int, ...]) -> nn.Sequential:
    """Strided 3x3 convolution blocks, one per factor 2 (an axis already at its stride takes stride 1)."""
    blocks, remaining, channels = [], list(stride), in_channels
    while max(remaining) > 1:
        step = tuple(2 if r > 1 else 1 for r in remaining)
        blocks.append(
            Convolution(
                spatial_dims,
                channels,
                out_channels,
                strides=step,
                kernel_size=3,
                norm=_group_norm(out_channels),
                act=ACTIVATION,
            )
        )
        remaining = [r // s for r, s in zip(remaining, step)]
        channels = out_channels
    return nn.Sequential(*blocks)


class SelfAttentionalPerception(nn.Module):
    """SAP on tokens (B, N, C): ``t + MHSA(LN(t))`` with MONAI's ``SABlock`` (qkv bias, no dropout).

    Together with the ES perceptron after it this is MONAI's ``TransformerBlock``; the two halves are
    separate modules because the paper puts ES in Joint Preservation.

    Args:
        hidden_size: C, features per token; divisible by ``num_heads``.
        num_heads: attention heads.
    """

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(
                f"SelfAttentionalPerception: num_heads ({num_heads}) must be positive and divide "
                f"hidden_size ({hidden_size})"
            )
        self.norm = nn.LayerNorm(hidden_size)
        # the fused SDPA kernel keeps the N x N map out of memory on GPUs; without dropout it is exact
        self.attention = SABlock(hidden_size, num_heads, qkv_bias=True, use_flash_attention=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.attention(self.norm(tokens))


class DANIEStage(nn.Module):
    """One encoder stage: the two embeddings, ``depth`` dual attention layers and JP's aggregation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the stage input (the image, or the previous stage's output).
        channels: C, the stage width.
        stride: downsampling of this stage per axis (powers of two), stage grid = input size / stride.
        stage_size: the stage grid (input patch size / stride); fixes the position embedding.
        sap_patch_size: SAP tokens cover this many stage voxels per axis; also EH's key pooling.
        depth: dual attention layers.
        num_heads: SAP heads, dividing C.
        mlp_ratio: ES hidden width / C.
        reduction: HAP channel-attention reduction.
        spatial_kernel_size: HAP spatial-attention kernel (odd).
        hap_order: ``"channel_first"`` or ``"spatial_first"``.
        hap_calibration: HAP's learnable dynamic calibration.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        stride: tuple[int, ...],
        stage_size: tuple[int, ...],
        sap_patch_size: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        reduction: int,
        spatial_kernel_size: int,
        hap_order: str,
        hap_calibration: bool,
    ) -> None:
        super().__init__()
        patch = tuple(s * sap_patch_size for s in stride)
        self.token_grid = tuple(size // sap_patch_size for size in stage_size)
        self.sap_embedding = conv_type(spatial_dims)(in_channels, channels, patch, stride=patch)
        self.position_embedding = nn.Parameter(torch.zeros(1, math.prod(self.token_grid), channels))
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        self.hap_embedding = _conv_embedding(spatial_dims, in_channels, channels, stride)
        self.sap_layers = nn.Sequential(
            *[
                nn.Sequential(
                    SelfAttentionalPerception(channels, num_heads),
                    EnhancingSelfAttentionalPerceptron(channels, mlp_ratio),
                )
                for _ in range(depth)
            ]
        )
        self.hap_layers = nn.Sequential(
            *[
                nn.Sequential(
                    UnetResBlock(
                        spatial_dims, channels, channels, kernel_size=3, stride=1, norm_name=_group_norm(channels)
                    ),
                    HierarchicalAttention(
                        spatial_dims, channels, reduction, spatial_kernel_size, hap_order, hap_calibration
                    ),
                    EnhancingHierarchicalAttentionalPerceptron(spatial_dims, channels, sap_patch_size),
                )
                for _ in range(depth)
            ]
        )
        self.aggregation = JointAggregation(spatial_dims, channels, sap_patch_size, _group_norm(channels), ACTIVATION)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        token_map = self.sap_embedding(x)
        if tuple(token_map.shape[2:]) != self.token_grid:
            raise ValueError(
                f"{NAME}: this stage was built for a {self.token_grid} token grid, the input gives "
                f"{tuple(token_map.shape[2:])}; use the patch size the network was built with"
            )
        tokens = self.sap_layers(token_map.flatten(2).transpose(1, 2) + self.position_embedding)
        global_features = tokens.transpose(1, 2).reshape(token_map.shape)
        return self.aggregation(global_features, self.hap_layers(self.hap_embedding(x)))


class DANIE(nn.Module):
    """DANIE for 2D or 3D patches.

    Args:
        spatial_dims: 2 (the paper) or 3.
        in_channels: image channels.
        out_channels: classes (logit channels, background included).
        patch_size: the training and inference window, array order; every axis a multiple of
            ``patch_multiple`` (default (32, 32) in 2D, (16, 32, 32) in 3D).
        feature_sizes: stage widths; default (48, 96, 192, 384); at least 2 stages, each width at least 2.
        depths: dual attention layers per stage; default (2, 2, 2, 2); each at least 1.
        num_heads: SAP heads per stage, each dividing its width; default (2, 4, 8, 16).
        sap_patch_sizes: per stage, SAP tokens cover this many stage voxels per axis (also EH's key/value
            pooling); default ``max(1, 4 // 2**i)``, i.e. (4, 2, 1, 1).
        mlp_ratio: ES hidden width over the stage width; default 4.0.
        reduction: HAP channel-attention reduction; default 16.
        spatial_kernel_size: HAP spatial-attention kernel edge, odd; default 7.
        hap_order: ``"channel_first"`` (default, the paper's) or ``"spatial_first"`` (ablation).
        hap_calibration: HAP's learnable dynamic calibration; default True (False: ablation).
        stem_stride: stage-0 downsampling per axis, powers of two; default (4, 4) in 2D, (2, 4, 4) in 3D.
        full_resolution_features: channels of the full-resolution skip and last decoder block; default 16.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        patch_size: Sequence[int],
        feature_sizes: Sequence[int] = DEFAULT_FEATURE_SIZES,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        sap_patch_sizes: Sequence[int] | None = None,
        mlp_ratio: float = 4.0,
        reduction: int = 16,
        spatial_kernel_size: int = 7,
        hap_order: str = "channel_first",
        hap_calibration: bool = True,
        stem_stride: Sequence[int] | int | None = None,
        full_resolution_features: int = 16,
    ) -> None:
        super().__init__()
        check_network_args(NAME, spatial_dims, in_channels, out_channels)
        feature_sizes, depths, num_heads = tuple(feature_sizes), tuple(depths), tuple(num_heads)
        stages = len(feature_sizes)
        if stages < 2 or len(depths) != stages or len(num_heads) != stages:
            raise ValueError(
                f"{NAME}: feature_sizes, depths and num_heads need the same length (at least 2), got "
                f"{feature_sizes}, {depths}, {num_heads}"
            )
        if min(feature_sizes) < 2 or min(depths) < 1:
            raise ValueError(
                f"{NAME}: feature_sizes must be at least 2 and depths at least 1, got {feature_sizes}, {depths}"
            )
        if any(heads < 1 or width % heads for width, heads in zip(feature_sizes, num_heads)):
            raise ValueError(
                f"{NAME}: every num_heads entry must divide its stage width, got num_heads={num_heads} "
                f"for feature_sizes={feature_sizes}"
            )
        if hap_order not in HAP_ORDERS:
            raise ValueError(f"{NAME}: hap_order must be one of {HAP_ORDERS}, got {hap_order!r}")
        if mlp_ratio <= 0 or reduction < 1 or full_resolution_features < 1:
            raise ValueError(
                f"{NAME}: mlp_ratio, reduction and full_resolution_features must be positive, got "
                f"{mlp_ratio}, {reduction}, {full_resolution_features}"
            )
        if spatial_kernel_size < 1 or spatial_kernel_size % 2 == 0:
            raise ValueError(f"{NAME}: spatial_kernel_size must be a positive odd integer, got {spatial_kernel_size}")
        stem = check_stem_stride(NAME, spatial_dims, stem_stride, DEFAULT_STEM_STRIDE, powers_of_two=True)
        sap = _sap_patch_sizes(stages, sap_patch_sizes)
        options = {"feature_sizes": feature_sizes, "sap_patch_sizes": sap, "stem_stride": stem}
        self.patch_size = check_patch_size(NAME, patch_size, spatial_dims, patch_multiple(spatial_dims, options))

        strides = [stem] + [(2,) * spatial_dims] * (stages - 1)
        self.stages = nn.ModuleList()
        for i in range(stages):
            stage_size = tuple(p // (s * 2**i) for p, s in zip(self.patch_size, stem))
            self.stages.append(
                DANIEStage(
                    spatial_dims,
                    in_channels if i == 0 else feature_sizes[i - 1],
                    feature_sizes[i],
                    strides[i],
                    stage_size,
                    sap[i],
                    depths[i],
                    num_heads[i],
                    mlp_ratio,
                    reduction,
                    spatial_kernel_size,
                    hap_order,
                    hap_calibration,
                )
            )
        # decoder from coarse to fine, then back to full resolution over the stem
        self.decoder = nn.ModuleList(
            [
                UnetrUpBlock(
                    spatial_dims,
                    feature_sizes[i + 1],
                    feature_sizes[i],
                    kernel_size=3,
                    upsample_kernel_size=2,
                    norm_name=_group_norm(feature_sizes[i]),
                    res_block=True,
                )
                for i in reversed(range(stages - 1))
            ]
        )
        self.full_resolution_skip = UnetResBlock(
            spatial_dims,
            in_channels,
            full_resolution_features,
            kernel_size=3,
            stride=1,
            norm_name=_group_norm(full_resolution_features),
        )
        self.full_resolution_decoder = UnetrUpBlock(
            spatial_dims,
            feature_sizes[0],
            full_resolution_features,
            kernel_size=3,
            upsample_kernel_size=stem,
            norm_name=_group_norm(full_resolution_features),
            res_block=True,
        )
        self.head = UnetOutBlock(spatial_dims, full_resolution_features, out_channels)
        self.apply(init_linear_trunc_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        features = x
        for stage in self.stages:
            features = stage(features)
            skips.append(features)
        for decoder, skip in zip(self.decoder, reversed(skips[:-1])):
            features = decoder(features, skip)
        return self.head(self.full_resolution_decoder(features, self.full_resolution_skip(x)))


MODEL_INFO = ModelInfo(
    name=NAME,
    description="DANIE: self-attention and channel-then-spatial attention streams joined by Joint Preservation",
    paper="Dual Attention Encoder with Joint Preservation for Medical Image Segmentation, ECAI 2024 "
    "(Frontiers in Artificial Intelligence and Applications 392), doi 10.3233/FAIA240505",
    factory=DANIE,
    spatial_dims=(2, 3),
    native_spatial_dims=2,
    default_patch_size={2: (224, 224), 3: (64, 128, 128)},
    patch_multiple=patch_multiple,
    default_config={"spatial_dims": 2, "in_channels": 1, "out_channels": 9},
    # The paper's recipe is not in our material: TransUNet's Synapse protocol, which the paper compares against.
    recipe=TrainingRecipe(
        loss="dice_ce",
        optimizer="sgd",
        learning_rate=1e-2,
        weight_decay=1e-4,
        schedule="poly",
        epochs=150,
        batch_size=24,
        momentum=0.9,
        source="our choice",
    ),
    deep_supervision=False,
    compact_options={
        "feature_sizes": (8, 16),
        "depths": (1, 1),
        "num_heads": (2, 2),
        "sap_patch_sizes": (2, 1),
        "mlp_ratio": 2.0,
        "reduction": 4,
        "spatial_kernel_size": 3,
        "full_resolution_features": 4,
    },
    notes="Runs on exactly its patch size (position embeddings depend on it). Widths and depths are our choice: "
    "the paper's DANIE-L sizes are not published in the material we have. In 3D, SAP tokens cover 4x4x4 and "
    "2x2x2 stage voxels in the first two stages so no attention map exceeds 512 x 512 at 64x128x128.",
)

PRESETS = (
    Preset(
        name="danie_synapse",
        model=NAME,
        spatial_dims=2,
        in_channels=1,
        out_channels=9,
        patch_size=(224, 224),
        description="Synapse multi-organ CT, 2D slices, 8 organs + background (our DANIE-L sizes)",
    ),
)
