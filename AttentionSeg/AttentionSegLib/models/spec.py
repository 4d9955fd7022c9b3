"""What the registry knows about a network: the data behind ``attentionseg models``.

Each network module (``axunet.py``, ``unetrpp.py``, ``baselines.py`` ...) declares its own
:class:`ModelInfo` and presets; ``registry.py`` collects them. Keeping the description next to
the code means the figures a user reads (defaults, constraints, recipe) cannot drift from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainingRecipe", "ModelInfo", "Preset", "LOSSES", "OPTIMIZERS", "SCHEDULES"]

LOSSES = ("dice_ce", "dice_focal_ce", "bce_dice")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("poly", "cosine", "warmup_cosine", "constant")

# factory(spatial_dims, in_channels, out_channels, patch_size, **options) -> nn.Module; networks with
# clinical input also take clinical_features=N. Usually the network class itself.
NetworkFactory = Callable[..., Any]
# patch_multiple(spatial_dims, options) -> per-axis multiple, in array order
PatchMultiple = Callable[[int, Mapping[str, Any]], tuple[int, ...]]


@dataclass(frozen=True)
class TrainingRecipe:
    """A network's default training recipe; the trainer lets the user override every field.

    ``source`` says where the numbers come from ("paper", "official code" or "our choice").
    """

    loss: str = "dice_ce"
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    schedule: str = "poly"
    epochs: int = 300
    batch_size: int = 2
    momentum: float = 0.99
    source: str = "our choice"

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.loss, LOSSES, "loss"),
            (self.optimizer, OPTIMIZERS, "optimizer"),
            (self.schedule, SCHEDULES, "schedule"),
        ):
            if value not in allowed:
                raise ValueError(f"TrainingRecipe: {what} must be one of {allowed}, got {value!r}")

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class ModelInfo:
    """One registered network.

    Attributes:
        name: registry name (``build_model(name, ...)``).
        description: one line for listings.
        paper: citation (title, venue or arXiv id); empty for plain baselines.
        factory: builds the network, see ``NetworkFactory``.
        spatial_dims: dimensionalities implemented.
        native_spatial_dims: the paper's own dimensionality.
        default_patch_size: per dimensionality, in array order (z, y, x) / (y, x).
        patch_multiple: per-axis multiple every patch axis must be divisible by, given the options.
        default_config: ``in_channels``, ``out_channels`` and ``spatial_dims`` of the configuration
            whose parameter count is reported (the paper's task where there is one).
        recipe: default training recipe.
        deep_supervision: whether the network can return auxiliary outputs (``deep_supervision=True``).
        clinical_input: whether ``forward(x, clinical)`` takes a clinical feature vector.
        compact_options: a small configuration of the same architecture, for smoke tests and the demo.
        min_patch_multiples: every patch axis must be at least this many multiples long; 2 for networks
            that normalise per channel at the bottleneck (a 1-voxel bottleneck cannot be normalised
            in training).
        notes: limits a user should know (for example why a dimensionality is not offered).
    """

    name: str
    description: str
    paper: str
    factory: NetworkFactory
    spatial_dims: tuple[int, ...]
    native_spatial_dims: int
    default_patch_size: Mapping[int, tuple[int, ...]]
    patch_multiple: PatchMultiple
    default_config: Mapping[str, int]
    recipe: TrainingRecipe
    family: str = "attention"
    deep_supervision: bool = False
    clinical_input: bool = False
    compact_options: Mapping[str, Any] = field(default_factory=dict)
    min_patch_multiples: int = 1
    notes: str = ""


@dataclass(frozen=True)
class Preset:
    """A published configuration: ``build_preset(name)`` builds exactly this."""

    name: str
    model: str
    spatial_dims: int
    in_channels: int
    out_channels: int
    patch_size: tuple[int, ...]
    description: str
    options: Mapping[str, Any] = field(default_factory=dict)
