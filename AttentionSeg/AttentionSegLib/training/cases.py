"""The training and validation cases, read once into memory on the plan's grid.

Each case is read (all channels, the label map checked against the declared values), resampled
to the target spacing (linear for the image, nearest for the labels), its label values turned
into class indices and its clinical vector z-scored. Intensity normalisation comes after, once
its statistics are fitted on the training cases (see :mod:`~AttentionSegLib.training.run_plan`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from AttentionSegLib.data.dataset import DatasetDefinition
from AttentionSegLib.data.preprocessing import (
    ClinicalNormalization,
    Normalization,
    read_case_image,
    read_case_label,
    resample_array,
)

__all__ = ["PreparedCase", "load_cases", "normalize_cases"]


@dataclass
class PreparedCase:
    """One case as the network sees it."""

    case_id: str
    image: np.ndarray  # (C, *spatial) float32, resampled (and normalised once the statistics are known)
    label: np.ndarray  # (1, *spatial) int64 class indices
    clinical: np.ndarray | None  # (F,) float32, z-scored


def load_cases(
    definition: DatasetDefinition,
    ids: list[str],
    target_spacing: tuple[float, ...],
    lookup: np.ndarray,
    clinical: ClinicalNormalization | None,
) -> list[PreparedCase]:
    """Read and resample the cases ``ids`` (in parallel threads; the order of ``ids`` is kept).

    Args:
        definition: the dataset.
        ids: case identifiers.
        target_spacing: mm, array order.
        lookup: label value -> class index (:func:`~AttentionSegLib.data.preprocessing.label_lookup`).
        clinical: the clinical z-score, or None for a network without clinical input.
    """

    def load(case_id: str) -> PreparedCase:
        case = definition.case(case_id)
        image = read_case_image(case, definition)
        label = read_case_label(case, definition, image)
        spacing = image.spacing_array_order
        array, _ = resample_array(image.array, spacing, target_spacing)
        label_array, _ = resample_array(label[None], spacing, target_spacing, is_label=True)
        vector = clinical.apply(case.clinical).astype(np.float32) if clinical is not None else None
        return PreparedCase(case_id, array, lookup[label_array], vector)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(load, ids))


def normalize_cases(cases: list[PreparedCase], normalization: Normalization) -> None:
    """Normalise the cases' images in place."""
    for case in cases:
        case.image = normalization.apply(case.image)
