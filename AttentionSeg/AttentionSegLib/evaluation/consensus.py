"""Where do models agree, and where are they wrong? Voxel maps of several models' label maps.

- :func:`agreement_counts`: per label, how many of the N models give each voxel that label.
- :func:`majority_vote` and :func:`staple`: consensus label maps (SimpleITK's ``LabelVoting``
  and ``MultiLabelSTAPLE`` filters).
- :func:`error_masks`: false positives and false negatives of a prediction per label; the two
  partition prediction XOR reference of that label exactly.
- :func:`disagreement_regions`: connected regions where the models do not all agree, largest
  first, each with its size (voxels, mL) and an interior voxel (the farthest from the region's
  border, so it lies inside even a curved region) for the user to visit.

All maps are arrays on one grid (array order); :func:`ras_of_index` places a voxel in RAS with
the image's geometry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from AttentionSegLib.io.image import Image
from AttentionSegLib.regions import connected_regions

FALSE_POSITIVE_COLOR = (1.0, 0.55, 0.0)  # orange: a leak
FALSE_NEGATIVE_COLOR = (0.15, 0.45, 1.0)  # blue: a miss
# Codes of :func:`error_map`: kind and colour.
ERROR_KINDS = {1: ("false positive", FALSE_POSITIVE_COLOR), 2: ("false negative", FALSE_NEGATIVE_COLOR)}

__all__ = [
    "agreement_counts",
    "agreement_level",
    "error_map",
    "ERROR_KINDS",
    "majority_vote",
    "staple",
    "error_masks",
    "disagreement_regions",
    "ras_of_index",
]


def _check_same_shape(label_maps: Sequence[np.ndarray]) -> None:
    if not label_maps:
        raise ValueError("no label maps")
    shapes = {np.shape(m) for m in label_maps}
    if len(shapes) != 1:
        raise ValueError(f"label maps of different shapes: {sorted(shapes)}")


def agreement_counts(label_maps: Sequence[np.ndarray], labels: Iterable[int]) -> dict[int, np.ndarray]:
    """label -> (uint8) number of models that give each voxel that label."""
    _check_same_shape(label_maps)
    return {int(label): sum((m == label).astype(np.uint8) for m in label_maps) for label in labels}


def agreement_level(label_maps: Sequence[np.ndarray], majority: np.ndarray | None = None) -> np.ndarray:
    """Per voxel, how many models give the majority's label; where the majority is background,
    how many give any label (0: no model labels the voxel). ``majority``: :func:`majority_vote`,
    computed when not given."""
    _check_same_shape(label_maps)
    majority = majority_vote(label_maps) if majority is None else majority
    agreeing = sum((np.asarray(m) == majority).astype(np.uint8) for m in label_maps)
    labelled = sum((np.asarray(m) != 0).astype(np.uint8) for m in label_maps)
    return np.where(majority != 0, agreeing, labelled).astype(np.uint8)


def error_map(prediction: np.ndarray, reference: np.ndarray, value: int) -> np.ndarray:
    """One label's errors: 1 where the prediction leaks (false positive), 2 where it misses (false
    negative), 0 elsewhere; the codes and colours are :data:`ERROR_KINDS`. One map per label: a
    voxel can be one label's leak and another's miss at once."""
    codes = np.zeros(prediction.shape, np.uint8)
    masks = error_masks(prediction, reference, [value])[int(value)]
    codes[masks["false_positive"]] = 1
    codes[masks["false_negative"]] = 2
    return codes


def _to_sitk(label_maps: Sequence[np.ndarray]) -> list[sitk.Image]:
    return [sitk.GetImageFromArray(np.ascontiguousarray(m, dtype=np.uint16)) for m in label_maps]


def majority_vote(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """Per voxel the label most models give; a tie between labels gives background (0)."""
    _check_same_shape(label_maps)
    voting = sitk.LabelVotingImageFilter()
    voting.SetLabelForUndecidedPixels(0)
    return sitk.GetArrayFromImage(voting.Execute(_to_sitk(label_maps))).astype(np.asarray(label_maps[0]).dtype)


def staple(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """The multi-label STAPLE estimate (each model's confusion matrix estimated by EM); voxels
    STAPLE leaves undecided become background."""
    _check_same_shape(label_maps)
    filter_ = sitk.MultiLabelSTAPLEImageFilter()
    filter_.SetLabelForUndecidedPixels(0)
    return sitk.GetArrayFromImage(filter_.Execute(_to_sitk(label_maps))).astype(np.asarray(label_maps[0]).dtype)


def error_masks(prediction: np.ndarray, reference: np.ndarray, labels: Iterable[int]) -> dict[int, dict]:
    """label -> ``{"false_positive", "false_negative"}`` boolean masks: predicted but not in the
    reference (a leak), in the reference but not predicted (a miss)."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} differ in shape")
    masks = {}
    for label in labels:
        predicted, expected = prediction == label, reference == label
        masks[int(label)] = {"false_positive": predicted & ~expected, "false_negative": expected & ~predicted}
    return masks


def disagreement_regions(
    label_maps: Sequence[np.ndarray], spacing_mm: Sequence[float], limit: int | None = 20
) -> list[dict]:
    """Connected regions (26/8-connected) where not every model gives the same label, largest
    first: ``{"voxels", "volume_ml", "index" (an interior voxel, array order), "bounding_box"}``
    (:func:`~AttentionSegLib.regions.connected_regions`)."""
    _check_same_shape(label_maps)
    first = np.asarray(label_maps[0])
    disagree = np.zeros(first.shape, bool)
    for other in label_maps[1:]:
        disagree |= np.asarray(other) != first
    return connected_regions(disagree, spacing_mm, limit)


def ras_of_index(image: Image, index: Sequence[int]) -> tuple[float, ...]:
    """RAS (mm) of voxel ``index`` (array order) on ``image``'s grid (3D; 2D maps to z = 0)."""
    ijk = np.asarray(list(reversed(index)), dtype=float)
    lps = (image.index_to_physical() @ np.append(ijk, 1.0))[: image.spatial_dims]
    lps = np.pad(lps, (0, 3 - lps.size))
    return (-float(lps[0]), -float(lps[1]), float(lps[2]))


def label_names_of(labels: Mapping[int, str] | Iterable[int]) -> dict[int, str]:
    """``{value: name}`` from a mapping or plain values (named "label N")."""
    if isinstance(labels, Mapping):
        return {int(k): str(v) for k, v in labels.items()}
    return {int(v): f"label {int(v)}" for v in labels}
