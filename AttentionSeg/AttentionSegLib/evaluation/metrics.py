"""Per-label segmentation metrics in physical units, equal to MONAI's and much faster.

Definitions (identical to MONAI 1.6's ``compute_dice``, ``compute_hausdorff_distance``,
``compute_average_surface_distance(symmetric=True)`` and ``compute_surface_dice`` without
sub-voxel surfaces):

- The *surface* of a mask is the set of its voxels that have a face neighbour (6-neighbourhood in
  3D, 4 in 2D) outside the mask; the array border counts as outside. This is
  ``mask XOR binary_erosion(mask)``, what MONAI uses.
- For every surface voxel of one mask, the distance (mm, using the spacing, anisotropy included)
  to the nearest surface voxel of the other mask, in both directions.
- HD95: the larger of the two directions' 95th percentiles (linear interpolation, as
  ``torch.quantile``). Maximum Hausdorff: the largest distance. ASSD: the mean of all distances of
  both directions together. NSD at tolerance ``tau`` mm: the fraction of all surface voxels of
  both masks whose distance is at most ``tau``.
- Volumes in mL: voxel count times the voxel volume (mm^3) / 1000.

Conventions when a label is missing (``present_in`` in each row says which case applies):

============================  =======  ===================  ====================  =====
label is in                   Dice     precision/sensitiv.  HD95/HDmax/ASSD       NSD
============================  =======  ===================  ====================  =====
both maps                     defined  defined              defined               defined
reference only (missed)       0        precision NaN, s. 0  +inf (as MONAI)       0
prediction only (false pos.)  0        precision 0, s. NaN  +inf (as MONAI)       0
neither                       NaN      NaN                  NaN (as MONAI)        NaN
============================  =======  ===================  ====================  =====

MONAI's ``DiceMetric(ignore_empty=True)`` gives NaN for a label absent from the reference even
when the prediction has it; we give 0 there, so a false-positive label is not hidden. In JSON and
tables NaN and infinity are written as ``null``; :func:`summarize` never averages them silently:
it reports how many labels each mean covers.

Speed: a few passes over each map serve every label at once (voxel counts by ``bincount``, the
surfaces of all labels by comparing each voxel with its face neighbours, nearest surface voxels by
trying neighbour offsets in increasing distance); only the rare surface voxel farther than a few
voxels from the other surface goes to a per-label k-d tree. All distances stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from AttentionSegLib.io.label_map import as_label_array

__all__ = [
    "as_label_array",
    "LABEL_METRIC_KEYS",
    "AVERAGED_KEYS",
    "compute_label_metrics",
    "summarize",
    "evaluate_label_maps",
    "label_surfaces",
    "dice_per_label",
]

LABEL_METRIC_KEYS = (
    "dice",
    "iou",
    "precision",
    "sensitivity",
    "hd95_mm",
    "hd_max_mm",
    "assd_mm",
    "nsd",
    "ref_ml",
    "pred_ml",
)
# Volumes are per-label facts, not scores: they get no mean.
AVERAGED_KEYS = LABEL_METRIC_KEYS[:8]
DEFAULT_NSD_TOLERANCE_MM = 1.0

# Label values above this are renumbered before counting, so that per-value tables stay small.
_MAX_DIRECT_LABEL_VALUE = 1 << 20
_MAX_CONFUSION_CELLS = 1 << 22
_PARALLEL_QUERY_POINTS = 20_000


def label_surfaces(label_map: np.ndarray) -> np.ndarray:
    """Surface voxels of every label of a label map at once.

    A voxel of label ``v != 0`` is on the surface of ``v`` when a face neighbour has another
    label or when it lies on the array border. Because each voxel has exactly one label, this is
    the union over ``v`` of ``(label_map == v) XOR binary_erosion(label_map == v)``, computed in a
    few passes over the array instead of one pass per label.
    """
    differs = np.zeros(label_map.shape, dtype=bool)
    for axis in range(label_map.ndim):
        lower = [slice(None)] * label_map.ndim
        upper = [slice(None)] * label_map.ndim
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        step = label_map[tuple(upper)] != label_map[tuple(lower)]
        differs[tuple(upper)] |= step
        differs[tuple(lower)] |= step
        border = [slice(None)] * label_map.ndim
        for end in (0, -1):
            border[axis] = end
            differs[tuple(border)] = True
    differs &= label_map != 0
    return differs


def _search_offsets(spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero integer voxel offsets sorted by physical length (mm), out to a radius that spans
    three of the finest voxels and two of the coarsest."""
    radius_mm = max(3.0 * float(spacing.min()), 2.01 * float(spacing.max()))
    reach = np.floor(radius_mm / spacing).astype(int)
    grids = np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    lengths = np.sqrt(((offsets * spacing) ** 2).sum(axis=1))
    keep = (lengths > 0) & (lengths <= radius_mm)
    order = np.argsort(lengths[keep], kind="stable")
    return offsets[keep][order], lengths[keep][order]


