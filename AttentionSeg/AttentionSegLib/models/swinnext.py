"""Swin-NeXt with clinical cross-attention (nnY-Net): a Swin Transformer encoder, a MedNeXt decoder and a
cross-attention "Y" branch at the bottleneck that lets a patient's clinical vector query the image.

Liu, Tao, Dong, Sun. "nnY-Net: Swin-NeXt with Cross-Attention for 3D Medical Images Segmentation",
arXiv 2501.01406 (2025). No official code; written from the paper, on MONAI's own Swin Transformer and
MedNeXt blocks (the paper builds on MONAI too).

Paper to code (the paper's statements paraphrased)
--------------------------------------------------
- "Swin Transformer as the encoder, as in SwinUNETR; the image is divided into patches, attention runs in
  M x M x M windows": ``SwinNeXt.encoder`` is MONAI's ``SwinTransformer`` (the encoder of MONAI's
  ``SwinUNETR``): patch embedding 2, four stages with patch merging, every stage output layer-normed as
  SwinUNETR does (``normalize=True``). Its five outputs (C, 2C, 4C, 8C, 16C channels at 1/2 ... 1/32 of
  the patch, C = ``feature_size``) are the skips and the bottleneck.
- "z^l = W-MSA(LN(z^(l-1))) + z^(l-1); z^l = MLP(LN(z^l)) + z^l; z^(l+1) = SW-MSA(LN(z^l)) + z^l;
  z^(l+1) = MLP(LN(z^(l+1))) + z^(l+1)": MONAI's ``SwinTransformerBlock``; within a stage, even blocks use
  windows without shift, odd blocks shifted windows (``depths`` gives the blocks per stage).
- "Attention(Q, K, V) = Softmax(Q K^T / sqrt(d) + B) V": MONAI's ``WindowAttention`` with its relative
  position bias table B.
- "ConvNeXt (MedNeXt) as the decoder; upsampling by transposed convolution Y = sum K X_expanded; GELU":
  ``up_blocks`` are ``MedNeXtUpBlock`` (depthwise transposed convolution, stride 2, GELU, residual
  transposed 1x1 convolution), ``decoder_stages`` and ``bottleneck`` are ``MedNeXtBlock`` (depthwise
  convolution, norm, 1x1 expansion, GELU, 1x1 compression, residual); skips are added, as in MedNeXt.
- "a cross-attention module at the bottom of the U-Net: the lowest-level encoder feature map is Key and
  Value, the patient features (pathology, treatment), mapped to a suitable dimension by fully connected
  layers, are the Query": ``clinical_attention``, a
  :class:`~.blocks.clinical_cross_attention.ClinicalCrossAttention` on the 1/32 map.
- "DiceFocalCELoss = Dice + Focal + cross-entropy": ``MODEL_INFO.recipe.loss = "dice_focal_ce"``.
- "sliding-window inference, blocks to avoid running out of memory": the network runs on any patch that
  is a multiple of 32 per axis; inference slides the training window.

Choices the paper leaves open (all our choice)
----------------------------------------------
- Encoder widths and depths: SwinUNETR's published setting, ``feature_size`` 48, ``depths`` (2, 2, 2, 2),
  ``num_heads`` (3, 6, 12, 24), window 7, MLP ratio 4, q/k/v bias, patch embedding 2, no dropout or drop path.
- SwinUNETR's residual convolution blocks on the skips belong to its (replaced) decoder; here the Swin
  outputs go to the MedNeXt decoder directly.
- Full-resolution skip (the Swin encoder starts at 1/2): MedNeXt's stem (a 1x1 convolution from the image to
  C channels) and one ``MedNeXtBlock``.
- Decoder: five stages back to full resolution, widths mirroring the encoder (16C -> 8C -> 4C -> 2C -> C -> C);
  MedNeXt-S settings: ``decoder_blocks`` = 2 blocks per stage and at the bottleneck, expansion ratio 2,
  kernel 3, residual connections. Output: ``MedNeXtOutBlock``.
- Normalisation in the MedNeXt blocks: ConvNeXt's LayerNorm over the channels of each voxel
  (:class:`ChannelLayerNorm`), not MedNeXt's GroupNorm with one group per channel, for two reasons: that
  GroupNorm normalises every channel over the voxels, which fails at batch 1 (and gives zeros otherwise) on
  the one-voxel 1/32 map of a 32-voxel patch, and it would cancel the FiLM fusion's per-channel scale and
  shift inside the bottleneck blocks' branches (only the residual path would keep them).
  ``decoder_norm="group"`` restores MedNeXt's normalisation.
- Clinical branch: one query token per patient from ``Linear(n, 16C) -> GELU -> Linear(16C, 16C)``;
  ``clinical_heads`` = 8 heads; keys and values are the layer-normed bottleneck tokens, without position
  embedding; the attended token is fused back by FiLM, ``y = x * (1 + gamma) + beta`` with
  ``(gamma, beta) = Linear(a)``, per channel over all voxels, before the bottleneck blocks (see the block's
  docstring for why FiLM rather than a plain add).
- ``forward(x)`` without a clinical vector on a network built with clinical features skips the fusion (the
  identity, FiLM with gamma = beta = 0): the plain Swin-NeXt path. Clinical values are used as given;
  standardise them (zero mean, unit variance per variable) in the data pipeline.
- Deep supervision: MedNeXt's ``MedNeXtOutBlock`` heads on the decoder outputs at 1/2, 1/4, 1/8 and 1/16
  (not on the 1/32 bottleneck, 3 voxels wide for a 96 patch).
- 2D form: the same network with MONAI's 2D Swin Transformer and 2D MedNeXt blocks.
- Default patch 96 x 96 x 96 (SwinUNETR's BTCV window) and 256 x 256 in 2D; every axis a
  multiple of 32 = patch embedding 2 x 2**4 patch mergings (fixed: MONAI's Swin Transformer has four stages).

Parameters of the default configuration (3D, 1 channel, 3 classes): 17,280,597 without clinical input
(``swinnext_liver``; 8,062,002 of them in the Swin encoder); with the paper's 56 clinical variables
(``swinnext_liver_clinical``) the cross-attention branch adds 4,175,616, 21,456,213 in all.

Example::

    >>> net = SwinNeXt(3, in_channels=1, out_channels=3, patch_size=(96, 96, 96), clinical_features=8)
    >>> x, clinical = torch.randn(1, 1, 96, 96, 96), torch.randn(1, 8)
    >>> net(x, clinical).shape, net(x).shape
    (torch.Size([1, 3, 96, 96, 96]), torch.Size([1, 3, 96, 96, 96]))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks.mednext_block import MedNeXtBlock, MedNeXtOutBlock, MedNeXtUpBlock
from monai.networks.nets.swin_unetr import SwinTransformer

from .blocks.clinical_cross_attention import ClinicalCrossAttention
from .blocks.common import check_network_args, check_patch_size, conv_type
from .spec import ModelInfo, Preset, TrainingRecipe

__all__ = ["SwinNeXt", "ChannelLayerNorm", "patch_multiple", "MODEL_INFO", "PRESETS"]

NAME = "swinnext"
SWIN_STAGES = 4  # MONAI's SwinTransformer.forward runs exactly four stages
PATCH_EMBEDDING = 2


def patch_multiple(spatial_dims: int, options: Mapping[str, Any]) -> tuple[int, ...]:
    """Patch embedding 2 times 2**4 patch mergings: 32 on every axis, whatever the options."""
    return (PATCH_EMBEDDING * 2**SWIN_STAGES,) * spatial_dims


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each voxel of a (B, C, *spatial) map: ConvNeXt's "channels_first"
    LayerNorm, which MONAI lacks (its MedNeXt ``norm_type="layer"`` only takes maps of exactly kernel size).

    Args:
        channels: C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class SwinNeXt(nn.Module):
    """Swin-NeXt (Swin Transformer encoder, MedNeXt decoder) with optional clinical cross-attention.

    Args:
        spatial_dims: 3 (the paper) or 2.
        in_channels: image channels.
        out_channels: classes (logit channels, background included).
        patch_size: the training window, array order; every axis a multiple of 32.
        feature_size: C, the Swin embedding width; stage i has C * 2**i channels and the bottleneck 16 C;
            default 48.
        depths: Swin blocks per stage, four positive values; default (2, 2, 2, 2).
        num_heads: window-attention heads per stage, four values, each dividing that stage's width;
            default (3, 6, 12, 24).
        window_size: attention window edge M in tokens, at least 1; default 7.
        mlp_ratio: Swin MLP hidden width over the token width, positive; default 4.0.
        decoder_blocks: ``MedNeXtBlock`` s per decoder stage and at the bottleneck, at least 1; default 2.
        expansion_ratio: MedNeXt blocks' 1x1 expansion factor, at least 1; default 2.
        kernel_size: MedNeXt depthwise kernel, odd and positive; default 3.
        decoder_norm: normalisation inside the MedNeXt blocks: ``"layer"`` (default, ConvNeXt's LayerNorm over
            the channels of each voxel) or ``"group"`` (MedNeXt's GroupNorm with one group per channel, which
            needs more than one voxel per channel at 1/32: batch 1 on a 32-voxel patch fails).
        clinical_features: length n of the clinical vector; 0 (default) builds no cross-attention
            (plain Swin-NeXt); n > 0 builds it and ``forward`` takes ``clinical`` of shape (B, n).
        clinical_heads: heads of the clinical cross-attention, dividing 16 C; default 8.
        deep_supervision: build four auxiliary heads; in training mode ``forward`` returns
            ``[full, 1/2, 1/4, 1/8, 1/16]`` resolution logits. Default False.

    Raises:
        ValueError: a bad argument (the message names it); in ``forward``, a clinical vector of the wrong
            shape or one given to a network built with ``clinical_features=0``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        patch_size: Sequence[int],
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        decoder_blocks: int = 2,
        expansion_ratio: int = 2,
        kernel_size: int = 3,
        decoder_norm: str = "layer",
        clinical_features: int = 0,
        clinical_heads: int = 8,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        check_network_args(NAME, spatial_dims, in_channels, out_channels)
        self.patch_size = check_patch_size(NAME, patch_size, spatial_dims, patch_multiple(spatial_dims, {}))
        depths, num_heads = tuple(depths), tuple(num_heads)
        widths = [feature_size * 2**i for i in range(SWIN_STAGES + 1)]  # C ... 16C; 16C at the bottleneck
        _check_encoder_options(feature_size, depths, num_heads, window_size, mlp_ratio)
        _check_decoder_options(decoder_blocks, expansion_ratio, kernel_size, clinical_features, clinical_heads, widths)
        if decoder_norm not in ("layer", "group"):
            raise ValueError(f"{NAME}: decoder_norm must be 'layer' or 'group', got {decoder_norm!r}")
        self.clinical_features = clinical_features
        self.deep_supervision = deep_supervision
        dim = f"{spatial_dims}d"
        mednext = dict(expansion_ratio=expansion_ratio, kernel_size=kernel_size, use_residual_connection=True, dim=dim)

        def normed(block: MedNeXtBlock) -> MedNeXtBlock:
            if decoder_norm == "layer":
                block.norm = ChannelLayerNorm(block.norm.num_channels)
            return block

        def blocks(channels: int, count: int) -> nn.Sequential:
            return nn.Sequential(*[normed(MedNeXtBlock(channels, channels, **mednext)) for _ in range(count)])

        self.encoder = SwinTransformer(
            in_chans=in_channels,
            embed_dim=feature_size,
            window_size=(window_size,) * spatial_dims,
            patch_size=(PATCH_EMBEDDING,) * spatial_dims,
            depths=depths,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            spatial_dims=spatial_dims,
            downsample="merging",
        )
        self.stem = nn.Sequential(
            conv_type(spatial_dims)(in_channels, feature_size, kernel_size=1), blocks(feature_size, 1)
        )
        self.clinical_attention = (
            ClinicalCrossAttention(clinical_features, widths[-1], clinical_heads) if clinical_features else None
        )
        self.bottleneck = blocks(widths[-1], decoder_blocks)
        # Decoder from 1/32 to full resolution: widths 16C -> 8C -> 4C -> 2C -> C -> C.
        decoder_widths = [*reversed(widths[:-1]), feature_size]
        self.up_blocks = nn.ModuleList(
            [
                normed(MedNeXtUpBlock(c_in, c_out, **mednext))
                for c_in, c_out in zip([widths[-1], *decoder_widths[:-1]], decoder_widths)
            ]
        )
        self.decoder_stages = nn.ModuleList([blocks(width, decoder_blocks) for width in decoder_widths])
        self.head = MedNeXtOutBlock(feature_size, out_channels, dim=dim)
        if deep_supervision:  # on the 1/2, 1/4, 1/8 and 1/16 decoder outputs
            self.auxiliary_heads = nn.ModuleList(
                [MedNeXtOutBlock(width, out_channels, dim=dim) for width in reversed(decoder_widths[:-1])]
            )

    def forward(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
        """``x``: (B, in_channels, *spatial); ``clinical``: (B, clinical_features) or None (fusion skipped).

        Returns logits (B, out_channels, *spatial); with deep supervision in training mode a list,
        full resolution first."""
        if clinical is not None and self.clinical_attention is None:
            raise ValueError(
                f"{NAME} was built with clinical_features=0 and takes no clinical vector; "
                f"got one of shape {tuple(clinical.shape)}"
            )
        hidden = self.encoder(x, normalize=True)  # 1/2, 1/4, 1/8, 1/16, 1/32
        skips = [self.stem(x), *hidden[:-1]]
        features = hidden[-1]
        if clinical is not None:
            features = self.clinical_attention(features, clinical)
        features = self.bottleneck(features)
        decoded = []
        for up_block, stage, skip in zip(self.up_blocks, self.decoder_stages, reversed(skips)):
            features = stage(up_block(features) + skip)
            decoded.append(features)
        logits = self.head(features)
        if self.deep_supervision and self.training:
            # decoded[-2] is at 1/2, decoded[-3] at 1/4, ...
            return [logits] + [head(decoded[-2 - i]) for i, head in enumerate(self.auxiliary_heads)]
        return logits


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_encoder_options(
    feature_size: int, depths: tuple[int, ...], num_heads: tuple[int, ...], window_size: int, mlp_ratio: float
) -> None:
    if not _positive_int(feature_size):
        raise ValueError(f"{NAME}: feature_size must be a positive integer, got {feature_size!r}")
    if len(depths) != SWIN_STAGES or not all(_positive_int(d) for d in depths):
        raise ValueError(f"{NAME}: depths must be {SWIN_STAGES} positive integers, got {depths!r}")
    widths = [feature_size * 2**i for i in range(SWIN_STAGES)]
    if len(num_heads) != SWIN_STAGES or not all(_positive_int(h) and w % h == 0 for h, w in zip(num_heads, widths)):
        raise ValueError(
            f"{NAME}: num_heads must be {SWIN_STAGES} positive integers dividing the stage widths {tuple(widths)}, "
            f"got {num_heads!r}"
        )
    if not _positive_int(window_size):
        raise ValueError(f"{NAME}: window_size must be a positive integer, got {window_size!r}")
    if not mlp_ratio > 0:
        raise ValueError(f"{NAME}: mlp_ratio must be positive, got {mlp_ratio!r}")


def _check_decoder_options(
    decoder_blocks: int,
    expansion_ratio: int,
    kernel_size: int,
    clinical_features: int,
    clinical_heads: int,
    widths: list[int],
) -> None:
    if not _positive_int(decoder_blocks):
        raise ValueError(f"{NAME}: decoder_blocks must be a positive integer, got {decoder_blocks!r}")
    if not _positive_int(expansion_ratio):
        raise ValueError(f"{NAME}: expansion_ratio must be a positive integer, got {expansion_ratio!r}")
    if not _positive_int(kernel_size) or kernel_size % 2 == 0:
        raise ValueError(f"{NAME}: kernel_size must be a positive odd integer, got {kernel_size!r}")
    if not (clinical_features == 0 or _positive_int(clinical_features)):
        raise ValueError(f"{NAME}: clinical_features must be a non-negative integer, got {clinical_features!r}")
    if clinical_features and (not _positive_int(clinical_heads) or widths[-1] % clinical_heads):
        raise ValueError(
            f"{NAME}: clinical_heads must be a positive divisor of the bottleneck width {widths[-1]}, "
            f"got {clinical_heads!r}"
        )


MODEL_INFO = ModelInfo(
    name=NAME,
    description="Swin-NeXt (nnY-Net): Swin Transformer encoder, MedNeXt decoder, clinical cross-attention",
    paper="Liu, Tao, Dong, Sun, nnY-Net: Swin-NeXt with Cross-Attention for 3D Medical Images Segmentation, "
    "arXiv 2501.01406",
    factory=SwinNeXt,
    spatial_dims=(2, 3),
    native_spatial_dims=3,
    default_patch_size={3: (96, 96, 96), 2: (256, 256)},
    patch_multiple=patch_multiple,
    default_config={"spatial_dims": 3, "in_channels": 1, "out_channels": 3},
    # Loss from the paper; the optimiser, rate and schedule are SwinUNETR's (the paper gives none).
    recipe=TrainingRecipe(
        loss="dice_focal_ce",
        optimizer="adamw",
        learning_rate=1e-4,
        weight_decay=1e-5,
        schedule="warmup_cosine",
        epochs=300,
        batch_size=2,
        source="paper (loss); our choice (optimizer, learning rate, schedule, as SwinUNETR)",
    ),
    deep_supervision=True,
    clinical_input=True,
    compact_options={
        "feature_size": 6,
        "depths": (2, 2, 2, 2),
        "num_heads": (1, 1, 2, 2),
        "window_size": 4,
        "decoder_blocks": 1,
        "clinical_heads": 2,
    },
    notes="forward(x, clinical) with clinical of shape (B, clinical_features), standardised per variable; "
    "forward(x) skips the cross-attention. Patch axes must be multiples of 32.",
)

PRESETS = (
    Preset(
        name="swinnext_liver",
        model=NAME,
        spatial_dims=3,
        in_channels=1,
        out_channels=3,
        patch_size=(96, 96, 96),
        description="liver and liver-tumour CT, image only (plain Swin-NeXt; 17.3 M parameters)",
    ),
    Preset(
        name="swinnext_liver_clinical",
        model=NAME,
        spatial_dims=3,
        in_channels=1,
        out_channels=3,
        patch_size=(96, 96, 96),
        options={"clinical_features": 56},
        description="liver and liver-tumour CT with the paper's 56 pathology and treatment variables "
        "as cross-attention query (nnY-Net; 21.5 M parameters)",
    ),
)
