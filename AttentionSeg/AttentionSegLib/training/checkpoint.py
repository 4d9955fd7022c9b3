"""What a run leaves behind: checkpoints (to resume) and the model file (to segment).

A checkpoint is a PyTorch file of plain types, read back with ``weights_only=True``:
``{"format": "attentionseg-checkpoint", "model", "optimizer", "scaler": state dicts, "state": the
run's :class:`TrainingState` as a JSON string}``. ``last.pt`` is written after every epoch and
``best.pt`` at every new best validation Dice, both atomically, so a kill loses at most the epoch
in progress. The model file (:class:`~AttentionSegLib.inference.model_file.ModelFile`) is rewritten
with ``best.pt``: the plan's preprocessing, labels and network, the best weights, and a summary of
the training so far.
"""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn as nn

from AttentionSegLib import __version__
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_file import ModelFile
from AttentionSegLib.io.atomic import atomic_torch_save
from AttentionSegLib.models.slice_wise import SliceWise
from AttentionSegLib.progress import ProgressLog
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.run_folder import RunFolder
from AttentionSegLib.training.run_plan import TrainingPlan

__all__ = ["CHECKPOINT_FORMAT", "TrainingState", "save_checkpoints", "restore_checkpoint", "build_model_file"]

CHECKPOINT_FORMAT = "attentionseg-checkpoint"
_RECIPE_KEYS = ("loss", "optimizer", "learning_rate", "weight_decay", "schedule", "batch_size", "seed")


@dataclass
class TrainingState:
    """Where a run stands; saved in every checkpoint.

    Attributes:
        epoch: completed epochs.
        elapsed_s: seconds of completed epochs and validations.
        best_mean_dice: the best mean validation Dice so far (-1 before the first validation).
        best_epoch: the epoch that reached it.
        best_dice: label value -> Dice at the best epoch.
    """

    epoch: int = 0
    elapsed_s: float = 0.0
    best_mean_dice: float = -1.0
    best_epoch: int = 0
    best_dice: dict[int, float] = field(default_factory=dict)

    @property
    def best_mean_dice_or_none(self) -> float | None:
        return self.best_mean_dice if self.best_mean_dice >= 0 else None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainingState:
        values = json.loads(text)
        values["best_dice"] = {int(key): value for key, value in values.get("best_dice", {}).items()}
        return cls(**values)


def save_checkpoints(
    folder: RunFolder,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: TrainingState,
    is_best: bool,
    log: ProgressLog,
    model_file: Callable[[], ModelFile],
) -> None:
    """Write ``last.pt``; with ``is_best`` also ``best.pt`` and the model file that ``model_file()``
    makes (rank 0 only)."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "state": state.to_json(),
    }
    atomic_torch_save(checkpoint, folder.last_checkpoint)
    log.emit("checkpoint", epoch=state.epoch, kind="last", path=folder.last_checkpoint)
    if is_best:
        atomic_torch_save(checkpoint, folder.best_checkpoint)
        log.emit("checkpoint", epoch=state.epoch, kind="best", path=folder.best_checkpoint)
        model_file().save(folder.model_file)


def restore_checkpoint(
    folder: RunFolder,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> TrainingState:
    """Load ``last.pt`` into the model, optimiser and scaler; returns the saved state.

    Raises:
        AttentionSegError: the checkpoint is damaged or not an AttentionSeg checkpoint (naming it).
    """
    path = folder.last_checkpoint
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not an AttentionSeg checkpoint")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        return TrainingState.from_json(checkpoint["state"])
    except Exception as error:  # any damage: say which file
        raise AttentionSegError(
            f"{path}: cannot resume from this checkpoint ({type(error).__name__}: {str(error)[:160]})"
        ) from None


def build_model_file(
    plan: TrainingPlan,
    config: TrainingConfig,
    model: nn.Module,
    state: TrainingState,
    experiment_plan: dict | None = None,
) -> ModelFile:
    """The model file of the run's current weights: the plan, the weights of the bare network (a
    slice-wise wrapper is left out) and a training summary (with the experiment plan, when the
    run had one)."""
    network = model.network if isinstance(model, SliceWise) else model
    labels, interactive = plan.labels, {}
    if plan.interactive:
        # The network answers "the object under the prompts": background / object; the dataset's
        # labels are the objects it learned.
        labels = [plan.labels[0], {"value": 1, "name": "object", "color": [1.0, 0.8, 0.2]}]
        interactive = {"prompt_encoding": plan.prompt_encoding.to_dict(), "object_labels": plan.labels[1:]}
    return ModelFile(
        network=plan.network,
        channel_names=list(plan.channel_names),
        labels=labels,
        interactive=interactive,
        output_activation="sigmoid" if plan.binary_sigmoid else "softmax",
        preprocessing={
            "target_spacing": list(plan.target_spacing),
            "normalization": plan.normalization.as_dict(),
            "image_kind": plan.image_kind,
            "slice_wise": plan.slice_wise,
            "mirror_axes": list(plan.mirror_axes),
            "patch_size": list(plan.patch_size),
        },
        clinical=plan.clinical.as_dict() if plan.clinical is not None else {},
        training={
            "dataset": plan.dataset_name,
            "dataset_path": plan.dataset_path,
            "train_cases": list(plan.train_cases),
            "val_cases": list(plan.val_cases),
            "fold": config.fold,
            "epochs": state.epoch,
            "best_epoch": state.best_epoch,
            "best_mean_dice": state.best_mean_dice_or_none,
            "best_dice": {str(k): v for k, v in state.best_dice.items()},
            "recipe": {key: getattr(config, key) for key in _RECIPE_KEYS},
            **({"experiment_plan": experiment_plan} if experiment_plan else {}),
            **({"initialised_from": base_summary(config.init)} if config.init else {}),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {
                "attentionseg": __version__,
                "torch": torch.__version__,
                "monai": _monai_version(),
                "python": platform.python_version(),
            },
        },
        state_dict={key: value.detach().cpu().clone() for key, value in network.state_dict().items()},
    )


def base_summary(path: str) -> dict:
    """What a fine-tune started from: the base model file's name, SHA-256 (when the file is still
    there) and the dataset it was trained on."""
    from AttentionSegLib.training.fine_tune import base_model

    summary: dict = {"file": Path(path).name}
    if Path(path).is_file():
        base = base_model(path)
        summary.update(sha256=_cached_digest(str(Path(path).resolve()), Path(path).stat().st_mtime_ns))
        summary.update(dataset=base.training.get("dataset"), name=base.training.get("name"))
    return summary


@functools.lru_cache(maxsize=4)
def _cached_digest(path: str, mtime_ns: int) -> str:
    from AttentionSegLib.inference.model_file import file_digest

    return file_digest(path)


def _monai_version() -> str:
    import monai

    return monai.__version__