class _Surface:
    """The surface voxels of one label map, as a padded array holding each surface voxel's label
    (0 elsewhere) and as the flat indices and labels of those voxels.

    The margin, as wide as the neighbour search, lets flat-index arithmetic run without bounds
    checks; both maps of a pair use the same margin, so their indices share one frame.
    """

    def __init__(self, label_map: np.ndarray, wanted: np.ndarray, margin: int):
        self.labels_padded = np.zeros(tuple(n + 2 * margin for n in label_map.shape), dtype=label_map.dtype)
        inner = tuple(slice(margin, margin + n) for n in label_map.shape)
        surface = label_surfaces(label_map)
        np.copyto(self.labels_padded[inner], label_map, where=surface)
        self.flat = self.labels_padded.reshape(-1)
        points = np.flatnonzero(surface)
        labels = label_map.reshape(-1)[points]
        keep = wanted[labels]
        coordinates = np.unravel_index(points[keep], label_map.shape)
        self.points = np.ravel_multi_index(tuple(c + margin for c in coordinates), self.labels_padded.shape)
        self.labels = labels[keep]

    def coordinates_mm(self, points: np.ndarray, spacing: np.ndarray) -> np.ndarray:
        return np.column_stack(np.unravel_index(points, self.labels_padded.shape)) * spacing


def _surface_distances(
    source: _Surface, target: _Surface, offsets: np.ndarray, lengths: np.ndarray, spacing: np.ndarray
) -> np.ndarray:
    """Distance (mm) from each surface voxel of ``source`` to the nearest surface voxel of the
    same label in ``target``.

    Exact nearest neighbours in three steps, all labels at once where possible: voxels on both
    surfaces are at 0; the rest try the voxel offsets in increasing physical length (the first
    offset that lands on the target surface is the nearest one, since every shorter offset was
    tried before); the few left after the search radius go to a k-d tree per label.
    """
    distances = np.zeros(source.points.size, dtype=np.float64)
    pending = np.flatnonzero(target.flat[source.points] != source.labels)
    pending_points = source.points[pending]
    # Found points keep their place with an impossible label until enough accumulate to be
    # worth compacting the arrays: compaction costs more than a few extra gathers.
    pending_labels = source.labels[pending].astype(np.int64)
    strides = np.asarray(target.labels_padded.strides) // target.labels_padded.itemsize
    found_since_compaction = 0
    for offset, length in zip(offsets, lengths):
        if pending.size == found_since_compaction:
            break
        hit = target.flat[pending_points + int(offset @ strides)] == pending_labels
        n_hit = int(np.count_nonzero(hit))
        if n_hit:
            distances[pending[hit]] = length
            pending_labels[hit] = -1
            found_since_compaction += n_hit
            if found_since_compaction * 4 > pending.size:
                unresolved = pending_labels >= 0
                pending, pending_points, pending_labels = (
                    pending[unresolved],
                    pending_points[unresolved],
                    pending_labels[unresolved],
                )
                found_since_compaction = 0
    pending = pending[pending_labels >= 0]

    if pending.size:
        for value in np.unique(source.labels[pending]):
            mine = pending[source.labels[pending] == value]
            tree = cKDTree(
                target.coordinates_mm(target.points[target.labels == value], spacing),
                balanced_tree=False,
                compact_nodes=False,
            )
            queries = source.coordinates_mm(source.points[mine], spacing)
            # Threads pay off only for large queries: starting them costs about a millisecond.
            workers = -1 if mine.size > _PARALLEL_QUERY_POINTS else 1
            distances[mine] = tree.query(queries, k=1, workers=workers)[0]
    return distances


