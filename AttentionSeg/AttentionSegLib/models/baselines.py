"""MONAI 1.6 baselines behind the same contract as the attention networks.

The networks are MONAI's own classes, wrapped, not rewritten. The wrapper only evens out what
differs between them: every factory takes ``patch_size`` (UNETR needs it as ``img_size``; the others
ignore it once it is checked), and deep-supervision outputs become one list, full resolution first
(DynUNet stacks them into one tensor; MedNeXt already returns a list).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks import nets

from .blocks.common import check_network_args
from .spec import ModelInfo, TrainingRecipe

__all__ = ["MODEL_INFOS", "PRESETS", "DeepSupervisionOutputs"]

PRESETS = ()


class DeepSupervisionOutputs(nn.Module):
    """Wraps a MONAI network so deep supervision yields ``[full, coarser, ...]`` in training mode
    and one tensor otherwise."""

    def __init__(self, network: nn.Module, deep_supervision: bool) -> None:
        super().__init__()
        self.network = network
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        output = self.network(x)
        if isinstance(output, torch.Tensor) and output.dim() == x.dim() + 1:  # DynUNet: (B, heads, C, ...)
            output = list(output.unbind(dim=1))
        if isinstance(output, (list, tuple)):
            return list(output) if self.training and self.deep_supervision else output[0]
        return output


def _product(values: Sequence[int]) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result


def _unet_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    return {"channels": (32, 64, 128, 256, 320), "strides": (2, 2, 2, 2), "num_res_units": 2, **options}


def _attention_unet_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    return {"channels": (32, 64, 128, 256, 512), "strides": (2, 2, 2, 2), **options}


def _dynunet_defaults(spatial_dims: int, options: Mapping[str, Any]) -> dict[str, Any]:
    levels = int(options.get("levels", 6))
    if levels < 2:
        raise ValueError(f"dynunet: levels must be at least 2, got {levels}")
    options = {key: value for key, value in options.items() if key != "levels"}
    cap = 320 if spatial_dims == 3 else 512
    filters = [min(32 * 2**i, cap) for i in range(levels)]
    # Two auxiliary outputs as nnU-Net uses, fewer when the network is too shallow for two.
    return {
        "kernel_size": [3] * levels,
        "strides": [1] + [2] * (levels - 1),
        "upsample_kernel_size": [2] * (levels - 1),
        "filters": filters,
        "res_block": True,
        "deep_supr_num": min(2, levels - 2),
        **options,
    }


def _build_unet(spatial_dims, in_channels, out_channels, patch_size, **options):
    return nets.UNet(spatial_dims, in_channels, out_channels, **_unet_defaults(options))


def _build_attention_unet(spatial_dims, in_channels, out_channels, patch_size, **options):
    return nets.AttentionUnet(spatial_dims, in_channels, out_channels, **_attention_unet_defaults(options))


def _build_unetr(spatial_dims, in_channels, out_channels, patch_size, **options):
    network = nets.UNETR(
        in_channels,
        out_channels,
        img_size=tuple(patch_size),
        spatial_dims=spatial_dims,
        **{"feature_size": 16, **options},
    )
    # MONAI builds a cross-attention LayerNorm in every ViT block even without cross-attention; it never
    # gets a gradient, so it would only sit in checkpoints and in the optimiser's weight decay.
    for block in network.vit.blocks:
        if not block.with_cross_attention:
            block.norm_cross_attn = nn.Identity()
    return network


def _build_swin_unetr(spatial_dims, in_channels, out_channels, patch_size, **options):
    return nets.SwinUNETR(in_channels, out_channels, spatial_dims=spatial_dims, **{"feature_size": 48, **options})


def _build_segresnet(spatial_dims, in_channels, out_channels, patch_size, **options):
    return nets.SegResNet(
        spatial_dims, in_channels=in_channels, out_channels=out_channels, **{"init_filters": 16, **options}
    )


def _build_dynunet(spatial_dims, in_channels, out_channels, patch_size, **options):
    deep_supervision = bool(options.pop("deep_supervision", False))
    network = nets.DynUNet(
        spatial_dims,
        in_channels,
        out_channels,
        deep_supervision=deep_supervision,
        **_dynunet_defaults(spatial_dims, options),
    )
    return DeepSupervisionOutputs(network, deep_supervision)


def _build_mednext(spatial_dims, in_channels, out_channels, patch_size, **options):
    deep_supervision = bool(options.pop("deep_supervision", False))
    network = nets.MedNeXt(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        deep_supervision=deep_supervision,
        **{"kernel_size": 3, **options},
    )
    return DeepSupervisionOutputs(network, deep_supervision)


def _checked(name: str, factory):
    """Adds the common argument checks to a MONAI factory."""

    def build(spatial_dims, in_channels, out_channels, patch_size, **options):
        check_network_args(name, spatial_dims, in_channels, out_channels)
        return factory(spatial_dims, in_channels, out_channels, patch_size, **options)

    build.__name__ = f"build_{name}"
    return build


def _strides_multiple(defaults):
    return lambda dims, options: (_product(defaults(options)["strides"]),) * dims


_MONAI = "MONAI 1.6 monai.networks.nets."
_BASELINE_CONFIG = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}
_ADAMW = TrainingRecipe(
    loss="dice_ce",
    optimizer="adamw",
    learning_rate=1e-4,
    weight_decay=1e-5,
    schedule="cosine",
    epochs=300,
    batch_size=2,
)
_SGD_POLY = TrainingRecipe(
    loss="dice_ce",
    optimizer="sgd",
    learning_rate=1e-2,
    weight_decay=3e-5,
    schedule="poly",
    epochs=1000,
    batch_size=2,
    momentum=0.99,
    source="nnU-Net's defaults",
)


def _info(
    name: str,
    description: str,
    factory,
    patch_multiple,
    recipe: TrainingRecipe,
    compact: dict,
    deep_supervision: bool = False,
    patch3d=(96, 96, 96),
    patch2d=(256, 256),
    notes: str = "",
    min_patch_multiples: int = 2,
) -> ModelInfo:
    return ModelInfo(
        name=name,
        description=description,
        paper="",
        factory=_checked(name, factory),
        spatial_dims=(2, 3),
        native_spatial_dims=3,
        default_patch_size={3: patch3d, 2: patch2d},
        patch_multiple=patch_multiple,
        default_config=_BASELINE_CONFIG,
        recipe=recipe,
        family="baseline",
        deep_supervision=deep_supervision,
        compact_options=compact,
        notes=notes,
        min_patch_multiples=min_patch_multiples,
    )


MODEL_INFOS = (
    _info(
        "unet",
        f"residual U-Net ({_MONAI}UNet)",
        _build_unet,
        _strides_multiple(_unet_defaults),
        _ADAMW,
        {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1},
    ),
    _info(
        "attention_unet",
        f"U-Net with attention gates ({_MONAI}AttentionUnet)",
        _build_attention_unet,
        _strides_multiple(_attention_unet_defaults),
        _ADAMW,
        {"channels": (4, 8, 16), "strides": (2, 2)},
    ),
    _info(
        "unetr",
        f"ViT encoder with convolutional decoder ({_MONAI}UNETR)",
        _build_unetr,
        lambda dims, options: (16,) * dims,
        _ADAMW,
        {"feature_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_heads": 2},
        min_patch_multiples=1,
        notes="Runs on exactly its patch size (ViT positional embeddings).",
    ),
    _info(
        "swin_unetr",
        f"Swin Transformer encoder, CNN decoder ({_MONAI}SwinUNETR)",
        _build_swin_unetr,
        lambda dims, options: (32,) * dims,
        _ADAMW,
        {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 2, "norm_name": "batch"},
    ),
    _info(
        "segresnet",
        f"residual encoder-decoder ({_MONAI}SegResNet)",
        _build_segresnet,
        lambda dims, options: (2 ** (len(options.get("blocks_down", (1, 2, 2, 4))) - 1),) * dims,
        _ADAMW,
        {"init_filters": 4, "blocks_down": (1, 1, 1), "blocks_up": (1, 1), "norm": ("GROUP", {"num_groups": 2})},
        min_patch_multiples=1,
    ),
    _info(
        "dynunet",
        f"nnU-Net-style dynamic U-Net ({_MONAI}DynUNet)",
        _build_dynunet,
        lambda dims, options: (2 ** (int(options.get("levels", 6)) - 1),) * dims,
        _SGD_POLY,
        {"levels": 3, "filters": (4, 8, 16)},
        deep_supervision=True,
        patch3d=(128, 128, 128),
        patch2d=(512, 512),
    ),
    _info(
        "mednext",
        f"ConvNeXt-style U-Net ({_MONAI}MedNeXt, kernel 3)",
        _build_mednext,
        lambda dims, options: (2 ** len(options.get("blocks_down", (2, 2, 2, 2))),) * dims,
        _ADAMW,
        {"init_filters": 4, "blocks_down": (1, 1), "blocks_bottleneck": 1, "blocks_up": (1, 1)},
        deep_supervision=True,
        patch3d=(128, 128, 128),
    ),
)
