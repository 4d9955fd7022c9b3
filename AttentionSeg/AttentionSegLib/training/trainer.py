"""The trainer: dataset definition + registry network + recipe -> run folder with a model file.

A run folder holds ``model.pt`` (the model file, rewritten at every new best validation Dice),
``checkpoints/last.pt`` and ``checkpoints/best.pt`` (written atomically after every epoch, so a
kill loses at most the epoch in progress), ``progress.jsonl`` (events, see ``progress.py``) and
``config.json`` (the resolved configuration; ``--resume`` reads it back).

Reproducibility: the network is initialised from ``seed``; every epoch reseeds PyTorch, the
sampler and MONAI's random transforms from ``(seed, epoch)``, so a resumed run continues exactly
as an uninterrupted one would, and the same seed on the same machine gives the same numbers
(CPU; cuDNN may pick non-deterministic kernels on CUDA).

Multi-GPU / multi-node: started under ``torchrun`` (``WORLD_SIZE`` > 1) the trainer uses
DistributedDataParallel (NCCL on CUDA, gloo on CPU); every rank draws its own share of each
epoch's samples; rank 0 alone validates and writes files.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from AttentionSegLib import __version__
from AttentionSegLib.data.dataset import DEFAULT_LABEL_COLORS, DatasetDefinition, load_dataset, resolve_split
from AttentionSegLib.data.preprocessing import (
    Normalization,
    fit_normalization,
    image_kind,
    label_lookup,
    median_spacing,
    read_case_image,
    read_case_label,
    resample_array,
)
from AttentionSegLib.devices import autocast, is_out_of_memory, resolve_device
from AttentionSegLib.errors import AttentionSegError, DatasetError
from AttentionSegLib.inference.model_file import MODEL_FILE_NAME, ModelFile
from AttentionSegLib.io.atomic import atomic_torch_save
from AttentionSegLib.models import build_model, get_model_info
from AttentionSegLib.progress import ProgressLog
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.run_folder import RunFolder

__all__ = ["TrainingConfig", "Trainer", "train", "SliceWise", "RunBudget", "build_loss", "learning_rate_factor"]

CHECKPOINT_FORMAT = "attentionseg-checkpoint"


class SliceWise(nn.Module):
    """A 2D network applied to (B, C, 1, H, W) slabs of a 3D volume, so cropping and sliding-window
    inference stay 3D with a (1, h, w) window."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, *args: torch.Tensor):
        output = self.network(x.squeeze(2), *args)
        if isinstance(output, list):
            return [item.unsqueeze(2) for item in output]
        return output.unsqueeze(2)


