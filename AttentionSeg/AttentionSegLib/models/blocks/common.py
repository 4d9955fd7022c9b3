"""Argument checks and small layer factories shared by every network in the zoo.

Every network validates its arguments when it is built, with a ``ValueError`` that names the
argument and the rule, so a bad configuration fails before any tensor is allocated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch.nn as nn

__all__ = [
    "check_network_args",
    "check_patch_size",
    "check_features",
    "check_stem_stride",
    "conv_type",
    "conv_transpose_type",
    "norm_type",
    "max_pool_type",
]


def check_network_args(
    network: str, spatial_dims: int, in_channels: int, out_channels: int, supported_dims: Sequence[int] = (2, 3)
) -> None:
    """Raise ``ValueError`` unless the dimensionality and channel counts are usable.

    Args:
        network: the network's name, quoted in the message.
        spatial_dims: 2 or 3 (must be in ``supported_dims``).
        in_channels: number of image channels, at least 1.
        out_channels: number of output classes (logit channels), at least 1.
        supported_dims: the dimensionalities this network implements.
    """
    if spatial_dims not in supported_dims:
        raise ValueError(f"{network}: spatial_dims must be one of {tuple(supported_dims)}, got {spatial_dims!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"{network}: in_channels must be a positive integer, got {in_channels!r}")
    if not isinstance(out_channels, int) or out_channels < 1:
        raise ValueError(f"{network}: out_channels must be a positive integer, got {out_channels!r}")


def check_patch_size(
    network: str, patch_size: Sequence[int], spatial_dims: int, multiple: int | Sequence[int]
) -> tuple[int, ...]:
    """Return ``patch_size`` as a tuple, or raise ``ValueError`` when an axis is not a positive
    multiple of ``multiple`` (one int for every axis, or one per axis in array order)."""
    try:
        patch = tuple(int(size) for size in patch_size)
    except TypeError:
        raise ValueError(
            f"{network}: patch_size must be a sequence of {spatial_dims} integers, got {patch_size!r}"
        ) from None
    if len(patch) != spatial_dims:
        raise ValueError(
            f"{network}: patch_size must have {spatial_dims} values for spatial_dims={spatial_dims}, got {patch_size!r}"
        )
    multiples = (multiple,) * spatial_dims if isinstance(multiple, int) else tuple(multiple)
    bad = [(size, m) for size, m in zip(patch, multiples) if size < m or size % m]
    if bad:
        raise ValueError(
            f"{network}: every patch_size axis must be a positive multiple of "
            f"{multiples if len(set(multiples)) > 1 else multiples[0]}, got {patch}"
        )
    return patch


def check_features(network: str, features: Iterable[int] | int, levels: int | None = None) -> tuple[int, ...]:
    """Return the channel widths, one per level, as a tuple, or raise ``ValueError`` unless they are
    ``levels`` positive integers (None: any number, at least 2). A single int is one level."""
    widths = tuple(features) if isinstance(features, Iterable) else (features,)
    count = len(widths) == levels if levels is not None else len(widths) >= 2
    if not count or any(not isinstance(w, int) or w < 1 for w in widths):
        rule = f"{levels}" if levels is not None else "at least 2"
        raise ValueError(f"{network}: features must be {rule} positive integers, got {features!r}")
    return widths


def check_stem_stride(
    network: str,
    spatial_dims: int,
    stem_stride: Sequence[int] | int | None,
    default: Mapping[int, tuple[int, ...]],
    powers_of_two: bool = False,
) -> tuple[int, ...]:
    """The stem's downsampling per axis (array order): ``default[spatial_dims]`` for None, an int
    for every axis, or one per axis. Raise ``ValueError`` unless they are positive integers, or
    with ``powers_of_two`` powers of two with at least one above 1."""
    if stem_stride is None:
        return default[spatial_dims]
    stride = (stem_stride,) * spatial_dims if isinstance(stem_stride, int) else tuple(stem_stride)
    if powers_of_two:
        if len(stride) != spatial_dims or any(s < 1 or s & (s - 1) for s in stride) or max(stride) < 2:
            raise ValueError(
                f"{network}: stem_stride must be {spatial_dims} powers of two, at least one above 1, "
                f"got {stem_stride!r}"
            )
    elif len(stride) != spatial_dims or min(stride) < 1:
        raise ValueError(f"{network}: stem_stride must be {spatial_dims} positive integers, got {stem_stride!r}")
    return stride


def conv_type(spatial_dims: int) -> type[nn.Module]:
    return (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]


def conv_transpose_type(spatial_dims: int) -> type[nn.Module]:
    return (nn.ConvTranspose2d, nn.ConvTranspose3d)[spatial_dims - 2]


def max_pool_type(spatial_dims: int) -> type[nn.Module]:
    return (nn.MaxPool2d, nn.MaxPool3d)[spatial_dims - 2]


def norm_type(name: str, spatial_dims: int) -> type[nn.Module]:
    """``batch`` or ``instance`` normalisation for ``spatial_dims``."""
    table = {"batch": (nn.BatchNorm2d, nn.BatchNorm3d), "instance": (nn.InstanceNorm2d, nn.InstanceNorm3d)}
    if name not in table:
        raise ValueError(f"norm must be one of {sorted(table)}, got {name!r}")
    return table[name][spatial_dims - 2]


def init_linear_trunc_normal(module: nn.Module) -> None:
    """Transformer-style start for linear layers (truncated normal, std 0.02, zero bias); use with
    ``network.apply``."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