def _per_label_distance_stats(labels: np.ndarray, distances: np.ndarray, n_values: int, tolerance_mm: float) -> dict:
    """Count, sum, max, 95th percentile (linear interpolation, as ``torch.quantile``) and count
    within tolerance, per label index."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=n_values)
    ends = np.cumsum(counts)
    p95 = np.full(n_values, np.nan)
    largest = np.full(n_values, np.nan)
    for index in np.flatnonzero(counts):
        own = distances[order[ends[index] - counts[index] : ends[index]]]
        position = 0.95 * (own.size - 1)
        below = int(np.floor(position))
        above = min(below + 1, own.size - 1)
        low, high = np.partition(own, (below, above))[[below, above]]
        p95[index] = low + (high - low) * (position - below)
        largest[index] = own.max()
    return {
        "count": counts,
        "sum": np.bincount(labels, weights=distances, minlength=n_values),
        "max": largest,
        "p95": p95,
        "within": np.bincount(labels[distances <= tolerance_mm], minlength=n_values),
    }


def _empty_row(value: int, name: str | None) -> dict:
    row = {"value": int(value), "name": name if name is not None else f"label {value}", "present_in": "neither"}
    row.update({key: math.nan for key in LABEL_METRIC_KEYS})
    return row


def _renumber(prediction: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compact label indices 0..K-1 for both maps and the original value of each index."""
    values, inverse = np.unique(np.concatenate([prediction.ravel(), reference.ravel()]), return_inverse=True)
    inverse = inverse.reshape(-1)
    return (
        inverse[: prediction.size].reshape(prediction.shape),
        inverse[prediction.size :].reshape(reference.shape),
        values,
    )


@dataclass
class _VoxelCounts:
    """Voxel counts per label index of a pair of maps (indices map to label values by ``values``)."""

    values: np.ndarray
    prediction: np.ndarray
    reference: np.ndarray
    both: np.ndarray

    def index_of(self) -> dict[int, int]:
        return {int(v): i for i, v in enumerate(self.values)}


def _count_voxels(prediction: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, _VoxelCounts]:
    """Both maps as label indices (renumbered when values are huge) and their voxel counts."""
    largest = max(int(prediction.max(initial=0)), int(reference.max(initial=0)))
    if largest > _MAX_DIRECT_LABEL_VALUE:
        prediction, reference, index_values = _renumber(prediction, reference)
    else:
        index_values = np.arange(largest + 1)
    n_values = len(index_values)
    if n_values * n_values <= _MAX_CONFUSION_CELLS:
        # One pass gives the whole confusion matrix: rows predicted, columns reference.
        confusion = np.bincount(
            (prediction.astype(np.intp) * n_values + reference).reshape(-1), minlength=n_values * n_values
        ).reshape(n_values, n_values)
        counts = _VoxelCounts(index_values, confusion.sum(axis=1), confusion.sum(axis=0), np.diagonal(confusion))
    else:
        counts = _VoxelCounts(
            index_values,
            np.bincount(prediction.reshape(-1), minlength=n_values),
            np.bincount(reference.reshape(-1), minlength=n_values),
            np.bincount(prediction[prediction == reference], minlength=n_values),
        )
    return prediction, reference, counts


