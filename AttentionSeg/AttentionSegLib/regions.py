"""Regions of a binary mask: its connected components, largest first, and the voxel a person
would visit in each (the one farthest from the border, so it lies inside even a curved region).

A leaf module (numpy and scipy only) at the top of the package: evaluation (the comparison maps
of :mod:`AttentionSegLib.evaluation.consensus`), the simulated user of interactive segmentation
(:mod:`AttentionSegLib.interactive.robot`) and the Slicer glue all use it, and neither of the
first two packages imports the other for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["distance_to_border", "interior_point", "connected_regions", "within_distance"]


def distance_to_border(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance (mm) of each voxel of ``mask`` to the nearest voxel outside it; the array's edge
    counts as outside (a structure cut by the edge has its border there too)."""
    padded = np.pad(mask, 1)
    distances = ndimage.distance_transform_edt(padded, sampling=spacing)
    return distances[tuple(slice(1, -1) for _ in mask.shape)]


def within_distance(mask: np.ndarray, spacing: Sequence[float], distance_mm: float) -> np.ndarray:
    """The voxels within ``distance_mm`` (mm) of ``mask`` (its own voxels included); none for an
    empty mask."""
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    return ndimage.distance_transform_edt(~mask.astype(bool), sampling=spacing) <= distance_mm


def interior_point(mask: np.ndarray, spacing: Sequence[float]) -> tuple[int, ...] | None:
    """The voxel of ``mask`` farthest (mm) from its border; the first in array order among equals;
    None for an empty mask."""
    if not mask.any():
        return None
    distances = distance_to_border(mask.astype(bool), spacing)
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(distances)), mask.shape))


def connected_regions(
    mask: np.ndarray, spacing_mm: Sequence[float], limit: int | None = 20, values: np.ndarray | None = None
) -> list[dict]:
    """Connected components of ``mask`` (26-connected in 3D, 8 in 2D), largest first (ties: first
    in array order), at most ``limit``: ``{"voxels", "volume_ml", "index" (an interior voxel, array
    order), "bounding_box" ([start, stop) per axis)}``, and ``"mean"`` of ``values`` over the
    region when given."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    components, count = ndimage.label(mask, structure)
    if count == 0:
        return []
    sizes = np.bincount(components.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")[: limit if limit else None]
    boxes = ndimage.find_objects(components)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    regions = []
    for index in order:
        box = boxes[index]
        local = components[box] == index + 1
        inside = interior_point(local, spacing_mm)
        region = {
            "voxels": int(sizes[index]),
            "volume_ml": float(sizes[index]) * voxel_ml,
            "index": tuple(int(s.start + v) for s, v in zip(box, inside)),
            "bounding_box": [(int(s.start), int(s.stop)) for s in box],
        }
        if values is not None:
            region["mean"] = float(values[box][local].mean())
        regions.append(region)
    return regions
