"""The model zoo: five attention networks and MONAI baselines behind one registry.

``build_model(name, spatial_dims, in_channels, out_channels, patch_size)`` builds any of them;
``list_models()`` names them; ``describe_model(name)`` gives what ``attentionseg models`` prints.
The registry (and with it MONAI's networks) is imported on first use, so that commands which
only need ``spec`` (recipe choices) start fast.
"""

from importlib import import_module

from .spec import ModelInfo, Preset, TrainingRecipe

_REGISTRY_NAMES = (
    "build_model",
    "build_from_spec",
    "build_preset",
    "count_parameters",
    "describe_model",
    "get_model_info",
    "get_preset",
    "list_models",
    "list_presets",
    "resolve_patch_size",
)

__all__ = ["ModelInfo", "Preset", "TrainingRecipe", *_REGISTRY_NAMES]


def __getattr__(name: str):
    if name in _REGISTRY_NAMES:
        return getattr(import_module(f"{__name__}.registry"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
