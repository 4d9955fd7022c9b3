"""Preprocessing shared by training and inference: reading a case, resampling to a target spacing,
intensity normalisation by image kind, the clinical z-score, and label values <-> network class
indices.

Resampling is a resize of the array to ``round(shape * spacing / target)`` voxels over the same
field of view (linear for images, nearest for labels); the new spacing is recorded exactly as
``spacing * old_shape / new_shape``, so the geometry of every array stays known. MONAI's
``Spacingd`` does the same from an affine on a MetaTensor; our images carry their geometry in
:class:`~AttentionSegLib.io.image.Image`, and inference must invert the resize onto the input grid,
which this form makes a single call.

Intensity normalisation (nnU-Net's scheme):

- ``ct``: clip to the 0.5 and 99.5 percentiles of foreground intensities of the training cases,
  then subtract their mean and divide by their standard deviation (statistics stored in the model);
- ``mri``: z-score per channel and per image;
- ``rgb``: per-channel scaling to [0, 1] (divide by 255), then the training set's per-channel mean
  and standard deviation;
- ``percentile``: per channel and per image, the 0.5 and 99.5 percentiles become 0 and 1 (values
  clipped there). No statistics, no modality: the promptable generalist uses it, since it meets CT,
  MRI and images it never saw, and a z-score of a CT is dominated by the air around the body
  (percentiles of the image itself are not). Percentiles are read on a fixed subsample of at most
  ``_PERCENTILE_SAMPLES`` voxels, so a 512 x 512 x 300 CT costs a fraction of a second.

Clinical features (:class:`ClinicalNormalization`): a z-score per variable with the training
cases' mean and standard deviation (NaN-aware); a missing value (NaN) becomes 0, the training mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from AttentionSegLib.data.dataset import Case, DatasetDefinition
from AttentionSegLib.errors import DatasetError
from AttentionSegLib.io.image import (
    PHOTO_SUFFIXES,
    Image,
    check_finite,
    check_same_grid,
    read_image,
    read_image_header,
)
from AttentionSegLib.io.label_map import read_label_image

__all__ = [
    "IMAGE_KINDS",
    "NORMALIZATION_KINDS",
    "image_percentiles",
    "Normalization",
    "ClinicalNormalization",
    "image_kind",
    "fit_normalization",
    "read_case_image",
    "read_case_label",
    "median_spacing",
    "resample_array",
    "label_lookup",
]

IMAGE_KINDS = ("ct", "mri", "rgb")
NORMALIZATION_KINDS = (*IMAGE_KINDS, "percentile")
PERCENTILES = (0.5, 99.5)
_PERCENTILE_SAMPLES = 2_000_000
_RGB_NAMES = {"r", "g", "b", "red", "green", "blue", "rgb"}
_FOREGROUND_SAMPLES_PER_CASE = 20000


def image_kind(definition: DatasetDefinition) -> str:
    """ "ct" when a channel is named CT, "rgb" for photographs (PNG/JPEG/TIFF or channels R, G, B),
    otherwise "mri"."""
    names = {name.strip().lower() for name in definition.channel_names}
    if "ct" in names:
        return "ct"
    if definition.file_ending.lower() in PHOTO_SUFFIXES or (names and names <= _RGB_NAMES):
        return "rgb"
    return "mri"


@dataclass
class Normalization:
    """Intensity normalisation and its statistics (per channel); see the module docstring."""

    kind: str
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    clip_low: list[float] = field(default_factory=list)
    clip_high: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in NORMALIZATION_KINDS:
            raise ValueError(f"normalization kind must be one of {NORMALIZATION_KINDS}, got {self.kind!r}")

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Normalise a (C, *spatial) array; returns float32."""
        array = array.astype(np.float32, copy=True)
        if self.kind == "percentile":
            for channel in array:
                low, high = image_percentiles(channel)
                np.clip(channel, low, high, out=channel)
                channel -= low
                channel /= (high - low) if high - low > 1e-8 else 1.0
            return array
        if self.kind == "mri":
            for channel in array:
                std = float(channel.std())
                channel -= float(channel.mean())
                channel /= std if std > 1e-8 else 1.0
            return array
        if self.kind == "rgb":
            array /= 255.0
        elif self.kind == "ct":
            for channel, low, high in zip(array, self.clip_low, self.clip_high):
                np.clip(channel, low, high, out=channel)
        for channel, mean, std in zip(array, self.mean, self.std):
            channel -= mean
            channel /= std if std > 1e-8 else 1.0
        return array

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Normalization:
        return cls(**values)


