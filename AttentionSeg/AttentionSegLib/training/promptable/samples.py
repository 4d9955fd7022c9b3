"""Training samples of the promptable generalist: one object, one window, any contrast.

A sample is built from a case of the collection in four steps, each drawn from the sample's own
random generator (so a step's samples depend on ``(seed, step)`` only and a resumed run continues
exactly):

1. **the object**: a structure of the case (one label, most often), the union of a structure and
   the labelled structures it touches, or a part of one (one side of a random plane through it,
   or one of its connected pieces): objects of every size and shape, not only the classes seen;
2. **the window's scale**: the window covers the object at the scale the inference's zoom levels
   would use (:func:`object_zoom`: the whole object in view), or the image's own spacing (an object
   cut by the window, as when the window follows a large one), times a random factor per axis
   (spacing and anisotropy the data never had);
3. **the crop**: the scaled window, centred near the object, resampled to the patch (linear for
   the image, nearest for the labels) with the part outside the image left at 0; axes permuted
   and flipped at random (orientation);
4. **the contrast** (SynthSeg-style, so that modality and contrast stop mattering): the image's
   intensities (already in [0, 1] by the ``percentile`` normalisation) go through a random curve
   that may reverse contrast, each labelled structure may get its own random intensity, then a
   random gamma, bias field, blur and noise.

Cases are normalised once when loaded (the ``percentile`` normalisation of
:mod:`~AttentionSegLib.data.preprocessing`, the one inference applies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from AttentionSegLib.data.collection import Collection, CollectionCase, CollectionDataset
from AttentionSegLib.data.preprocessing import Normalization
from AttentionSegLib.interactive.segmenter import object_zoom, zoomed_spacing
from AttentionSegLib.io.image import check_same_grid, read_image
from AttentionSegLib.io.label_map import read_label_image

__all__ = ["LoadedCase", "ObjectSample", "load_case", "load_cases", "draw_sample", "NORMALIZATION"]

NORMALIZATION = Normalization("percentile")
_MIN_OBJECT_VOXELS = 20  # smaller labels (a stray voxel of a label map) are not objects


@dataclass
class LoadedCase:
    """A case in memory: the normalised image (1, *grid) float32, the labels used (*grid) int16,
    the grid's spacing (mm, array order) and the label values present."""

    dataset: str
    case_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, ...]
    values: tuple[int, ...]


@dataclass
class ObjectSample:
    """One training sample: image (1, *patch) float32, the object (*patch) bool and the patch
    grid's spacing (mm)."""

    image: np.ndarray
    target: np.ndarray
    spacing: tuple[float, ...]


def load_case(dataset: CollectionDataset, case: CollectionCase) -> LoadedCase:
    """Read and normalise one case, keeping only the labels the collection uses (others become 0)."""
    image = read_image(case.image)
    label = read_label_image(case.label)
    array = image.array if image.has_channels else image.array[None]
    normalized = NORMALIZATION.apply(array[:1]).astype(np.float32)
    check_same_grid(image, label, str(case.image), str(case.label))
    values = label.array.astype(np.int16)
    if dataset.labels is not None:
        values = np.where(np.isin(values, list(dataset.labels)), values, 0).astype(np.int16)
    found, counts = np.unique(values, return_counts=True)
    present = tuple(int(v) for v, n in zip(found, counts) if v != 0 and n >= _MIN_OBJECT_VOXELS)
    return LoadedCase(dataset.name, case.case_id, normalized, values, tuple(image.spacing_array_order), present)


def load_cases(collection: Collection, held_out: bool = False, progress=None) -> list[LoadedCase]:
    """Every training case of the collection (or every held-out case), in memory."""
    loaded = []
    for dataset in collection.datasets:
        for case in dataset.held_out_cases if held_out else dataset.training_cases:
            loaded.append(load_case(dataset, case))
            if progress is not None:
                progress(len(loaded))
    return [case for case in loaded if case.values]


def choose_object(case: LoadedCase, rng: np.random.Generator) -> np.ndarray:
    """The object mask of one sample (see the module docstring, step 1)."""
    value = int(rng.choice(case.values))
    mask = case.label == value
    draw = rng.random()
    # Unions and parts are few: a click means "this structure" far more often, and each ambiguous
    # object teaches the network to answer one click with less than the whole structure.
    if draw < 0.08 and len(case.values) > 1:  # the structure and the labelled ones touching it
        touching = np.unique(case.label[ndimage.binary_dilation(mask, iterations=2)])
        mask = np.isin(case.label, [v for v in touching if v != 0])
    elif draw < 0.12:  # one side of a random plane through the structure
        points = np.argwhere(mask)
        if len(points) > 20:
            normal = rng.normal(size=mask.ndim)
            offsets = (points - points.mean(axis=0)) @ normal
            side = offsets > np.quantile(offsets, rng.uniform(0.2, 0.8))
            part = np.zeros_like(mask)
            part[tuple(points[side].T)] = True
            mask = part if part.any() else mask
    elif draw < 0.19:  # one connected piece (a vertebra of the spine, one lung ...)
        pieces, count = ndimage.label(mask)
        if count > 1:
            sizes = np.bincount(pieces.ravel())[1:]
            big = np.flatnonzero(sizes >= max(10, 0.05 * sizes.max())) + 1
            mask = pieces == int(rng.choice(big))
    return mask


def draw_sample(case: LoadedCase, patch: Sequence[int], rng: np.random.Generator, tries: int = 3) -> ObjectSample:
    """One sample of ``case`` on a ``patch``-sized grid (see the module docstring); drawn again (up
    to ``tries`` times) when the object falls between the patch's voxels."""
    for _ in range(tries):
        sample = _draw_once(case, tuple(int(v) for v in patch), rng)
        if sample.target.any():
            break
    return sample


