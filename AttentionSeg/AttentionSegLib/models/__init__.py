"""The model zoo: five attention networks and MONAI baselines behind one registry.

``build_model(name, spatial_dims, in_channels, out_channels, patch_size)`` builds any of them;
``list_models()`` names them; ``describe_model(name)`` gives what ``attentionseg models`` prints.
"""

from .registry import (
    build_model,
    build_preset,
    count_parameters,
    describe_model,
    get_model_info,
    get_preset,
    list_models,
    list_presets,
    resolve_patch_size,
)
from .spec import ModelInfo, Preset, TrainingRecipe

__all__ = [
    "ModelInfo",
    "Preset",
    "TrainingRecipe",
    "build_model",
    "build_preset",
    "count_parameters",
    "describe_model",
    "get_model_info",
    "get_preset",
    "list_models",
    "list_presets",
    "resolve_patch_size",
]
