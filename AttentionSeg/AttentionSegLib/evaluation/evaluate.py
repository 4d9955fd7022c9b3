"""Evaluate a predicted label map file against a reference label map file."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from AttentionSegLib.data.dataset import DatasetDefinition
from AttentionSegLib.errors import AttentionSegError, GeometryMismatchError
from AttentionSegLib.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM, evaluate_label_maps
from AttentionSegLib.io.dicom_seg import is_dicom_seg
from AttentionSegLib.io.image import Image, check_same_grid, grid_differences
from AttentionSegLib.io.label_map import read_label_image

__all__ = ["evaluate_label_images", "evaluate_label_files", "resample_nearest"]


def resample_nearest(image: Image, onto: Image) -> Image:
    """``image`` resampled with nearest neighbour onto the grid of ``onto`` (outside: 0)."""
    moved = sitk.Resample(image.to_sitk(), onto.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return Image.from_sitk(moved)


def evaluate_label_images(
    prediction: Image,
    reference: Image,
    definition: DatasetDefinition | None = None,
    resample: bool = False,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    prediction_name: str = "prediction",
    reference_name: str = "reference",
) -> dict:
    """Metrics report of two label images (see :func:`AttentionSegLib.evaluation.metrics.evaluate_label_maps`).

    With a dataset definition, labels are named after it and every label it declares is reported;
    a value it does not declare is an error.

    Raises:
        GeometryMismatchError: different grids (unless ``resample``) or dimensionality.
        AttentionSegError: undeclared label values.
    """
    if prediction.spatial_dims != reference.spatial_dims:
        raise GeometryMismatchError(
            f"{prediction_name} is {prediction.spatial_dims}D but {reference_name} is {reference.spatial_dims}D"
        )
    if not resample:
        check_same_grid(prediction, reference, prediction_name, reference_name)
    elif grid_differences(prediction, reference):
        prediction = resample_nearest(prediction, reference)
    labels = None
    if definition is not None:
        for what, image in ((prediction_name, prediction), (reference_name, reference)):
            undeclared = definition.undeclared_values_message(image.array)
            if undeclared:
                raise AttentionSegError(f"{what}: {undeclared} in {definition.path}")
        labels = definition.foreground_labels
    return evaluate_label_maps(
        prediction.array, reference.array, reference.spacing_array_order, labels, nsd_tolerance_mm
    )


def evaluate_label_files(
    prediction_path: str | Path,
    reference_path: str | Path,
    definition: DatasetDefinition | None = None,
    resample: bool = False,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> dict:
    """Read two label map files and report their metrics; the report names both files.

    A DICOM SEG on either side is placed on the grid of the other file (the reference's when both
    are SEGs), its segments matched to the dataset's label names when a definition is given."""
    names = definition.foreground_labels if definition is not None else None
    if is_dicom_seg(prediction_path):  # the reference first: the SEG's frames go onto its grid
        reference = read_label_image(reference_path, label_names=names)
        prediction = read_label_image(prediction_path, onto=reference, label_names=names)
    else:
        prediction = read_label_image(prediction_path)
        reference = read_label_image(reference_path, onto=prediction, label_names=names)
    report = evaluate_label_images(
        prediction,
        reference,
        definition,
        resample,
        nsd_tolerance_mm,
        prediction_name=str(prediction_path),
        reference_name=str(reference_path),
    )
    return {"prediction": str(prediction_path), "reference": str(reference_path), **report}
