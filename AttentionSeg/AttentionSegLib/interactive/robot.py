"""The simulated user ("robot"): where a person would click next, from the reference and the
current mask.

The protocol of the CVPR 2025 interactive 3D segmentation challenge (also nnInteractive's and
RITM's evaluation): the first click lands on the interior-most voxel of the object (the largest
distance, in mm, to its border); each next click on the interior-most voxel of the largest error
region (26-connected in 3D, 8-connected in 2D), positive where the region is missed structure,
negative where it is leak. Missed structure and leak are taken as separate regions, so that every
region has one sign. The random variants serve training (:mod:`AttentionSegLib.training.interactive`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Shared with the comparison maps, which place their regions on the same interior-most voxel.
from AttentionSegLib.regions import distance_to_border, interior_point

__all__ = ["Click", "interior_point", "largest_error_region", "next_click", "bounding_box", "random_interior_point"]


@dataclass(frozen=True)
class Click:
    """A click: voxel index (array order) and sign."""

    index: tuple[int, ...]
    positive: bool


def random_interior_point(
    mask: np.ndarray, spacing: Sequence[float], rng: np.random.Generator, min_depth: float = 0.4
) -> tuple[int, ...] | None:
    """A random voxel of ``mask`` at least ``min_depth`` of the deepest voxel's distance from the
    border (a person clicks inside a structure, rarely on its edge); None for an empty mask."""
    if not mask.any():
        return None
    distances = distance_to_border(mask.astype(bool), spacing)
    candidates = np.flatnonzero(distances >= min_depth * distances.max())
    return tuple(int(v) for v in np.unravel_index(int(rng.choice(candidates)), mask.shape))


def largest_error_region(prediction: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """The largest connected region of missed structure (``positive`` True) or leak (False), full
    connectivity (26 in 3D, 8 in 2D); ``(None, True)`` when prediction and reference agree."""
    prediction, reference = prediction.astype(bool), reference.astype(bool)
    structure = ndimage.generate_binary_structure(reference.ndim, reference.ndim)
    best, best_size, best_positive = None, 0, True
    for errors, positive in ((reference & ~prediction, True), (prediction & ~reference, False)):
        if not errors.any():
            continue
        components, count = ndimage.label(errors, structure)
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        largest = int(sizes.argmax())
        if sizes[largest] > best_size:  # missed structure wins a tie: it is checked first
            best, best_size, best_positive = components == largest, int(sizes[largest]), positive
    return best, best_positive


def next_click(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> Click | None:
    """The robot's next click on the current ``prediction`` of the object ``reference``; None when
    there is no error left."""
    region, positive = largest_error_region(prediction, reference)
    if region is None:
        return None
    return Click(interior_point(region, spacing), positive)


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``(start, stop)`` voxel corners of ``mask`` (stop exclusive); None for an empty mask."""
    if not mask.any():
        return None
    indices = np.nonzero(mask)
    return tuple(int(i.min()) for i in indices), tuple(int(i.max()) + 1 for i in indices)
