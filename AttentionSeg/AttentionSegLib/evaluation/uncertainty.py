"""How well an uncertainty map points at a segmentation's errors, against a reference.

- :func:`error_auroc`: the area under the ROC curve of the map as a detector of wrong voxels
  (prediction != reference), among the voxels within ``within_mm`` of the structure (predicted or
  reference foreground, and everything within that distance of it: far background is trivially
  right and would inflate any score), and among the prediction's boundary voxels (both sides of
  every interface, where "errors sit on the boundary" alone cannot tell right from wrong).
- :func:`boundary_distance_map`: ``exp(-d)``, ``d`` the distance (mm) to the predicted boundary: a
  map that knows nothing of the model, the baseline every method must beat.
- :func:`expected_calibration_error`: of the predicted class's probability (equal-width bins).

The AUROC is the Mann-Whitney statistic (scipy's ranks, ties counted half), so no voxel sampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage, stats

from AttentionSegLib.regions import within_distance

__all__ = ["error_auroc", "boundary_voxels", "boundary_distance_map", "expected_calibration_error", "auroc"]


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for the ``positive`` voxels; None when one class is empty."""
    scores, positive = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(positive, dtype=bool).ravel()
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return None
    ranks = stats.rankdata(scores)
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def boundary_voxels(labels: np.ndarray) -> np.ndarray:
    """Voxels with a face neighbour of another label (both sides of every interface)."""
    boundary = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        differs = np.diff(labels, axis=axis) != 0
        lower = [slice(None)] * labels.ndim
        upper = [slice(None)] * labels.ndim
        lower[axis], upper[axis] = slice(0, -1), slice(1, None)
        boundary[tuple(lower)] |= differs
        boundary[tuple(upper)] |= differs
    return boundary


def boundary_distance_map(labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """``exp(-d)`` with ``d`` the distance in mm to the nearest boundary voxel of ``labels``."""
    boundary = boundary_voxels(labels)
    if not boundary.any():
        return np.zeros(labels.shape, dtype=np.float32)
    distance = ndimage.distance_transform_edt(~boundary, sampling=spacing)
    return np.exp(-distance).astype(np.float32)


def error_auroc(
    uncertainty: np.ndarray,
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float],
    within_mm: float = 5.0,
) -> dict:
    """``{"near_structure", "boundary"}``: the map's AUROC for wrong voxels within ``within_mm`` of
    the structure and among the prediction's boundary voxels (None where there are no errors or no
    right voxels), with the voxel and error counts of each set."""
    wrong = prediction != reference
    near = within_distance((prediction != 0) | (reference != 0), spacing, within_mm)
    result = {}
    for name, where in (("near_structure", near), ("boundary", boundary_voxels(prediction))):
        result[name] = auroc(uncertainty[where], wrong[where])
        result[f"{name}_voxels"] = int(where.sum())
        result[f"{name}_errors"] = int(wrong[where].sum())
    return result


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Sum over equal-width confidence bins of (share of voxels) x |accuracy - mean confidence|."""
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=bool).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    confidence_sum = np.bincount(which, weights=confidence, minlength=bins)
    correct_sum = np.bincount(which, weights=correct, minlength=bins)
    used = counts > 0
    gaps = np.abs(correct_sum[used] - confidence_sum[used]) / counts[used]
    return float((counts[used] / confidence.size * gaps).sum())