@dataclass(frozen=True)
class ClinicalNormalization:
    """The z-score of the clinical feature vector, fitted on the training cases; stored in the model
    file as ``{"variables", "mean", "std"}``.

    Example:
        >>> z = ClinicalNormalization.fit(["age"], [[50.0], [70.0]])
        >>> z.apply([80.0]).tolist(), z.apply([float("nan")]).tolist()
        ([2.0], [0.0])
    """

    variables: tuple[str, ...]
    mean: np.ndarray  # float64, one per variable
    std: np.ndarray  # float64, one per variable, never ~0

    @classmethod
    def fit(cls, variables: Sequence[str], values: Sequence[Sequence[float]]) -> ClinicalNormalization:
        """Statistics of the training cases' values (one row per case); NaN values are left out, and
        a constant variable keeps a standard deviation of 1 (it is only centred)."""
        rows = np.asarray(values, dtype=np.float64)
        std = np.nanstd(rows, axis=0)
        return cls(tuple(variables), np.nanmean(rows, axis=0), np.where(std > 1e-8, std, 1.0))

    def apply(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """(x - mean) / std per variable (float64); missing values (NaN) become 0, the training mean."""
        return np.nan_to_num((np.asarray(values, dtype=np.float64) - self.mean) / self.std)

    def as_dict(self) -> dict:
        return {"variables": list(self.variables), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> ClinicalNormalization:
        """As stored by :meth:`as_dict` (the statistics are used as stored)."""
        return cls(
            tuple(values["variables"]),
            np.asarray(values["mean"], dtype=np.float64),
            np.asarray(values["std"], dtype=np.float64),
        )


def image_percentiles(channel: np.ndarray) -> tuple[float, float]:
    """The :data:`PERCENTILES` of one channel's intensities, on an evenly strided subsample of at
    most ``_PERCENTILE_SAMPLES`` voxels (deterministic)."""
    values = channel.reshape(-1)
    step = max(1, values.size // _PERCENTILE_SAMPLES)
    low, high = np.percentile(values[::step], PERCENTILES)
    return float(low), float(high)


def fit_normalization(kind: str, images: list[np.ndarray], labels: list[np.ndarray | None]) -> Normalization:
    """Statistics of ``kind`` from training images (C, *spatial) and their label maps (*spatial)."""
    if kind == "mri":
        return Normalization("mri")
    n_channels = images[0].shape[0]
    rng = np.random.default_rng(0)  # a fixed subsample: the same statistics on every run
    samples: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    for image, label in zip(images, labels):
        mask = label > 0 if (kind == "ct" and label is not None and label.any()) else np.ones(image.shape[1:], bool)
        for c in range(n_channels):
            values = image[c][mask]
            if values.size > _FOREGROUND_SAMPLES_PER_CASE:
                values = rng.choice(values, _FOREGROUND_SAMPLES_PER_CASE, replace=False)
            samples[c].append(values.astype(np.float64))
    normalization = Normalization(kind)
    for channel_samples in samples:
        values = np.concatenate(channel_samples)
        if kind == "rgb":
            values = values / 255.0
        else:
            low, high = np.percentile(values, [0.5, 99.5])
            normalization.clip_low.append(float(low))
            normalization.clip_high.append(float(high))
            values = np.clip(values, low, high)
        normalization.mean.append(float(values.mean()))
        normalization.std.append(float(values.std()))
    return normalization


def read_case_image(case: Case, definition: DatasetDefinition) -> Image:
    """All channels of a case as one Image with a channel axis (one file per channel, or one file
    holding them all); checks channel count and that the channels share one grid."""
    parts = [read_image(path) for path in case.images]
    for part, path in zip(parts, case.images):
        check_finite(part, str(path))
    for part, path in zip(parts[1:], case.images[1:]):
        check_same_grid(parts[0], part, str(case.images[0]), str(path))
    arrays = [part.array if part.has_channels else part.array[None] for part in parts]
    array = np.concatenate(arrays, axis=0)
    if array.shape[0] != definition.n_channels:
        raise DatasetError(
            f"case {case.case_id}: {array.shape[0]} image channel(s), the dataset declares "
            f"{definition.n_channels} ({', '.join(definition.channel_names)})"
        )
    return parts[0].with_array(array, has_channels=True)


def read_case_label(case: Case, definition: DatasetDefinition, image: Image) -> np.ndarray:
    """The label map of a case as an int array on the image's grid (a DICOM SEG is placed on it, its
    segments matched to the label names); undeclared values are an error."""
    if case.label is None:
        raise DatasetError(f"case {case.case_id} has no label map")
    grid = image.channel(0)  # the image's grid, one channel
    label = read_label_image(case.label, onto=grid, label_names=definition.foreground_labels)
    check_same_grid(image, label, str(case.images[0]), str(case.label))
    problem = definition.undeclared_values_message(label.array)
    if problem:
        raise DatasetError(f"{case.label}: {problem}")
    return label.array.astype(np.int64)


def median_spacing(cases: list[Case]) -> tuple[float, ...]:
    """Median voxel spacing (mm, array order) of the cases' first image files."""
    spacings = [read_image_header(case.images[0]).spacing[::-1] for case in cases]
    return tuple(float(value) for value in np.median(np.asarray(spacings, dtype=np.float64), axis=0))


def resample_array(
    array: np.ndarray,
    spacing: tuple[float, ...],
    target_spacing: tuple[float, ...],
    is_label: bool = False,
    shape: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, tuple]:
    """Resize a (C, *spatial) array from ``spacing`` to ``target_spacing`` (mm, array order) over the
    same field of view, or to ``shape`` when given (inverse resampling onto a known grid).

    Returns the array (labels keep their dtype, images become float32) and its exact new spacing.
    """
    old_shape = array.shape[1:]
    if shape is None:
        shape = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(old_shape, spacing, target_spacing))
    new_spacing = tuple(s * n / m for s, n, m in zip(spacing, old_shape, shape))
    if tuple(shape) == tuple(old_shape):
        return (array if is_label else array.astype(np.float32, copy=False)), tuple(spacing)
    tensor = torch.from_numpy(np.ascontiguousarray(array))[None]
    if is_label:
        resized = F.interpolate(tensor.float(), size=shape, mode="nearest-exact")[0].numpy().astype(array.dtype)
    else:
        mode = "trilinear" if len(shape) == 3 else "bilinear"
        resized = F.interpolate(tensor.float(), size=shape, mode=mode, align_corners=False)[0].numpy()
    return resized, new_spacing


def label_lookup(label_values: list[int]) -> np.ndarray:
    """An array mapping each label value to its class index (values must be >= 0)."""
    lookup = np.zeros(max(label_values) + 1, dtype=np.int64)
    lookup[label_values] = np.arange(len(label_values))
    return lookup