def _labels_to_report(labels: Iterable[int] | Mapping[int, str] | None, counts: _VoxelCounts) -> dict[int, str | None]:
    """Label value -> name (None: the default name) of the labels to report, background left out."""
    if labels is None:
        present = np.flatnonzero((counts.prediction + counts.reference) > 0)
        return {int(counts.values[i]): None for i in present if counts.values[i] != 0}
    if isinstance(labels, Mapping):
        return {int(v): str(n) for v, n in sorted(labels.items(), key=lambda item: int(item[0])) if int(v) != 0}
    return {int(v): None for v in sorted({int(v) for v in labels}) if v != 0}


def _distance_stats(
    prediction: np.ndarray, reference: np.ndarray, wanted: np.ndarray, spacing: np.ndarray, tolerance_mm: float
) -> tuple[dict, dict]:
    """Per-label surface distance statistics in both directions (prediction to reference, back)."""
    offsets, lengths = _search_offsets(spacing)
    margin = int(np.abs(offsets).max(initial=0))
    n_values = wanted.size
    pred_surface = _Surface(prediction, wanted, margin)
    ref_surface = _Surface(reference, wanted, margin)
    pred_to_ref = _per_label_distance_stats(
        pred_surface.labels,
        _surface_distances(pred_surface, ref_surface, offsets, lengths, spacing),
        n_values,
        tolerance_mm,
    )
    ref_to_pred = _per_label_distance_stats(
        ref_surface.labels,
        _surface_distances(ref_surface, pred_surface, offsets, lengths, spacing),
        n_values,
        tolerance_mm,
    )
    return pred_to_ref, ref_to_pred


def _fill_row(row: dict, index: int | None, counts: _VoxelCounts, voxel_ml: float, distances) -> None:
    """The metrics of one label (index ``index``, None when in neither map) into its empty row."""
    n_pred = int(counts.prediction[index]) if index is not None else 0
    n_ref = int(counts.reference[index]) if index is not None else 0
    if not (n_pred or n_ref):
        return
    n_both = int(counts.both[index])
    row["present_in"] = "both" if n_pred and n_ref else ("reference" if n_ref else "prediction")
    row["dice"] = 2.0 * n_both / (n_pred + n_ref)
    row["iou"] = n_both / (n_pred + n_ref - n_both)
    row["precision"] = n_both / n_pred if n_pred else math.nan
    row["sensitivity"] = n_both / n_ref if n_ref else math.nan
    row["ref_ml"] = n_ref * voxel_ml
    row["pred_ml"] = n_pred * voxel_ml
    if not (n_pred and n_ref):
        row.update(hd95_mm=math.inf, hd_max_mm=math.inf, assd_mm=math.inf, nsd=0.0)
        return
    pred_to_ref, ref_to_pred = distances
    n_surface = int(pred_to_ref["count"][index] + ref_to_pred["count"][index])
    row["hd95_mm"] = float(max(pred_to_ref["p95"][index], ref_to_pred["p95"][index]))
    row["hd_max_mm"] = float(max(pred_to_ref["max"][index], ref_to_pred["max"][index]))
    row["assd_mm"] = float(pred_to_ref["sum"][index] + ref_to_pred["sum"][index]) / n_surface
    row["nsd"] = int(pred_to_ref["within"][index] + ref_to_pred["within"][index]) / n_surface


