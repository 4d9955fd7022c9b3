"""Scribbles and lassos drawn on a slice, as voxels of the image grid (no Qt, no Slicer).

Points come in as continuous voxel indices (array order k, j, i; the Logic converts RAS points
with the image's geometry, so spacing, origin and direction are honoured). A scribble is an open
stroke: the voxels it passes through, every half voxel along it, in order. A lasso is a closed
contour on one slice of the grid: the voxels of that slice whose centres lie inside it (even-odd
rule). Own code, not a library's: scikit-image is not a dependency, and matplotlib's path test
would tie the engine's prompts to a plotting package.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from AttentionSegLib.errors import AttentionSegError

__all__ = ["stroke_voxels", "lasso_mask", "box_through_slice", "slice_box", "on_slice", "LASSO_PLANE_TOLERANCE"]

# How far (voxels) a lasso's points may lie off the slice they are drawn on: a slice view aligned
# with the volume puts them on it up to rounding.
LASSO_PLANE_TOLERANCE = 0.5


def stroke_voxels(points: Sequence[Sequence[float]], shape: Sequence[int]) -> list[tuple[int, ...]]:
    """The voxels an open stroke through ``points`` passes, in order, each once.

    Raises:
        AttentionSegError: no point, or a point outside the grid ``shape``.
    """
    points = _as_points(points, shape, "scribble", minimum=1)
    samples = [points[:1]]
    for a, b in zip(points[:-1], points[1:]):
        steps = max(1, int(np.ceil(2 * np.abs(b - a).max())))  # every half voxel
        samples.append(a + (b - a) * (np.arange(1, steps + 1)[:, None] / steps))
    voxels = np.rint(np.concatenate(samples)).astype(int)
    return list(dict.fromkeys(tuple(int(v) for v in voxel) for voxel in voxels))


def lasso_mask(points: Sequence[Sequence[float]], shape: Sequence[int]) -> np.ndarray:
    """The voxels of the grid ``shape`` inside the closed contour through ``points``, all on the
    slice the contour is drawn on (the axis along which the points do not move).

    Raises:
        AttentionSegError: fewer than three points, a point outside the grid, points not on one
            slice, a contour that crosses itself, or one that holds no voxel centre.
    """
    points = _as_points(points, shape, "lasso", minimum=3)
    shape = tuple(int(n) for n in shape)
    mask = np.zeros(shape, dtype=bool)
    if len(shape) == 2:
        axis, plane, polygon = None, (), points
    else:
        spread = points.max(axis=0) - points.min(axis=0)
        axis = int(np.argmin(spread))
        if spread[axis] > 2 * LASSO_PLANE_TOLERANCE:
            raise AttentionSegError(
                f"the lasso is not on one slice of the volume (its points are {spread[axis]:.1f} voxels apart "
                f"even along axis {axis})"
            )
        plane = (int(np.rint(points[:, axis].mean())),)
        polygon = np.delete(points, axis, axis=1)
    if _crosses_itself(polygon):
        raise AttentionSegError("the lasso crosses itself; draw one closed loop")
    in_plane = [n for d, n in enumerate(shape) if d != axis]
    inside = _inside_polygon(polygon, in_plane)
    if not inside.any():
        raise AttentionSegError("the lasso holds no voxel; draw it larger")
    if axis is None:
        return inside
    index = [slice(None)] * len(shape)
    index[axis] = plane[0]
    mask[tuple(index)] = inside
    return mask


def box_through_slice(
    start: Sequence[int], stop: Sequence[int], axis: int, shape: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A box drawn on one slice (``start`` inclusive, ``stop`` exclusive, one voxel thick along
    ``axis``) as a 3D box: as deep along ``axis`` as its larger in-plane side, centred on the slice,
    within the grid ``shape`` (the object goes on through the slices, as nnInteractive reads a 2D
    box). The one rule for a 2D box, a lasso's box and the robot user's 2D box.

    Raises:
        AttentionSegError: the box is empty in the slice's plane.
    """
    start, stop = [int(v) for v in start], [int(v) for v in stop]
    sides = [b - a for d, (a, b) in enumerate(zip(start, stop)) if d != axis]
    if min(sides) <= 0:
        raise AttentionSegError("the box has no area on its slice; drag it open")
    half = max(sides) // 2
    start[axis], stop[axis] = max(0, start[axis] - half), min(int(shape[axis]), start[axis] + 1 + half)
    return tuple(start), tuple(stop)


def on_slice(voxel: Sequence[int], axis: int, index: int) -> tuple[int, ...]:
    """A voxel of the slice ``index`` along ``axis`` (its in-plane indices) as a voxel of the volume."""
    return tuple(int(v) for v in np.insert(np.asarray(voxel), axis, index))


def slice_box(
    start: Sequence[int], stop: Sequence[int], axis: int, index: int, shape: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A box drawn on the slice ``index`` along ``axis`` (in-plane corners, ``stop`` exclusive) as
    the 3D box :func:`box_through_slice` reads it."""
    return box_through_slice(on_slice(start, axis, index), on_slice(stop, axis, index + 1), axis, shape)


def _as_points(points, shape, what: str, minimum: int) -> np.ndarray:
    array = np.asarray(points, dtype=float).reshape(-1, len(shape)) if len(points) else np.zeros((0, len(shape)))
    if len(array) < minimum:
        raise AttentionSegError(f"a {what} needs at least {minimum} point(s), got {len(array)}")
    upper = np.asarray(shape, dtype=float) - 0.5
    if np.any(array < -0.5) or np.any(array > upper):
        raise AttentionSegError(f"the {what} leaves the volume")
    return array


def _inside_polygon(polygon: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Even-odd test of every voxel centre of the 2D grid ``shape`` against ``polygon`` (N, 2)."""
    rows, columns = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    inside = np.zeros(tuple(shape), dtype=bool)
    ends = np.roll(polygon, -1, axis=0)
    for (r0, c0), (r1, c1) in zip(polygon, ends):
        if r0 == r1:
            continue  # an edge along the rows never crosses a ray along them
        crosses = (rows >= min(r0, r1)) & (rows < max(r0, r1))
        column_at = c0 + (rows - r0) * (c1 - c0) / (r1 - r0)
        inside ^= crosses & (columns < column_at)
    return inside


def _crosses_itself(polygon: np.ndarray) -> bool:
    """Whether two edges of the closed polygon that do not share a corner intersect."""
    starts, ends = polygon, np.roll(polygon, -1, axis=0)
    n = len(polygon)
    for a in range(n):
        for b in range(a + 2, n):
            if a == 0 and b == n - 1:
                continue  # neighbours across the closing edge
            if _segments_intersect(starts[a], ends[a], starts[b], ends[b]):
                return True
    return False


def _segments_intersect(p1, p2, q1, q2) -> bool:
    def orientation(a, b, c) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    d1, d2 = orientation(q1, q2, p1), orientation(q1, q2, p2)
    d3, d4 = orientation(p1, p2, q1), orientation(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0
