"""The training configuration: one schema for the trainer, the command line, the run folder's
``config.json`` and the Training module's form.

Every field of :class:`TrainingConfig` declares its ``attentionseg train`` flag in its metadata;
:func:`add_arguments` builds the flags from them and :meth:`TrainingConfig.from_arguments` reads
them back (over a ``--config`` file when one is given), so a new field is one declaration here.
:meth:`TrainingConfig.validate` is the one check of the values. Importable without PyTorch: the
Slicer module builds and checks configurations before any trainer starts.

Example:
    >>> config = TrainingConfig("Task04/dataset.json", "unet", "runs/hippocampus", epochs=50)
    >>> config.validate().epochs
    50
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from AttentionSegLib.devices import DEVICE_CHOICES
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.models.spec import LOSSES, OPTIMIZERS, SCHEDULES

__all__ = ["TrainingConfig", "add_arguments", "field_default", "RECIPE_FIELDS"]

# Fields that default to the network's recipe (``attentionseg models``) when left None.
RECIPE_FIELDS = ("epochs", "batch_size", "learning_rate", "weight_decay", "loss", "optimizer", "schedule")


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _flag(flag: str | None, help: str, **argparse_options: Any) -> dict[str, Any]:
    """Field metadata: the ``attentionseg train`` flag (None: positional), its help and argparse options."""
    return {"flag": flag, "help": help, "argparse": argparse_options}


@dataclass
class TrainingConfig:
    """What to train and how; ``None`` recipe fields take the network's recipe (``attentionseg models``).

    Args:
        dataset: path of the dataset definition (dataset.json).
        model: registry name.
        run_dir: output folder.
        epochs: maximum epochs.
        time_limit_min: wall-clock budget in minutes; the learning-rate schedule then follows the
            fraction of the budget used when that is ahead of the fraction of epochs.
        patch_size: training and inference window (array order); default: the network's default,
            reduced to the dataset's median shape (rounded up to the network's multiple).
        batch_size, learning_rate, weight_decay, loss, optimizer, schedule: recipe overrides.
        fold, n_folds, split_seed: the validation fold of a deterministic k-fold split.
        seed: initialisation, sampling and augmentation seed.
        device: auto, cuda or cpu.
        slice_wise: train a 2D network on the slices of a 3D dataset (patch (1, h, w)).
        mirror_axes: spatial axes (array order of the image grid) that augmentation mirrors, and
            that flip test-time augmentation later uses; None: every axis (in-plane axes when
            slice-wise); empty: no mirroring (for anatomy whose sides differ, e.g. anterior vs
            posterior labels).
        iterations_per_epoch: batches per epoch; default one pass over the training cases, at least 10.
        val_every: validate every N epochs (and after the last).
        workers: data-loading worker processes (0: in the training process).
        compact: use the network's compact options (small, for demos and tests).
        options: further network constructor options.
        grad_clip: gradient-norm clipping threshold.
        target_spacing: mm, array order; default the plan's (else the cases' median spacing).
        foreground_oversampling: fraction of training crops centred on a labelled voxel; default the plan's
            (else 0.5).
        interactive: train the interactive (click-conditioned) variant of the network
            (:mod:`AttentionSegLib.training.interactive`).
        click_radius_mm: interactive: a click's ball radius in mm; default from the target spacing.
        init: a model file to start from (:mod:`AttentionSegLib.training.fine_tune`); the network,
            grid and normalisation are then the model's.
        use_plan: fill the settings left at their default from the experiment plan
            (:mod:`AttentionSegLib.training.experiment_planner`), as ``attentionseg plan`` prints it.
    """

    dataset: str = field(metadata=_flag(None, "the dataset definition", metavar="DATASET_JSON"))
    model: str = field(metadata=_flag("--model", "network name (attentionseg models)"))
    run_dir: str = field(metadata=_flag("--out", "run folder (new, or --resume)", metavar="RUN_DIR"))
    epochs: int | None = field(
        default=None, metadata=_flag("--epochs", "maximum epochs (default: the recipe's)", type=int)
    )
    time_limit_min: float | None = field(
        default=None,
        metadata=_flag("--time-limit", "stop before this wall-clock budget", type=float, metavar="MINUTES"),
    )
    patch_size: list[int] | None = field(
        default=None,
        metadata=_flag("--patch", "patch size in array order (z y x | y x)", type=int, nargs="+", metavar="N"),
    )
    batch_size: int | None = field(default=None, metadata=_flag("--batch", "batch size", type=int))
    learning_rate: float | None = field(default=None, metadata=_flag("--lr", "base learning rate", type=float))
    weight_decay: float | None = field(default=None, metadata=_flag("--weight-decay", "weight decay", type=float))
    loss: str | None = field(default=None, metadata=_flag("--loss", "training loss", choices=LOSSES))
    optimizer: str | None = field(default=None, metadata=_flag("--optimizer", "optimiser", choices=OPTIMIZERS))
    schedule: str | None = field(
        default=None, metadata=_flag("--schedule", "learning-rate schedule", choices=SCHEDULES)
    )
    fold: int = field(default=0, metadata=_flag("--fold", "validation fold (default 0)", type=int))
    n_folds: int = field(default=5, metadata=_flag("--folds", "number of folds (default 5)", type=int))
    split_seed: int = field(default=0, metadata=_flag("--split-seed", "seed of the fold split (default 0)", type=int))
    seed: int = field(
        default=0, metadata=_flag("--seed", "initialisation/sampling/augmentation seed (default 0)", type=int)
    )
    device: str = field(default="auto", metadata=_flag("--device", "auto: CUDA when present", choices=DEVICE_CHOICES))
    slice_wise: bool = field(
        default=False, metadata=_flag("--slice-wise", "train a 2D network on the slices of a 3D dataset")
    )
    mirror_axes: list[int] | None = field(
        default=None,
        metadata=_flag(
            "--mirror-axes",
            "axes (array order) mirrored by augmentation and by --tta later; default all; give none "
            "(--mirror-axes alone) when the labels depend on the side, e.g. anterior/posterior",
            type=int,
            nargs="*",
            metavar="AXIS",
        ),
    )
    iterations_per_epoch: int | None = field(
        default=None,
        metadata=_flag("--iterations", "batches per epoch (default: one pass, >= 10)", type=int, metavar="N"),
    )
    val_every: int = field(
        default=1, metadata=_flag("--val-every", "validate every N epochs (default 1)", type=int, metavar="N")
    )
    workers: int = field(default=0, metadata=_flag("--workers", "data-loading processes (default 0)", type=int))
    compact: bool = field(
        default=False, metadata=_flag("--compact", "the network's small configuration (demos, tests)")
    )
    options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_flag(
            "--options",
            "network constructor options as a JSON object, e.g. '{\"channels\": [16, 32, 64]}'",
            type=_json_object,
            metavar="JSON",
        ),
    )
    grad_clip: float = field(
        default=12.0, metadata=_flag("--grad-clip", "gradient-norm clipping threshold (default 12)", type=float)
    )
    target_spacing: list[float] | None = field(
        default=None,
        metadata=_flag(
            "--target-spacing",
            "resample to this spacing, mm in array order (default: planned)",
            type=float,
            nargs="+",
            metavar="MM",
        ),
    )
    foreground_oversampling: float | None = field(
        default=None,
        metadata=_flag(
            "--foreground-oversampling",
            "fraction of crops centred on a labelled voxel (default: planned)",
            type=float,
            metavar="F",
        ),
    )
    interactive: bool = field(
        default=False,
        metadata=_flag(
            "--interactive",
            "train a click-conditioned network (image + clicks, box and previous mask in; one object out) "
            "with a simulated user",
        ),
    )
    click_radius_mm: float | None = field(
        default=None,
        metadata=_flag(
            "--click-radius",
            "interactive: radius of a click's ball in mm (default: two voxels of the coarsest axis, >= 1 mm)",
            type=float,
            metavar="MM",
        ),
    )
    init: str | None = field(
        default=None,
        metadata=_flag(
            "--init",
            "start from this model file's weights (a fine-tune): its network, spacing, patch and normalisation "
            "are kept; labels the model lacks get new output channels",
            metavar="MODEL_FILE",
        ),
    )
    use_plan: bool = field(
        default=True,
        metadata=_flag(
            "--no-plan",
            "do not plan from the dataset's fingerprint: unset values take the network's defaults",
            action="store_false",
        ),
    )

    # ------------------------------------------------------------------------------ checks
    def validate(self) -> TrainingConfig:
        """Check every value; returns ``self``. Recipe fields may still be None (the recipe's).

        Raises:
            AttentionSegError: the first bad value, naming the field.
        """
        positive_or_none = [
            ("epochs", self.epochs, "epochs must be at least 1"),
            ("batch_size", self.batch_size, "batch size must be at least 1"),
            ("iterations_per_epoch", self.iterations_per_epoch, "iterations per epoch must be at least 1"),
        ]
        checks = [
            (bool(str(self.dataset).strip()), "choose a dataset definition (dataset.json)"),
            (bool(self.model) or bool(self.init), "choose a network"),
            (bool(str(self.run_dir).strip()), "choose a run folder (--out)"),
            *[(value is None or value >= 1, f"{message}, got {value}") for _, value, message in positive_or_none],
            (_positive(self.learning_rate), f"learning rate must be positive, got {self.learning_rate}"),
            (_positive(self.time_limit_min), f"time limit must be positive minutes, got {self.time_limit_min}"),
            (
                self.weight_decay is None or self.weight_decay >= 0,
                f"weight decay must be >= 0, got {self.weight_decay}",
            ),
            (self.loss is None or self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (
                self.optimizer is None or self.optimizer in OPTIMIZERS,
                f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}",
            ),
            (
                self.schedule is None or self.schedule in SCHEDULES,
                f"schedule must be one of {SCHEDULES}, got {self.schedule!r}",
            ),
            (
                self.patch_size is None or (len(self.patch_size) in (2, 3) and min(self.patch_size) >= 1),
                f"patch size must be 2 or 3 positive integers, got {self.patch_size}",
            ),
            (self.n_folds >= 2, f"folds must be at least 2, got {self.n_folds}"),
            (
                0 <= self.fold < self.n_folds,
                f"fold must be in 0..{self.n_folds - 1} with {self.n_folds} folds, got {self.fold}",
            ),
            (self.device in DEVICE_CHOICES, f"device must be one of {', '.join(DEVICE_CHOICES)}, got {self.device!r}"),
            (self.val_every >= 1, f"val_every must be at least 1, got {self.val_every}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (_positive(self.grad_clip), f"gradient clipping must be positive, got {self.grad_clip}"),
            (isinstance(self.options, dict), f"options must be a JSON object, got {self.options!r}"),
            (
                self.target_spacing is None or (len(self.target_spacing) in (2, 3) and min(self.target_spacing) > 0),
                f"target spacing must be 2 or 3 positive mm values, got {self.target_spacing}",
            ),
            (_positive(self.click_radius_mm), f"click radius must be positive mm, got {self.click_radius_mm}"),
            (
                not (self.interactive and self.slice_wise),
                "--interactive trains 2D networks on 2D datasets and 3D networks on 3D ones; not --slice-wise",
            ),
            (
                self.foreground_oversampling is None or 0 <= self.foreground_oversampling <= 1,
                f"foreground oversampling must be in 0..1, got {self.foreground_oversampling}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise AttentionSegError(message)
        return self

    def resolved(self) -> TrainingConfig:
        """A checked copy with the recipe fields filled in from the network's recipe.

        Raises:
            AttentionSegError: a bad value, or an unknown network.
        """
        from AttentionSegLib.models import get_model_info  # the registry loads PyTorch

        self.validate()
        try:
            recipe = get_model_info(self.model).recipe
        except (KeyError, ValueError) as error:
            raise AttentionSegError(str(error).strip("'\"")) from None
        filled = {name: getattr(recipe, name) for name in RECIPE_FIELDS if getattr(self, name) is None}
        return replace(self, **filled).validate()

    # ------------------------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (atomically: a reader never sees half a configuration)."""
        from AttentionSegLib.io.atomic import write_text_atomic

        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "configuration") -> TrainingConfig:
        """A configuration from a JSON object; unknown keys are an error (a typo would be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AttentionSegError(f"{source}: unknown training setting(s) {', '.join(unknown)}")
        missing = [name for name in ("dataset", "model", "run_dir") if name not in values]
        if missing:
            raise AttentionSegError(f"{source}: missing {', '.join(missing)}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainingConfig:
        """Read a ``config.json`` written by :meth:`save` (or by hand)."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise AttentionSegError(f"{path}: cannot read the run configuration ({error})") from None
        if not isinstance(values, dict):
            raise AttentionSegError(f"{path}: the run configuration must be a JSON object")
        return cls.from_dict(values, str(path))

    # -------------------------------------------------------------------------- command line
    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> TrainingConfig:
        """The configuration that ``attentionseg train`` arguments describe: the ``--config`` file
        (when given) with every flag given on the command line overriding it."""
        config_file = getattr(args, "config", None)
        values = cls.load(config_file).to_dict() if config_file else {}
        for item in fields(cls):
            if hasattr(args, item.name):  # flags not given are absent (argparse.SUPPRESS)
                value = getattr(args, item.name)
                values[item.name] = str(value) if isinstance(value, Path) else value
        required = (("dataset", "DATASET_JSON"), ("model", "--model"), ("run_dir", "--out"))
        missing = [
            flag
            for name, flag in required
            if values.get(name) in (None, "") and not (name == "model" and values.get("init"))
        ]
        if missing:
            raise AttentionSegError(f"train: give {' and '.join(missing)} (or a --config file that has them)")
        values.setdefault("model", "")  # --init: the model file's network
        return cls(**values)

    def arguments(self) -> list[str]:
        """``attentionseg train`` flags for this configuration (fields at their default are left out)."""
        defaults = {item.name: field_default(item) for item in fields(self)}
        arguments = [str(self.dataset)]
        for item in fields(self):
            value, flag = getattr(self, item.name), item.metadata["flag"]
            if flag is None or value == defaults[item.name] or value == "":  # "": unset (--model with --init)
                continue
            if isinstance(value, bool):
                arguments.append(flag)
            elif isinstance(value, dict):
                arguments += [flag, json.dumps(value)]
            elif isinstance(value, (list, tuple)):
                arguments += [flag, *map(str, value)]
            else:
                arguments += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        return arguments


def _positive(value: float | None) -> bool:
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value) and value > 0)


def field_default(item) -> Any:
    """The default value of a dataclass field of the schema."""
    return item.default_factory() if item.default_factory is not MISSING else item.default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add a flag per :class:`TrainingConfig` field (and the positional DATASET_JSON) to ``parser``.

    Flags not given leave no attribute (``argparse.SUPPRESS``), so that :meth:`TrainingConfig.from_arguments`
    can tell them from defaults and lay them over a ``--config`` file.
    """
    for item in fields(TrainingConfig):
        metadata = item.metadata
        options = dict(metadata["argparse"])
        if metadata["flag"] is None:
            parser.add_argument(item.name, nargs="?", default=argparse.SUPPRESS, help=metadata["help"], **options)
            continue
        if item.type in ("bool", bool):
            options.setdefault("action", "store_true")
        elif "choices" not in options:
            options.setdefault("metavar", metadata["flag"].lstrip("-").upper().replace("-", "_"))
        parser.add_argument(
            metadata["flag"], dest=item.name, default=argparse.SUPPRESS, help=metadata["help"], **options
        )
