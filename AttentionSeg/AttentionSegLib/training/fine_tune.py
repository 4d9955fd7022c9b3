"""Fine-tuning: a run that starts from a model file's weights (``attentionseg train --init MODEL_FILE``).

The model file decides what gives its weights their meaning, and the run keeps it: the network and
its options, the grid (target spacing and patch), the intensity normalisation (the model's own
statistics, not refitted: the weights learned those intensities), interactive or automatic, the
click radius. The experiment planner still plans the rest (epochs, learning rate, batch).

A dataset with labels the model lacks gets new output channels, freshly initialised; the model's
channels keep their weights, moved to their place in the new label order. Anything else that differs
(another network or channel count, a label the dataset lacks or names otherwise, clinical inputs) is
refused in one line naming what differs.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from AttentionSegLib.errors import AttentionSegError

if TYPE_CHECKING:
    import torch

    from AttentionSegLib.inference.model_file import ModelFile
    from AttentionSegLib.training.config import TrainingConfig
    from AttentionSegLib.training.run_plan import TrainingPlan

__all__ = ["MODEL_SETTINGS", "base_model", "settings_from_model", "check_dataset_fits", "load_base_weights"]

# The settings a fine-tune takes from its base model (never from the planner or a flag).
MODEL_SETTINGS = ("model", "options", "patch_size", "target_spacing", "interactive", "click_radius_mm", "slice_wise")


def base_model(path: str | Path) -> ModelFile:
    """The model file a run starts from (read once per file version)."""
    path = Path(path)
    if not path.is_file():
        raise AttentionSegError(f"--init {path}: model file not found")
    return _read(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read(path: str, mtime_ns: int) -> ModelFile:
    from AttentionSegLib.inference.model_file import load_model_file

    return load_model_file(path)


def settings_from_model(config: TrainingConfig) -> TrainingConfig:
    """``config`` with the settings of :data:`MODEL_SETTINGS` taken from its ``--init`` model file.

    Raises:
        AttentionSegError: a setting given that contradicts the model (``--model unetr`` on a UNet's
            file, ``--interactive`` on an automatic one ...), or a model that is not a fine-tuning base
            (the promptable generalist trains with ``train-generalist --init``).
    """
    from AttentionSegLib.training.config import TrainingConfig, field_default

    base = base_model(config.init)
    if base.target_spacing is None:
        raise AttentionSegError(
            f"--init {config.init}: a promptable generalist (no fixed spacing); continue it with "
            "attentionseg train-generalist --init"
        )
    taken = {
        "model": base.network["name"],
        "options": dict(base.network.get("options") or {}),
        "patch_size": list(base.patch_size),
        "target_spacing": list(base.target_spacing),
        "interactive": base.is_interactive,
        "click_radius_mm": float(base.prompt_encoding.click_radius_mm) if base.is_interactive else None,
        "slice_wise": base.slice_wise,
    }
    defaults = {item.name: field_default(item) for item in TrainingConfig.__dataclass_fields__.values()}
    for name, value in taken.items():
        given = getattr(config, name)
        if given not in (None, "", defaults[name]) and _differs(given, value):
            raise AttentionSegError(
                f"--init {config.init}: the model's {name.replace('_', ' ')} is {value}, the run asks for {given}; "
                "a fine-tune keeps the model's (leave the setting out)"
            )
    return replace(config, **taken, compact=False)


def _differs(given, value) -> bool:
    if isinstance(value, list):
        return [float(v) for v in given] != [float(v) for v in value]
    if isinstance(value, float):
        return abs(float(given) - value) > 1e-6
    return given != value


def check_dataset_fits(base: ModelFile, plan: TrainingPlan, source: str) -> None:
    """Refuse a dataset the base model's weights cannot continue on, in one line naming what differs."""
    where = f"--init {source}"
    if len(base.channel_names) != len(plan.channel_names):
        raise AttentionSegError(
            f"{where}: the model reads {len(base.channel_names)} image channel(s) ({', '.join(base.channel_names)}), "
            f"the dataset has {len(plan.channel_names)} ({', '.join(plan.channel_names)})"
        )
    clinical = base.network.get("clinical_features", 0)
    if clinical != plan.network.get("clinical_features", 0):
        raise AttentionSegError(
            f"{where}: the model takes {clinical} clinical variable(s), the dataset gives "
            f"{plan.network.get('clinical_features', 0)}"
        )
    if base.is_interactive:
        return  # background / object out, whatever the dataset's labels: they are its objects
    names = plan.label_names
    for value, name in base.label_names.items():
        if value == 0:
            continue
        if value not in names:
            raise AttentionSegError(f"{where}: the dataset has no label {value} ({name}) that the model segments")
        if names[value].strip().lower() != name.strip().lower():
            raise AttentionSegError(
                f"{where}: label {value} is '{name}' in the model and '{names[value]}' in the dataset"
            )
    if base.sigmoid != plan.binary_sigmoid:
        kinds = {True: "one sigmoid output", False: "a softmax over its labels"}
        raise AttentionSegError(
            f"{where}: the model has {kinds[base.sigmoid]}, this run would have {kinds[plan.binary_sigmoid]} "
            f"(labels {list(plan.label_values)})"
        )


def load_base_weights(network: torch.nn.Module, base: ModelFile, plan: TrainingPlan, source: str) -> list[int]:
    """Copy the base model's weights into ``network`` (built for ``plan``); returns the label values
    whose output channels are new (initialised by the network's own initialisation).

    Output layers (the parameters that differ only along axes where the base has its label count and
    the plan its own) get the base's entries at their labels' places; every other parameter must
    match in shape.
    """
    import numpy as np
    import torch

    old = [int(v) for v in base.label_values] if not base.is_interactive else list(range(2))
    new = list(plan.label_values) if not base.is_interactive else list(range(2))
    rows = [new.index(value) for value in old]
    state = network.state_dict()
    unknown = sorted(set(base.state_dict) ^ set(state))
    if unknown:
        raise AttentionSegError(f"--init {source}: the network's layers differ from the model's ({unknown[0]} ...)")
    with torch.no_grad():
        for key, value in base.state_dict.items():
            target = state[key]
            differing = [d for d, (a, b) in enumerate(zip(value.shape, target.shape)) if a != b]
            if value.ndim == target.ndim and not differing:
                target.copy_(value)
            elif value.ndim == target.ndim and all(
                (value.shape[d], target.shape[d]) == (len(old), len(new)) for d in differing
            ):
                # An output layer: its label axes (0 for a convolution, 1 for a transposed one, both
                # for a residual unit at the output) take the base's entries at the labels' places.
                where = np.ix_(*[rows if d in differing else range(n) for d, n in enumerate(target.shape)])
                target.numpy()[where] = value.to(target.dtype).numpy()
            else:
                raise AttentionSegError(
                    f"--init {source}: layer {key} is {tuple(value.shape)} in the model, {tuple(target.shape)} here"
                )
    network.load_state_dict(state)
    return [value for value in new if value not in old]
