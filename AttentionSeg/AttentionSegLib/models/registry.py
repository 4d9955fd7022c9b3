"""One registry for every network: ``build_model``, ``list_models``, presets and their figures.

Each network module declares a ``MODEL_INFO`` (or ``MODEL_INFOS``) and ``PRESETS``; this module
collects them, checks a request once (name, dimensionality, channels, patch size, clinical inputs)
and builds the network. Outputs follow one contract: logits of shape (B, out_channels, *patch);
with ``deep_supervision=True`` and in training mode, a list of logits, full resolution first.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from . import axunet, baselines, danie, iacnn, swinnext, unetrpp
from .blocks.common import check_network_args, check_patch_size
from .spec import ModelInfo, Preset

__all__ = [
    "build_model",
    "build_from_spec",
    "build_preset",
    "get_model_info",
    "get_preset",
    "list_models",
    "list_presets",
    "count_parameters",
    "describe_model",
    "resolve_patch_size",
]

_MODULES = (axunet, iacnn, danie, swinnext, unetrpp)
_INFOS: dict[str, ModelInfo] = {module.MODEL_INFO.name: module.MODEL_INFO for module in _MODULES}
_INFOS.update({info.name: info for info in baselines.MODEL_INFOS})
_PRESETS: dict[str, Preset] = {preset.name: preset for module in (*_MODULES, baselines) for preset in module.PRESETS}


def _unknown(kind: str, name: str, known: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint}; known: {', '.join(known)}")


def list_models(family: str | None = None) -> list[str]:
    """Registry names, attention networks first; ``family`` "attention" or "baseline" filters."""
    return [name for name, info in _INFOS.items() if family is None or info.family == family]


def list_presets() -> list[str]:
    return list(_PRESETS)


def get_model_info(name: str) -> ModelInfo:
    if name not in _INFOS:
        raise _unknown("model", name, list(_INFOS))
    return _INFOS[name]


def get_preset(name: str) -> Preset:
    if name not in _PRESETS:
        raise _unknown("preset", name, list(_PRESETS))
    return _PRESETS[name]


def resolve_patch_size(
    name: str, spatial_dims: int, patch_size: Sequence[int] | None = None, **options: Any
) -> tuple[int, ...]:
    """The patch size a build would use (the network's default when ``None``), checked."""
    info = get_model_info(name)
    if spatial_dims not in info.spatial_dims:
        raise ValueError(
            f"{name}: spatial_dims must be one of {info.spatial_dims}, got {spatial_dims!r}"
            + (f" ({info.notes})" if info.notes else "")
        )
    if patch_size is None:
        patch_size = info.default_patch_size[spatial_dims]
    multiple = info.patch_multiple(spatial_dims, options)
    patch = check_patch_size(name, patch_size, spatial_dims, multiple)
    if any(size < info.min_patch_multiples * m for size, m in zip(patch, multiple)):
        smallest = tuple(info.min_patch_multiples * m for m in multiple)
        raise ValueError(
            f"{name}: every patch_size axis must be at least {smallest} (its bottleneck is normalised "
            f"per channel and needs more than one voxel), got {patch}"
        )
    return patch


def build_model(
    name: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int] | None = None,
    clinical_features: int = 0,
    **options: Any,
) -> nn.Module:
    """Build a registered network.

    Args:
        name: a name from :func:`list_models`.
        spatial_dims: 2 or 3 (see the network's ``spatial_dims``).
        in_channels: image channels.
        out_channels: classes including background (logit channels).
        patch_size: training/inference window in array order; the network's default when omitted.
        clinical_features: length of the clinical feature vector (only networks with ``clinical_input``).
        **options: the network's own constructor options (see its docstring).

    Raises:
        ValueError: unknown name, unsupported dimensionality, bad channel count, a patch size the
            network cannot take, clinical features for a network without clinical input, bad options.
    """
    info = get_model_info(name)
    check_network_args(name, spatial_dims, in_channels, out_channels, info.spatial_dims)
    patch = resolve_patch_size(name, spatial_dims, patch_size, **options)
    if not isinstance(clinical_features, int) or clinical_features < 0:
        raise ValueError(f"{name}: clinical_features must be a non-negative integer, got {clinical_features!r}")
    if clinical_features and not info.clinical_input:
        raise ValueError(
            f"{name} takes no clinical features; networks that do: "
            f"{', '.join(n for n, i in _INFOS.items() if i.clinical_input)}"
        )
    if options.get("deep_supervision") and not info.deep_supervision:
        raise ValueError(f"{name} has no deep supervision")
    if info.clinical_input:
        options["clinical_features"] = clinical_features
    return info.factory(spatial_dims, in_channels, out_channels, patch, **options)


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Build the network a model file or a training plan describes: ``{"name", "spatial_dims",
    "in_channels", "out_channels", "patch_size", "clinical_features", "options"}`` (the arguments of
    :func:`build_model`; the last two optional)."""
    return build_model(
        spec["name"],
        spec["spatial_dims"],
        spec["in_channels"],
        spec["out_channels"],
        spec["patch_size"],
        clinical_features=spec.get("clinical_features", 0),
        **spec.get("options", {}),
    )


def build_preset(name: str, **overrides: Any) -> nn.Module:
    """Build a published configuration (:func:`list_presets`); ``overrides`` replace its options."""
    preset = get_preset(name)
    return build_model(
        preset.model,
        preset.spatial_dims,
        preset.in_channels,
        preset.out_channels,
        preset.patch_size,
        **{**preset.options, **overrides},
    )


def count_parameters(
    name: str,
    spatial_dims: int | None = None,
    in_channels: int | None = None,
    out_channels: int | None = None,
    patch_size: Sequence[int] | None = None,
    **options: Any,
) -> int:
    """Trainable parameters, by default of the network's default configuration. The network is built
    on PyTorch's meta device where it can be (nothing allocated), otherwise on the CPU."""
    config = get_model_info(name).default_config
    arguments = (
        name,
        spatial_dims or config["spatial_dims"],
        in_channels or config["in_channels"],
        out_channels or config["out_channels"],
        patch_size,
    )
    try:
        with torch.device("meta"):
            network = build_model(*arguments, **options)
    except (RuntimeError, NotImplementedError):  # a constructor that reads tensor values (SwinUNETR's drop path)
        network = build_model(*arguments, **options)
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def describe_model(name: str) -> dict[str, Any]:
    """What ``attentionseg models`` prints for one network (plain JSON types)."""
    info = get_model_info(name)
    config = info.default_config
    return {
        "name": info.name,
        "family": info.family,
        "description": info.description,
        "paper": info.paper,
        "spatial_dims": list(info.spatial_dims),
        "native_spatial_dims": info.native_spatial_dims,
        "default_patch_size": {str(dims): list(size) for dims, size in info.default_patch_size.items()},
        "patch_multiple": {str(dims): list(info.patch_multiple(dims, {})) for dims in info.spatial_dims},
        "min_patch_size": {
            str(dims): [info.min_patch_multiples * m for m in info.patch_multiple(dims, {})]
            for dims in info.spatial_dims
        },
        "default_config": dict(config),
        "parameters": count_parameters(name),
        "deep_supervision": info.deep_supervision,
        "clinical_input": info.clinical_input,
        "recipe": info.recipe.as_dict(),
        "presets": [preset.name for preset in _PRESETS.values() if preset.model == name],
        "notes": info.notes,
    }
