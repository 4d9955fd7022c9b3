"""The voxel maps of a model comparison on one case, as arrays on the case's grid: consensus label
maps (majority vote and STAPLE), the agreement level, the regions where the models disagree, each
model's errors per label against a reference, and the largest of those errors.

One assembly for both front ends: ``attentionseg compare --image`` writes the maps as files
(:func:`AttentionSegLib.cli.dataset_evaluation.write_case_maps`) and the Slicer module makes
nodes of them (:func:`AttentionSegLib.slicer.comparison_maps.add_comparison_maps`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from AttentionSegLib.evaluation.consensus import (
    ERROR_KINDS,
    agreement_level,
    disagreement_regions,
    error_map,
    majority_vote,
    ras_of_index,
    staple,
)
from AttentionSegLib.evaluation.metrics import evaluate_label_maps
from AttentionSegLib.io.image import Image
from AttentionSegLib.regions import connected_regions

__all__ = ["ComparisonMapArrays", "compute_comparison_maps", "ERRORS_LISTED", "REGIONS_PER_ERROR_MAP"]

ERRORS_LISTED = 20  # rows of the largest-errors list
REGIONS_PER_ERROR_MAP = 3  # largest regions of each model, label and kind that compete for the list


@dataclass
class ComparisonMapArrays:
    """The maps of :func:`compute_comparison_maps`, arrays in array order on ``grid``.

    Error maps are made on demand (:meth:`error_maps`), one at a time: a model with a hundred
    labels would otherwise hold a hundred volumes per model.
    """

    grid: Image
    label_maps: dict[str, np.ndarray]  # model name -> label array
    labels: dict[int, str]  # label value -> name; 0 (background) has no error maps
    reference: np.ndarray | None = None
    consensus: dict[str, np.ndarray] = field(default_factory=dict)  # "majority" / "staple"; two models or more
    agreement: np.ndarray | None = None  # uint8 :func:`~.consensus.agreement_level`; two models or more
    # Where the models differ, largest first: voxels, volume_ml, index, bounding_box, ras (mm).
    disagreements: list[dict] = field(default_factory=list)
    # The largest error regions, largest first: model, label, kind, volume_ml, voxels, ras (mm).
    worst_errors: list[dict] = field(default_factory=list)
    # "majority" / "staple" -> metrics against the reference (evaluate_label_maps), when asked for.
    consensus_metrics: dict[str, dict] = field(default_factory=dict)

    def error_maps(self, model: str) -> Iterator[tuple[int, str, np.ndarray]]:
        """``(value, label name, codes)`` for each label but background: ``model``'s errors on that
        label against the reference, coded as :data:`~.consensus.ERROR_KINDS` (1 false positive,
        2 false negative). One map per label: a voxel can be one label's leak and another's miss."""
        if self.reference is None:
            raise ValueError("error maps need a reference")
        for value, label in self.labels.items():
            if value:
                yield value, label, error_map(self.label_maps[model], self.reference, value)


def compute_comparison_maps(
    grid: Image,
    label_maps: dict[str, np.ndarray],
    labels: dict[int, str],
    reference: np.ndarray | None = None,
    *,
    worst_errors: int = ERRORS_LISTED,
    measure_consensus: bool = False,
) -> ComparisonMapArrays:
    """The maps of ``label_maps`` (model name -> label array on ``grid``, the models' label values
    named by ``labels``).

    Consensus, agreement and disagreement regions need two models or more; error maps, the
    ``worst_errors`` largest error regions (the :data:`REGIONS_PER_ERROR_MAP` largest of each
    model, label and kind; 0: none, not searched) and, with ``measure_consensus``, the consensus
    metrics need ``reference`` (an array on ``grid`` with the models' label values).
    """
    maps = ComparisonMapArrays(grid, dict(label_maps), dict(labels), reference)
    arrays = list(label_maps.values())
    spacing = grid.spacing_array_order
    if len(arrays) > 1:
        majority = majority_vote(arrays)
        maps.consensus = {"majority": majority, "staple": staple(arrays)}
        maps.disagreements = [
            {**region, "ras": ras_of_index(grid, region["index"])} for region in disagreement_regions(arrays, spacing)
        ]
        maps.agreement = agreement_level(arrays, majority)
        if reference is not None and measure_consensus:  # the consensus measured like any model
            maps.consensus_metrics = {
                name: evaluate_label_maps(array, reference, spacing, labels) for name, array in maps.consensus.items()
            }
    if reference is not None and worst_errors > 0:
        rows = []
        for model in label_maps:
            for _, label, codes in maps.error_maps(model):
                for code, (kind, _) in ERROR_KINDS.items():
                    for region in connected_regions(codes == code, spacing, limit=REGIONS_PER_ERROR_MAP):
                        rows.append(
                            {
                                "model": model,
                                "label": label,
                                "kind": kind,
                                "volume_ml": region["volume_ml"],
                                "voxels": region["voxels"],
                                "ras": ras_of_index(grid, region["index"]),
                            }
                        )
        rows.sort(key=lambda row: -row["volume_ml"])
        maps.worst_errors = rows[:worst_errors]
    return maps
