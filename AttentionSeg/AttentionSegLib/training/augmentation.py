"""What the network trains on: the epoch's sample of cases and their random augmentation.

Every epoch draws its cases with replacement from a generator seeded by ``(seed, epoch)``
(:class:`EpochSampler`) and reseeds MONAI's random transforms from the same pair, so that a
resumed run sees exactly the samples an uninterrupted one would. The transforms (MONAI):
padding to the patch, a crop centred on a labelled voxel half of the time (foreground
oversampling), a random rotation and scaling (not slice-wise), mirroring along the mirror axes,
intensity scaling and shift, and Gaussian noise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.training.cases import PreparedCase
from AttentionSegLib.training.config import TrainingConfig

__all__ = ["EpochSampler", "TrainingSet", "epoch_seed", "resolve_mirror_axes", "training_transforms"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's sampling and augmentation."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**31 - 1)


def resolve_mirror_axes(config: TrainingConfig, image_dims: int) -> list[int]:
    """The axes (array order of the image grid) that augmentation mirrors: the configured ones,
    or every axis (the in-plane axes when slice-wise).

    Raises:
        AttentionSegError: an axis outside the image.
    """
    if config.mirror_axes is None:
        return list(range(1, 3)) if config.slice_wise else list(range(image_dims))
    axes = sorted(set(int(axis) for axis in config.mirror_axes))
    if any(not 0 <= axis < image_dims for axis in axes):
        raise AttentionSegError(f"mirror axes must be in 0..{image_dims - 1} (array order), got {config.mirror_axes}")
    return axes


class EpochSampler(torch.utils.data.Sampler):
    """Each epoch draws ``samples_per_rank * world_size`` case indices (with replacement) from a
    generator seeded by (seed, epoch); rank r takes every world_size-th one."""

    def __init__(self, n_cases: int, samples_per_rank: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n_cases, self.samples_per_rank = n_cases, samples_per_rank
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        indices = torch.randint(self.n_cases, (self.samples_per_rank * self.world_size,), generator=generator)
        return iter(indices[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.samples_per_rank


def training_transforms(
    patch: Sequence[int], slice_wise: bool, mirror_axes: Sequence[int], foreground_fraction: float = 0.5
):
    """MONAI's ``Compose`` of the training augmentation for ``{"image", "label"}`` samples."""
    from monai import transforms as T

    keys = ["image", "label"]
    dims = len(patch)
    steps = [
        T.SpatialPadd(keys, spatial_size=patch),
        # Foreground oversampling: half of the crops are centred on a labelled voxel.
        T.RandCropByPosNegLabeld(
            keys,
            label_key="label",
            spatial_size=patch,
            pos=foreground_fraction,
            neg=1 - foreground_fraction,
            num_samples=1,
        ),
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


class TrainingSet(torch.utils.data.Dataset):
    """Augmented samples ``{"image", "label"[, "clinical"]}`` of the prepared training cases."""

    def __init__(self, cases: list[PreparedCase], transforms) -> None:
        self.cases, self.transforms = cases, transforms

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        case = self.cases[index]
        sample = self.transforms({"image": case.image, "label": case.label})
        sample = sample[0] if isinstance(sample, list) else sample
        sample["label"] = sample["label"].long()
        if case.clinical is not None:
            sample["clinical"] = torch.as_tensor(case.clinical, dtype=torch.float32)
        return sample