class DiceFocalCELoss(nn.Module):
    """Dice + focal + cross-entropy (nnY-Net's loss). MONAI 1.6 has DiceCE and DiceFocal but no
    three-term loss, so this adds plain cross-entropy to MONAI's DiceFocalLoss. Dice and focal
    terms cover the foreground classes, as in :func:`build_loss`."""

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceFocalLoss

        self.dice_focal = DiceFocalLoss(to_onehot_y=True, softmax=True, include_background=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice_focal(logits, target) + F.cross_entropy(logits, target[:, 0].long())


class BCEDiceLoss(nn.Module):
    """Binary cross-entropy + soft Dice on sigmoid outputs (the integrated-attention CNN's loss).
    One output channel: binary target; several: one-hot targets, one sigmoid per class. MONAI's
    DiceCELoss uses softmax cross-entropy as soon as there is more than one channel."""

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            target = (target > 0).to(logits.dtype)
        else:
            target = F.one_hot(target[:, 0].long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        return self.dice(logits, target) + F.binary_cross_entropy_with_logits(logits, target)


def build_loss(name: str, deep_supervision: bool) -> Callable[..., torch.Tensor]:
    """The recipe's loss on logits and (B, 1, ...) class-index targets; with deep supervision,
    MONAI's DeepSupervisionLoss over the list of outputs (exponentially decreasing weights).

    The soft Dice term averages the foreground classes only (nnU-Net's convention): with the
    background in the average, the large, easy background class dilutes the gradient of small
    structures. Cross-entropy covers every class.
    """
    from monai.losses import DeepSupervisionLoss, DiceCELoss

    losses = {
        "dice_ce": lambda: DiceCELoss(to_onehot_y=True, softmax=True, include_background=False),
        "dice_focal_ce": DiceFocalCELoss,
        "bce_dice": BCEDiceLoss,
    }
    loss = losses[name]()
    if not deep_supervision:
        return loss
    supervised = DeepSupervisionLoss(loss, weight_mode="exp")
    # MONAI resizes the target to each output with nearest-exact interpolation, which needs floats.
    return lambda outputs, target: supervised(outputs, target.float())


def learning_rate_factor(schedule: str, progress: float) -> float:
    """The learning rate as a fraction of the base rate at ``progress`` in [0, 1] of the run.

    Schedules are functions of progress rather than of step counts so that a time-limited run
    still decays to its end: poly (1 - p)^0.9 (nnU-Net), cosine, cosine after a linear warm-up over
    the first 5 %, or constant.
    """
    p = min(max(progress, 0.0), 1.0)
    if schedule == "poly":
        return (1 - p) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "warmup_cosine":
        warmup = 0.05
        return max(p / warmup, 0.01) if p < warmup else 0.5 * (1 + math.cos(math.pi * (p - warmup) / (1 - warmup)))
    return 1.0


def _build_optimizer(config: TrainingConfig, parameters) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=config.learning_rate,
            momentum=get_model_info(config.model).recipe.momentum,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
    optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


@dataclass
class PreparedCase:
    case_id: str
    image: np.ndarray  # (C, *spatial) float32, resampled and normalised
    label: np.ndarray  # (1, *spatial) int64 class indices
    clinical: np.ndarray | None


class EpochSampler(torch.utils.data.Sampler):
    """Each epoch draws ``samples_per_rank * world_size`` case indices (with replacement) from a
    generator seeded by (seed, epoch); rank r takes every world_size-th one."""

    def __init__(self, n_cases: int, samples_per_rank: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n_cases, self.samples_per_rank = n_cases, samples_per_rank
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        indices = torch.randint(self.n_cases, (self.samples_per_rank * self.world_size,), generator=generator)
        return iter(indices[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.samples_per_rank


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**31 - 1)


def _resolve_mirror_axes(config: TrainingConfig, image_dims: int) -> list[int]:
    if config.mirror_axes is None:
        return list(range(1, 3)) if config.slice_wise else list(range(image_dims))
    axes = sorted(set(int(axis) for axis in config.mirror_axes))
    if any(not 0 <= axis < image_dims for axis in axes):
        raise AttentionSegError(f"mirror axes must be in 0..{image_dims - 1} (array order), got {config.mirror_axes}")
    return axes


def _training_transforms(patch: tuple[int, ...], slice_wise: bool, mirror_axes: list[int]):
    from monai import transforms as T

    keys = ["image", "label"]
    dims = len(patch)
    steps = [
        T.SpatialPadd(keys, spatial_size=patch),
        # Foreground oversampling: half of the crops are centred on a labelled voxel.
        T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=patch, pos=1, neg=1, num_samples=1),
    ]
    if not slice_wise:
        rotate = (0.26,) if dims == 2 else (0.26, 0.26, 0.26)
        steps.append(
            T.RandAffined(
                keys,
                prob=0.2,
                rotate_range=rotate,
                scale_range=(0.15,) * dims,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            )
        )
    steps += [T.RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in mirror_axes]
    steps += [
        T.RandScaleIntensityd("image", factors=0.1, prob=0.5),
        T.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        T.RandGaussianNoised("image", prob=0.1, std=0.05),
        T.EnsureTyped(keys, track_meta=False),
    ]
    return T.Compose(steps)


class _TrainingSet(torch.utils.data.Dataset):
    def __init__(self, cases: list[PreparedCase], transforms) -> None:
        self.cases, self.transforms = cases, transforms

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int):
        case = self.cases[index]
        sample = self.transforms({"image": case.image, "label": case.label})
        sample = sample[0] if isinstance(sample, list) else sample
        sample["label"] = sample["label"].long()
        if case.clinical is not None:
            sample["clinical"] = torch.as_tensor(case.clinical, dtype=torch.float32)
        return sample


class RunBudget:
    """Where a run stands against its epoch and time budgets.

    ``progress`` (0..1) drives the learning-rate schedule step by step: the larger of the fraction
    of epochs done and the fraction of the time budget used, so a time-limited run anneals to its
    end. The time budget keeps back the longest validation seen, for the final validation.
    """

    def __init__(self, config: TrainingConfig, state: dict) -> None:
        self.epochs = config.epochs
        self.limit_s = config.time_limit_min * 60 if config.time_limit_min else None
        self.state = state  # state["elapsed_s"]: seconds of completed epochs and validations
        self.validation_s = 0.0

    @property
    def limited(self) -> bool:
        return self.limit_s is not None

    def progress(self, epochs_done: float, epoch_seconds: float) -> float:
        progress = epochs_done / self.epochs
        if self.limit_s is not None:
            training_s = max(self.limit_s - self.validation_s, 1e-9)
            progress = max(progress, (self.state["elapsed_s"] + epoch_seconds) / training_s)
        return min(progress, 1.0)

    def out_of_time(self, epoch_seconds: float) -> bool:
        if self.limit_s is None:
            return False
        return self.state["elapsed_s"] + epoch_seconds + self.validation_s >= self.limit_s


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived: finish cleanly after the last complete epoch."""


class Trainer:
    """Runs one training; ``run()`` returns the summary printed by ``attentionseg train --json``.

    Args:
        config: what to train.
        resume: continue the run in ``config.run_dir`` from its last checkpoint.
        echo: called with every progress event (the terminal printer); None for silence.
    """

    def __init__(
        self, config: TrainingConfig, resume: bool = False, echo: Callable[[dict], None] | None = None
    ) -> None:
        self.run_dir = Path(config.run_dir)
        self.resume = resume
        self.echo = echo
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.config = self._prepare_run_dir(config)
        self.stop_requested = False

    # ----------------------------------------------------------------------------------- setup
    def _prepare_run_dir(self, config: TrainingConfig) -> TrainingConfig:
        if self.resume:
            if not (self.run_dir / "checkpoints" / "last.pt").is_file():
                raise AttentionSegError(f"{self.run_dir}: nothing to resume (no checkpoints/last.pt)")
            if self.rank == 0:
                for leftover in self.run_dir.rglob(".*.tmp"):  # half-written by a killed run
                    leftover.unlink()
            saved = TrainingConfig.load(self.run_dir / "config.json")
            # A resumed run may extend its budget; everything else stays as it was.
            saved.epochs = config.epochs or saved.epochs
            saved.time_limit_min = config.time_limit_min or saved.time_limit_min
            saved.device = config.device if config.device != "auto" else saved.device
            return saved.resolved()
        config = config.resolved()
        folder = RunFolder(self.run_dir)
        # A new run needs an empty folder; a config.json there is the one it was started from
        # (``attentionseg train --config RUN_DIR/config.json``, as the Training module does).
        started_from = [folder.config_file] if _holds_config(folder.config_file, config) else []
        if folder.holds_files_other_than(*started_from):
            raise AttentionSegError(
                f"{self.run_dir}: the folder is not empty; use --resume to continue the run in "
                "it, or choose another --out"
            )
        return config  # the folder is made once the run is set up, so a refused run leaves nothing

    def _load_cases(
        self,
        definition: DatasetDefinition,
        ids: list[str],
        target_spacing,
        lookup,
        normalization: Normalization | None,
        clinical_stats,
    ) -> tuple[list[PreparedCase], list]:
        """Read, resample and (when ``normalization`` is given) normalise cases; returns the cases
        and the raw resampled images (for fitting the normalisation)."""
        from concurrent.futures import ThreadPoolExecutor

        def load(case_id: str):
            case = definition.case(case_id)
            image = read_case_image(case, definition)
            label = read_case_label(case, definition, image)
            spacing = image.spacing_array_order
            array, _ = resample_array(image.array, spacing, target_spacing)
            label_array, _ = resample_array(label[None], spacing, target_spacing, is_label=True)
            clinical = None
            if clinical_stats is not None:
                values = np.asarray(case.clinical, dtype=np.float64)
                clinical = np.nan_to_num((values - clinical_stats[0]) / clinical_stats[1]).astype(np.float32)
            return PreparedCase(case_id, array, lookup[label_array], clinical)

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            cases = list(pool.map(load, ids))
        raw = [case.image for case in cases]
        if normalization is not None:
            for case in cases:
                case.image = normalization.apply(case.image)
        return cases, raw

    def _patch_size(self, info, network_dims: int, median_shape: tuple[int, ...]) -> tuple[int, ...]:
        options = self._network_options(info)
        if self.config.patch_size:
            patch = tuple(self.config.patch_size)
            if self.config.slice_wise and len(patch) == 2:
                patch = (1, *patch)
        else:
            multiple = info.patch_multiple(network_dims, options)
            default = info.default_patch_size[network_dims]
            shape = median_shape[1:] if self.config.slice_wise else median_shape
            smallest = info.min_patch_multiples
            patch = tuple(max(min(d, m * math.ceil(s / m)), smallest * m) for d, m, s in zip(default, multiple, shape))
            if self.config.slice_wise:
                patch = (1, *patch)
        network_patch = patch[1:] if self.config.slice_wise else patch
        from AttentionSegLib.models import resolve_patch_size

        try:
            resolve_patch_size(self.config.model, network_dims, network_patch, **options)
        except ValueError as error:
            raise AttentionSegError(f"--patch: {error}") from None
        return patch

    def _network_options(self, info) -> dict[str, Any]:
        options = dict(info.compact_options) if self.config.compact else {}
        options.update(self.config.options)
        if info.deep_supervision:
            options.setdefault("deep_supervision", True)
        return options

    # ------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        log = ProgressLog(self.run_dir / "progress.jsonl", echo=self.echo) if self.rank == 0 else None
        previous_handlers = self._install_signal_handlers()
        try:
            return self._run(log)
        except AttentionSegError:
            raise
        except Exception as error:
            if log is not None and self.run_dir.is_dir():
                log.emit("error", message=f"{type(error).__name__}: {error}")
            raise
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal handlers can only be installed from the main thread

        def request_stop(signum, frame):
            self.stop_requested = True

        return {signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}

    def _run(self, log: ProgressLog | None) -> dict[str, Any]:
        config = self.config
        info = get_model_info(config.model)
        definition = load_dataset(config.dataset)
        network_dims = 2 if config.slice_wise else definition.spatial_dims
        if config.slice_wise and definition.spatial_dims != 3:
            raise AttentionSegError("--slice-wise trains a 2D network on a 3D dataset; this dataset is 2D")
        if network_dims not in info.spatial_dims:
            raise AttentionSegError(
                f"{config.model} has no {network_dims}D form ({info.notes or 'see attentionseg models'})"
            )
        if not definition.cases:
            raise DatasetError(f"{definition.path}: no annotated cases to train on")
        mirror_axes = _resolve_mirror_axes(config, definition.spatial_dims)
        split = resolve_split(definition, f"fold:{config.fold}", config.n_folds, config.split_seed)
        label_values = sorted({0, *definition.labels})
        lookup = label_lookup(label_values)
        clinical_stats = None
        clinical_features = 0
        if info.clinical_input and definition.clinical_variables:
            train_clinical = np.asarray([definition.case(i).clinical for i in split["train"]], dtype=np.float64)
            mean = np.nanmean(train_clinical, axis=0)
            std = np.nanstd(train_clinical, axis=0)
            clinical_stats = (mean, np.where(std > 1e-8, std, 1.0))
            clinical_features = len(definition.clinical_variables)

        target_spacing = median_spacing([definition.case(i) for i in split["train"]])
        kind = image_kind(definition)
        train_cases, raw_images = self._load_cases(
            definition, split["train"], target_spacing, lookup, None, clinical_stats
        )
        normalization = fit_normalization(kind, raw_images, [case.label[0] for case in train_cases])
        for case in train_cases:
            case.image = normalization.apply(case.image)
        del raw_images
        val_cases, _ = self._load_cases(definition, split["val"], target_spacing, lookup, normalization, clinical_stats)
        median_shape = tuple(int(v) for v in np.median([case.image.shape[1:] for case in train_cases], axis=0))
        patch = self._patch_size(info, network_dims, median_shape)

        device = resolve_device(config.device, self.local_rank)
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        binary_sigmoid = config.loss == "bce_dice" and len(label_values) == 2
        out_channels = 1 if binary_sigmoid else len(label_values)
        options = self._network_options(info)
        network_spec = {
            "name": config.model,
            "spatial_dims": network_dims,
            "in_channels": definition.n_channels,
            "out_channels": out_channels,
            "patch_size": list(patch[1:] if config.slice_wise else patch),
            "clinical_features": clinical_features,
            "options": options,
        }
        torch.manual_seed(config.seed)
        network = build_model(
            config.model,
            network_dims,
            definition.n_channels,
            out_channels,
            network_spec["patch_size"],
            clinical_features=clinical_features,
            **options,
        )
        model = SliceWise(network) if config.slice_wise else network
        model.to(device)
        optimizer = _build_optimizer(config, model.parameters())
        use_scaler = device.type == "cuda" and not torch.cuda.is_bf16_supported()
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        loss_function = build_loss(config.loss, bool(options.get("deep_supervision")))

        state = {"epoch": 0, "elapsed_s": 0.0, "best_mean_dice": -1.0, "best_epoch": 0, "best_dice": {}}
        if self.resume:
            state = self._restore(model, optimizer, scaler, device)
        train_model = model
        if self.world_size > 1:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )

        iterations = config.iterations_per_epoch or max(10, math.ceil(len(train_cases) / config.batch_size))
        sampler = EpochSampler(
            len(train_cases), iterations * config.batch_size, config.seed, self.rank, self.world_size
        )
        transforms = _training_transforms(patch, config.slice_wise, mirror_axes)
        from monai.data import DataLoader

        loader = DataLoader(
            _TrainingSet(train_cases, transforms),
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
            drop_last=False,
            persistent_workers=False,  # fresh workers each epoch, seeded from the epoch's seed
        )

        if self.rank == 0 and not self.resume:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            config.save(self.run_dir / "config.json")
        labels = {value: definition.labels.get(value, "background") for value in label_values}
        self.context = {
            "definition": definition,
            "network_spec": network_spec,
            "label_values": label_values,
            "labels": labels,
            "binary_sigmoid": binary_sigmoid,
            "target_spacing": target_spacing,
            "normalization": normalization,
            "kind": kind,
            "clinical_stats": clinical_stats,
            "patch": patch,
            "mirror_axes": mirror_axes,
            "split": split,
            "device": device,
        }
        if log:
            log.emit(
                "start",
                run_dir=self.run_dir,
                model=config.model,
                dataset=definition.name,
                labels={v: n for v, n in labels.items() if v != 0},
                n_train=len(train_cases),
                n_val=len(val_cases),
                epochs=config.epochs,
                time_limit_min=config.time_limit_min,
                device=str(device),
                resumed=self.resume,
                start_epoch=state["epoch"] + 1,
                patch_size=patch,
                batch_size=config.batch_size,
                iterations_per_epoch=iterations,
                world_size=self.world_size,
            )

        reason = "epochs"
        budget = RunBudget(config, state)
        epoch = state["epoch"]
        while epoch < config.epochs:
            if self._agree(budget.out_of_time(0.0), device):
                reason = "time_limit"
                break
            epoch += 1
            started = time.perf_counter()
            torch.manual_seed(_epoch_seed(config.seed, epoch) + self.rank)
            transforms.set_random_state(seed=_epoch_seed(config.seed, epoch) + self.rank)
            sampler.set_epoch(epoch)
            try:
                mean_loss, learning_rate, truncated, device = self._train_epoch(
                    train_model, loader, loss_function, optimizer, scaler, device, epoch, iterations, budget, log
                )
            except StopRequested:
                epoch -= 1
                reason = "stopped"
                break
            seconds = time.perf_counter() - started
            state["elapsed_s"] += seconds
            if truncated:
                reason = "time_limit"
            if log:
                log.emit(
                    "epoch",
                    epoch=epoch,
                    epochs=config.epochs,
                    loss=mean_loss,
                    lr=learning_rate,
                    seconds=seconds,
                    elapsed_s=state["elapsed_s"],
                    **({"truncated": True} if truncated else {}),
                )
            validate = val_cases and (epoch % config.val_every == 0 or epoch == config.epochs or truncated)
            validation_started = time.perf_counter()
            is_best = False
            if self.rank == 0:
                if validate:
                    dice = self._validate(model, val_cases, patch, device)
                    mean_dice = float(np.nanmean(list(dice.values()))) if dice else float("nan")
                    is_best = math.isfinite(mean_dice) and mean_dice > state["best_mean_dice"]
                    if is_best:
                        state.update(best_mean_dice=mean_dice, best_epoch=epoch, best_dice=dice)
                    log.emit(
                        "validation",
                        epoch=epoch,
                        dice=dice,
                        mean_dice=mean_dice,
                        best_mean_dice=state["best_mean_dice"],
                        is_best=is_best,
                    )
                elif not val_cases:
                    is_best = True  # nothing to validate on: the latest weights are the model
                    state.update(best_epoch=epoch)
            validation_seconds = time.perf_counter() - validation_started
            state["elapsed_s"] += validation_seconds
            if validate:
                budget.validation_s = max(budget.validation_s, validation_seconds)
            state["epoch"] = epoch
            if self.rank == 0:
                self._save_checkpoints(model, optimizer, scaler, state, is_best, log)
            if self.world_size > 1:
                dist.barrier()
            if self._agree(self.stop_requested, device):
                reason = "stopped"
                break
            if truncated:
                break

        summary = {
            "run_dir": str(self.run_dir),
            "model_file": str(self.run_dir / MODEL_FILE_NAME) if (self.run_dir / MODEL_FILE_NAME).exists() else None,
            "epochs_done": state["epoch"],
            "best_epoch": state["best_epoch"],
            "best_mean_dice": state["best_mean_dice"] if state["best_mean_dice"] >= 0 else None,
            "best_dice": state["best_dice"],
            "reason": reason,
            "elapsed_s": state["elapsed_s"],
            "device": str(device),
        }
        if log:
            log.emit(
                "end",
                **{
                    key: summary[key]
                    for key in ("epochs_done", "best_epoch", "best_mean_dice", "model_file", "reason", "elapsed_s")
                },
            )
        return summary

    def _from_rank_0(self, values: list[float], device: torch.device) -> list[float]:
        """Rank 0's values, shared with every rank (so all ranks decide and step alike)."""
        if self.world_size == 1:
            return [float(value) for value in values]
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        return tensor.tolist()

    def _agree(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's decision, shared with every rank (so all stop at the same epoch)."""
        return bool(self._from_rank_0([1.0 if flag else 0.0], device)[0])

    def _train_epoch(self, model, loader, loss_function, optimizer, scaler, device, epoch, iterations, budget, log):
        """One epoch; the learning rate follows the schedule step by step. Under a time limit the
        epoch ends early once the budget (less the time a final validation takes) is spent.
        Returns (mean loss, last learning rate, whether the epoch was cut short, device)."""
        model.train()
        losses = []
        show_bar = self.echo is not None and sys.stderr.isatty() and self.rank == 0
        started = time.perf_counter()
        learning_rate = self.config.learning_rate
        truncated = False
        for step, batch in enumerate(loader, start=1):
            if self.stop_requested:
                raise StopRequested
            seconds = time.perf_counter() - started
            # A started epoch trains at least one step, so every epoch event has a loss.
            out_of_time = step > 1 and budget.out_of_time(seconds)
            progress = budget.progress(epoch - 1 + (step - 1) / iterations, seconds)
            if budget.limited:  # time-based: each rank's clock differs, rank 0's counts
                out_of_time, progress = self._from_rank_0([float(out_of_time), progress], device)
            if out_of_time:
                truncated = True
                break
            learning_rate = self.config.learning_rate * learning_rate_factor(self.config.schedule, progress)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            while True:
                try:
                    loss = self._train_step(model, batch, loss_function, optimizer, scaler, device)
                    break
                except RuntimeError as error:
                    if device.type != "cuda" or not is_out_of_memory(error) or self.world_size > 1:
                        raise
                    device = self._fall_back_to_cpu(model, optimizer, log)
            losses.append(loss)
            if show_bar:
                done = int(30 * step / iterations)
                sys.stderr.write(
                    f"\r  epoch {epoch} [{'#' * done}{'.' * (30 - done)}] {step}/{iterations} "
                    f"loss {np.mean(losses):.4f}"
                )
                sys.stderr.flush()
        if show_bar:
            sys.stderr.write("\r" + " " * 80 + "\r")
        return float(np.mean(losses)), learning_rate, truncated, device

    def _train_step(self, model, batch, loss_function, optimizer, scaler, device) -> float:
        image = batch["image"].to(device, non_blocking=True)
        label = batch["label"].to(device, non_blocking=True)
        arguments = (image, batch["clinical"].to(device)) if "clinical" in batch else (image,)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            output = model(*arguments)
        output = [item.float() for item in output] if isinstance(output, list) else output.float()
        loss = loss_function(output, label)
        if not torch.isfinite(loss):
            raise FloatingPointError("the training loss is not finite; lower the learning rate")
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach())

    def _fall_back_to_cpu(self, model, optimizer, log) -> torch.device:
        message = "CUDA ran out of memory: continuing on the CPU (use a smaller --batch or --patch to stay on the GPU)"
        print(message, file=sys.stderr)
        torch.cuda.empty_cache()
        cpu = torch.device("cpu")
        model.to(cpu)
        for parameter_state in optimizer.state.values():
            for key, value in parameter_state.items():
                if torch.is_tensor(value):
                    parameter_state[key] = value.to(cpu)
        self.context["device"] = cpu
        return cpu

    @torch.no_grad()
    def _validate(self, model, cases: list[PreparedCase], patch, device) -> dict[int, float]:
        """Mean Dice per foreground label over the validation cases (sliding window on the resampled
        grid). A label absent from both prediction and reference of a case does not count for it."""
        from monai.inferers import sliding_window_inference

        model.eval()
        label_values = self.context["label_values"]
        scores: dict[int, list[float]] = {value: [] for value in label_values[1:]}
        for case in cases:
            image = torch.from_numpy(case.image)[None].to(device)
            clinical = torch.from_numpy(case.clinical)[None].to(device) if case.clinical is not None else None

            def predictor(window, clinical=clinical):
                with autocast(device):
                    output = (
                        model(window, clinical.expand(window.shape[0], -1)) if clinical is not None else model(window)
                    )
                return output.float()

            logits = sliding_window_inference(
                image, patch, sw_batch_size=4, predictor=predictor, overlap=0.5, mode="gaussian"
            )
            if self.context["binary_sigmoid"]:
                prediction = (logits[0, 0] > 0).long()
            else:
                prediction = logits[0].argmax(0)
            reference = torch.from_numpy(case.label[0]).to(device)
            for index, value in enumerate(label_values[1:], start=1):
                predicted, expected = prediction == index, reference == index
                total = int(predicted.sum() + expected.sum())
                if total:
                    scores[value].append(2.0 * int((predicted & expected).sum()) / total)
        return {value: float(np.mean(values)) if values else float("nan") for value, values in scores.items()}

    # ---------------------------------------------------------------------------- checkpoints
    def _save_checkpoints(self, model, optimizer, scaler, state, is_best: bool, log: ProgressLog) -> None:
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "state": json.dumps(state),
        }
        folder = self.run_dir / "checkpoints"
        atomic_torch_save(checkpoint, folder / "last.pt")
        log.emit("checkpoint", epoch=state["epoch"], kind="last", path=folder / "last.pt")
        if is_best:
            atomic_torch_save(checkpoint, folder / "best.pt")
            log.emit("checkpoint", epoch=state["epoch"], kind="best", path=folder / "best.pt")
            self._model_file(model, state).save(self.run_dir / MODEL_FILE_NAME)

    def _restore(self, model, optimizer, scaler, device) -> dict:
        path = self.run_dir / "checkpoints" / "last.pt"
        try:
            checkpoint = torch.load(path, map_location=device, weights_only=True)
            if checkpoint.get("format") != CHECKPOINT_FORMAT:
                raise ValueError("not an AttentionSeg checkpoint")
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scaler.load_state_dict(checkpoint["scaler"])
            state = json.loads(checkpoint["state"])
        except Exception as error:  # any damage: say which file
            raise AttentionSegError(
                f"{path}: cannot resume from this checkpoint ({type(error).__name__}: {str(error)[:160]})"
            ) from None
        state["best_dice"] = {int(key): value for key, value in state.get("best_dice", {}).items()}
        return state

    def _model_file(self, model: nn.Module, state: dict) -> ModelFile:
        context = self.context
        definition: DatasetDefinition = context["definition"]
        network = model.network if isinstance(model, SliceWise) else model
        labels = []
        for index, value in enumerate(context["label_values"]):
            color = definition.label_colors.get(value, DEFAULT_LABEL_COLORS[(index - 1) % len(DEFAULT_LABEL_COLORS)])
            labels.append(
                {"value": value, "name": context["labels"][value], "color": list(color) if value else [0, 0, 0]}
            )
        clinical = {}
        if context["clinical_stats"] is not None:
            clinical = {
                "variables": definition.clinical_variables,
                "mean": context["clinical_stats"][0].tolist(),
                "std": context["clinical_stats"][1].tolist(),
            }
        return ModelFile(
            network=context["network_spec"],
            channel_names=definition.channel_names,
            labels=labels,
            output_activation="sigmoid" if context["binary_sigmoid"] else "softmax",
            preprocessing={
                "target_spacing": list(context["target_spacing"]),
                "normalization": context["normalization"].as_dict(),
                "image_kind": context["kind"],
                "slice_wise": self.config.slice_wise,
                "mirror_axes": context["mirror_axes"],
                "patch_size": list(context["patch"]),
            },
            clinical=clinical,
            training={
                "dataset": definition.name,
                "dataset_path": str(definition.path),
                "train_cases": context["split"]["train"],
                "val_cases": context["split"]["val"],
                "fold": self.config.fold,
                "epochs": state["epoch"],
                "best_epoch": state["best_epoch"],
                "best_mean_dice": state["best_mean_dice"] if state["best_mean_dice"] >= 0 else None,
                "best_dice": {str(k): v for k, v in state["best_dice"].items()},
                "recipe": {
                    key: getattr(self.config, key)
                    for key in ("loss", "optimizer", "learning_rate", "weight_decay", "schedule", "batch_size", "seed")
                },
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


def _holds_config(path: Path, config: TrainingConfig) -> bool:
    """Whether ``path`` is a configuration file describing ``config`` (once resolved)."""
    try:
        return path.is_file() and TrainingConfig.load(path).resolved() == config
    except AttentionSegError:
        return False


def _monai_version() -> str:
    import monai

    return monai.__version__


def train(config: TrainingConfig, resume: bool = False, echo: Callable[[dict], None] | None = None) -> dict:
    """Run a training to the end; see :class:`Trainer`."""
    return Trainer(config, resume=resume, echo=echo).run()