def _draw_once(case: LoadedCase, patch: tuple[int, ...], rng: np.random.Generator) -> ObjectSample:
    target = choose_object(case, rng)
    points = np.argwhere(target)
    low, high = points.min(axis=0), points.max(axis=0) + 1
    spacing = np.asarray(case.spacing, dtype=float)
    # Step 2: voxels of the image per voxel of the patch, per axis.
    level = object_zoom(high - low, patch) if rng.random() < 0.7 else 1
    scale = np.asarray(zoomed_spacing(spacing, case.label.shape, level, patch)) / spacing
    scale *= np.exp(rng.uniform(np.log(0.7), np.log(1.4), size=len(patch)))
    if rng.random() < 0.2:  # anisotropy: one axis much coarser
        scale[int(rng.integers(len(patch)))] *= rng.uniform(1.5, 4.0)
    scale = np.maximum(scale, 0.25)
    # Step 3: the window in image voxels, centred near the object.
    size = np.asarray(patch) * scale
    if rng.random() < 0.5:
        center = points[int(rng.integers(len(points)))].astype(float)
    else:
        center = (low + high - 1) / 2.0
    center += rng.uniform(-0.25, 0.25, size=len(patch)) * np.minimum(size, high - low)
    start = center - size / 2
    image, labels, object_mask = _resampled_crop(case, target, start, size, patch)
    patch_spacing = spacing * scale
    # Orientation.
    order = rng.permutation(len(patch)) if rng.random() < 0.5 else np.arange(len(patch))
    if not np.array_equal(order, np.arange(len(patch))) and len(set(patch)) == 1:
        image, labels, object_mask = (np.transpose(a, tuple(order)) for a in (image, labels, object_mask))
        patch_spacing = patch_spacing[order]
    for axis in range(len(patch)):
        if rng.random() < 0.5:
            image, labels, object_mask = (np.flip(a, axis) for a in (image, labels, object_mask))
    image = synthetic_contrast(np.ascontiguousarray(image), np.ascontiguousarray(labels), rng)
    return ObjectSample(image[None], np.ascontiguousarray(object_mask), tuple(float(v) for v in patch_spacing))


def _resampled_crop(case: LoadedCase, target: np.ndarray, start, size, patch):
    """The window ``[start, start + size)`` (image voxels, may reach outside the image) resampled to
    ``patch``: image (linear), labels and object (nearest); outside the image 0."""
    shape = np.asarray(case.label.shape)
    scale = np.asarray(size) / np.asarray(patch)
    # The patch voxels whose centres fall inside the image, and the image region they sample.
    first = np.clip(np.ceil((0 - start) / scale - 0.5).astype(int), 0, patch)
    last = np.clip(np.floor((shape - start) / scale - 0.5).astype(int) + 1, 0, patch)
    image = np.zeros(patch, dtype=np.float32)
    labels = np.zeros(patch, dtype=np.int16)
    object_mask = np.zeros(patch, dtype=bool)
    if np.any(last <= first):
        return image, labels, object_mask
    region_low = np.clip(np.floor(start + first * scale).astype(int), 0, shape - 1)
    region_high = np.clip(np.ceil(start + last * scale).astype(int), region_low + 1, shape)
    region = tuple(slice(a, b) for a, b in zip(region_low, region_high))
    out_shape = tuple(int(b - a) for a, b in zip(first, last))
    into = tuple(slice(a, b) for a, b in zip(first, last))
    image[into] = _resize(case.image[0][region], out_shape, linear=True)
    labels[into] = _resize(case.label[region], out_shape, linear=False)
    object_mask[into] = _resize(target[region].astype(np.uint8), out_shape, linear=False).astype(bool)
    return image, labels, object_mask


def _resize(array: np.ndarray, shape, linear: bool) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(array)).float()[None, None]
    if linear:
        mode = "trilinear" if array.ndim == 3 else "bilinear"
        out = F.interpolate(tensor, size=tuple(shape), mode=mode, align_corners=False)
    else:
        out = F.interpolate(tensor, size=tuple(shape), mode="nearest-exact")
    return out[0, 0].numpy().astype(array.dtype if not linear else np.float32)


def synthetic_contrast(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Step 4 of the module docstring on an image in [0, 1]; returns float32 in about [0, 1]."""
    if rng.random() < 0.6:  # a random curve through [0, 1]: contrast changes and reversals
        knots = np.linspace(0.0, 1.0, 6)
        values = rng.uniform(0.0, 1.0, size=knots.size)
        if rng.random() < 0.5:
            values = np.sort(values)[:: 1 if rng.random() < 0.7 else -1]
        image = np.interp(image, knots, values).astype(np.float32)
    if rng.random() < 0.35:  # each labelled structure its own intensity, with some texture
        for value in np.unique(labels):
            if value != 0 and rng.random() < 0.7:
                inside = labels == value
                mixed = rng.uniform(0.3, 1.0)
                image[inside] = (1 - mixed) * image[inside] + mixed * rng.uniform(0.0, 1.0)
    if rng.random() < 0.3:
        image = np.clip(image, 0, 1) ** np.exp(rng.uniform(-0.5, 0.5))
    if rng.random() < 0.3:  # a smooth multiplicative bias field
        coarse = rng.uniform(0.7, 1.3, size=(3,) * image.ndim).astype(np.float32)
        image = image * _resize(coarse, image.shape, linear=True)
    if rng.random() < 0.2:
        image = ndimage.gaussian_filter(image, rng.uniform(0.3, 1.2))
    if rng.random() < 0.5:
        image = image + rng.normal(0.0, rng.uniform(0.0, 0.08), size=image.shape)
    return image.astype(np.float32)
