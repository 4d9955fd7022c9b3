"""Which case to annotate next: the cases of a dataset ranked by the expected benefit of
annotating them (``attentionseg dataset rank``, "Next case" in the module and the web page).

The rule: a case's expected wrong volume, in mL: the sum of the model's uncertainty
(:mod:`~AttentionSegLib.inference.uncertainty`, 0-1 per voxel, read as the chance that the voxel is
wrong) times the voxel volume, over the voxels within ``NEAR_MM`` of the predicted structures (far
background is certain and the same for every case; counting it would rank large images first). A
case the model finds nothing in counts all its voxels. The larger the expected wrong volume, the
more a reader's correction changes the training data. How it compares with a random order is
measured by the annotation campaign (``attentionseg campaign``, ``bench/RESULTS.md``).

Equal scores keep a seeded random order, so a ranking is the same for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from AttentionSegLib.data.dataset import Case, DatasetDefinition
from AttentionSegLib.regions import within_distance

__all__ = ["RankedCase", "NEAR_MM", "expected_wrong_volume", "rank_cases", "cases_to_rank", "next_case"]

NEAR_MM = 5.0


@dataclass(frozen=True)
class RankedCase:
    case_id: str
    expected_wrong_ml: float
    mean_uncertainty: float  # over the voxels counted
    structure_ml: float  # the predicted foreground


def expected_wrong_volume(uncertainty: np.ndarray, labels: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """``(expected wrong volume in mL, mean uncertainty)`` over the voxels within :data:`NEAR_MM`
    of the predicted foreground (every voxel when there is none)."""
    foreground = labels != 0
    near = within_distance(foreground, spacing, NEAR_MM) if foreground.any() else np.ones(labels.shape, bool)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    values = uncertainty[near]
    return float(values.sum()) * voxel_ml, float(values.mean())


def cases_to_rank(definition: DatasetDefinition, include_annotated: bool) -> list[Case]:
    """The dataset's cases without labels, then (``include_annotated``) the annotated ones."""
    return list(definition.test_cases) + (list(definition.cases) if include_annotated else [])


def rank_cases(
    predictor,
    definition: DatasetDefinition,
    cases: list[Case],
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[RankedCase]:
    """The cases, highest expected wrong volume first (see the module docstring)."""
    from AttentionSegLib.data.preprocessing import read_case_image
    from AttentionSegLib.inference.uncertainty import DEFAULT_METHOD

    rng = np.random.default_rng(seed)
    tie_order = {case.case_id: float(v) for case, v in zip(cases, rng.random(len(cases)))}
    ranked = []
    for done, case in enumerate(cases, start=1):
        image = read_case_image(case, definition)
        prediction = predictor.predict(image, uncertainty=DEFAULT_METHOD, names=[str(case.images[0])])
        labels = prediction.label_image.array
        spacing = image.spacing_array_order
        wrong_ml, mean = expected_wrong_volume(prediction.uncertainty.array, labels, spacing)
        structure_ml = float((labels != 0).sum()) * float(np.prod(spacing)) / 1000.0
        ranked.append(RankedCase(case.case_id, wrong_ml, mean, structure_ml))
        if progress is not None:
            progress(done, len(cases))
    return sorted(ranked, key=lambda r: (-round(r.expected_wrong_ml, 9), tie_order[r.case_id]))


def next_case(predictor, dataset_json, seed: int = 0) -> tuple[RankedCase, Case]:
    """The dataset's case without labels to annotate next ("Next case"): its ranking row and case.

    Raises:
        AttentionSegError: the dataset has no case without labels.
    """
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.errors import AttentionSegError

    definition = load_dataset(dataset_json)
    cases = cases_to_rank(definition, include_annotated=False)
    if not cases:
        raise AttentionSegError(f"{definition.path}: no case without labels to rank (MSD 'test' or imagesTs)")
    top = rank_cases(predictor, definition, cases, seed)[0]
    return top, definition.case(top.case_id)