def compute_label_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing_mm: Sequence[float],
    labels: Iterable[int] | Mapping[int, str] | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> list[dict]:
    """Dice, IoU, precision, sensitivity, HD95, HDmax, ASSD, NSD and volumes for each label.

    Args:
        prediction: integer label map.
        reference: integer label map of the same shape.
        spacing_mm: voxel size in mm per array axis, in the arrays' axis order.
        labels: label values to evaluate, or a mapping value -> name. Default: every non-zero
            value present in either map. Background (0) is never evaluated.
        nsd_tolerance_mm: tolerance of the normalized surface Dice, in mm.

    Returns:
        One dict per label, in increasing label value, with the keys ``value``, ``name``,
        ``present_in`` (``"both"``, ``"reference"``, ``"prediction"`` or ``"neither"``) and
        :data:`LABEL_METRIC_KEYS` (NaN where undefined, ``inf`` for distances to a missing mask;
        see the module docstring).

    Raises:
        ValueError: shapes differ, spacing does not match the number of axes or is not positive,
            labels are not non-negative integers, or the tolerance is negative.
    """
    prediction = as_label_array(prediction, "prediction")
    reference = as_label_array(reference, "reference")
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if spacing.shape != (prediction.ndim,) or np.any(spacing <= 0):
        raise ValueError(f"spacing_mm needs {prediction.ndim} positive values, got {tuple(spacing_mm)}")
    if nsd_tolerance_mm < 0:
        raise ValueError(f"nsd_tolerance_mm must be >= 0, got {nsd_tolerance_mm}")

    prediction, reference, counts = _count_voxels(prediction, reference)
    value_to_index = counts.index_of()
    names = _labels_to_report(labels, counts)
    in_both = (counts.prediction > 0) & (counts.reference > 0)
    in_both[0] = False
    wanted = np.zeros(len(counts.values), dtype=bool)
    wanted[[value_to_index[v] for v in names if v in value_to_index]] = True
    wanted &= in_both
    distances = _distance_stats(prediction, reference, wanted, spacing, nsd_tolerance_mm) if wanted.any() else None

    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for value, name in names.items():
        row = _empty_row(value, name)
        _fill_row(row, value_to_index.get(value), counts, voxel_ml, distances)
        rows.append(row)
    return rows


def _finite(value: float) -> bool:
    return value is not None and math.isfinite(value)


def summarize(rows: Sequence[dict]) -> dict:
    """Means over labels, and how many labels each mean covers.

    Labels absent from both maps are left out of every mean (there is nothing to measure).
    Dice, IoU and NSD average every other label, a missed or false-positive label counting 0.
    Precision and sensitivity average the labels where they are defined. Distances average
    the labels present in both maps; labels with an infinite distance are counted in
    ``n_infinite`` instead of turning the mean into infinity.

    Returns:
        ``{"mean": {key: value or NaN}, "n_labels_averaged": N, "n_averaged": {key: n},
        "n_infinite": {key: n}}`` where N is the number of labels present in either map.
    """
    evaluated = [row for row in rows if row["present_in"] != "neither"]
    mean, n_averaged, n_infinite = {}, {}, {}
    for key in AVERAGED_KEYS:
        values = [row[key] for row in evaluated if _finite(row[key])]
        mean[key] = float(np.mean(values)) if values else math.nan
        n_averaged[key] = len(values)
        n_infinite[key] = sum(1 for row in evaluated if row[key] is not None and math.isinf(row[key]))
    return {
        "mean": mean,
        "n_labels_averaged": len(evaluated),
        "n_averaged": n_averaged,
        "n_infinite": {key: n for key, n in n_infinite.items() if n},
    }


def evaluate_label_maps(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing_mm: Sequence[float],
    labels: Iterable[int] | Mapping[int, str] | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> dict:
    """:func:`compute_label_metrics` plus :func:`summarize`, in the layout of the JSON report."""
    rows = compute_label_metrics(prediction, reference, spacing_mm, labels, nsd_tolerance_mm)
    return {
        "labels": rows,
        **summarize(rows),
        "spacing_mm": [float(s) for s in spacing_mm],
        "nsd_tolerance_mm": float(nsd_tolerance_mm),
    }


def dice_per_label(first: np.ndarray, second: np.ndarray, values: Iterable[int]) -> dict[int, float]:
    """Dice overlap of two label maps for each label value (no distances); NaN where the label
    is in neither map."""
    scores = {}
    for value in values:
        a, b = first == value, second == value
        total = int(a.sum()) + int(b.sum())
        scores[int(value)] = 2.0 * int((a & b).sum()) / total if total else math.nan
    return scores
