"""Where a segmentation is likely wrong: the map's grid and range, a blurred boundary raises it,
both methods through ``attentionseg segment --uncertainty``, and the measures of how well a map
finds errors (AUROC, calibration) against brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from AttentionSegLib.evaluation.uncertainty import (
    auroc,
    boundary_distance_map,
    boundary_voxels,
    error_auroc,
    expected_calibration_error,
)
from AttentionSegLib.inference.predictor import Predictor
from AttentionSegLib.io.image import read_image
from conftest import assert_bad_input, attentionseg, held_out_image_and_reference


def test_auroc_is_the_share_of_error_right_pairs_ordered_correctly():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # ties on purpose
    positive = rng.random(60) < 0.3
    pairs = [(a, b) for a, b in itertools.product(scores[positive], scores[~positive])]
    brute = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert auroc(scores, positive) == pytest.approx(brute)
    assert auroc(scores, np.zeros(60, bool)) is None


def test_boundary_voxels_are_both_sides_of_every_interface_and_the_baseline_decays_in_mm():
    labels = np.zeros((1, 6, 6), np.uint8)
    labels[0, 2:4, 2:4] = 1
    boundary = boundary_voxels(labels)
    expected = ndimage.binary_dilation(labels == 1, ndimage.generate_binary_structure(3, 1)) & ~(
        ndimage.binary_erosion(labels == 1, ndimage.generate_binary_structure(3, 1), border_value=1)
    )
    assert np.array_equal(boundary, expected)  # the 2x2 square (all boundary) and its 8 face neighbours
    baseline = boundary_distance_map(labels, (1.0, 2.0, 2.0))
    assert baseline[0, 2, 2] == pytest.approx(1.0) and baseline[0, 0, 2] == pytest.approx(np.exp(-2.0))


def test_calibration_error_of_bins_against_a_hand_count():
    confidence = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 1, 1, 0, 1, 0], bool)
    # two bins used: 4 voxels at 0.95 (75 % right), 2 at 0.55 (50 % right)
    expected = 4 / 6 * abs(0.75 - 0.95) + 2 / 6 * abs(0.5 - 0.55)
    assert expected_calibration_error(confidence, correct, bins=10) == pytest.approx(expected)


def test_the_map_is_on_the_inputs_grid_in_0_1_and_rises_where_the_boundary_is_blurred(trained_models):
    dataset, (good, _) = trained_models
    image, reference = held_out_image_and_reference(dataset, good)
    predictor = Predictor(good, device="cpu")
    sharp = predictor.predict(image, uncertainty="entropy")
    assert sharp.uncertainty.array.shape == image.spatial_shape and sharp.uncertainty.array.dtype == np.float32
    for attribute in ("spacing", "origin", "direction"):
        assert np.allclose(getattr(sharp.uncertainty, attribute), getattr(image, attribute))
    assert 0.0 <= sharp.uncertainty.array.min() and sharp.uncertainty.array.max() <= 1.0
    # Blur the image's right half: the uncertainty at the structures' boundary there goes up, the left's stays.
    blurred = image.array.copy()
    half = image.spatial_shape[-1] // 2
    blurred[..., half:] = ndimage.gaussian_filter(image.array, sigma=(0, 1.5, 3, 3) if image.has_channels else 3)[
        ..., half:
    ]
    unsure = predictor.predict(image.with_array(blurred), uncertainty="entropy").uncertainty.array
    band = ndimage.binary_dilation(boundary_voxels(reference), iterations=1)
    right, left = band.copy(), band.copy()
    right[..., :half], left[..., half:] = False, False
    assert unsure[right].mean() > 1.3 * sharp.uncertainty.array[right].mean()
    assert unsure[left].mean() == pytest.approx(sharp.uncertainty.array[left].mean(), abs=0.05)
    # And it points at the errors better than chance.
    scores = error_auroc(
        sharp.uncertainty.array, sharp.label_image.array, reference, image.spacing_array_order, within_mm=5
    )
    assert scores["near_structure_errors"] > 0 and scores["near_structure"] > 0.7


def test_segment_writes_the_map_with_either_method_and_refuses_what_cannot_be(trained_models, tmp_path):
    dataset, (good, _) = trained_models
    image, _ = held_out_image_and_reference(dataset, good)
    from AttentionSegLib.io.image import write_image

    source = write_image(image, tmp_path / "case.nii.gz")
    for method, flags in (("entropy", []), ("tta", ["--tta", "--uncertainty-method", "tta"])):
        out, unsure = tmp_path / f"{method}.nii.gz", tmp_path / f"{method}-unsure.nrrd"
        result = attentionseg("segment", source, "--model", good, "--out", out, "--uncertainty", unsure, *flags)
        assert result.returncode == 0, result.stderr
        written = read_image(unsure)
        assert written.array.shape == image.spatial_shape and np.allclose(written.spacing, image.spacing)
        assert 0 <= written.array.min() and written.array.max() <= 1 and written.array.max() > 0.1
    refused = attentionseg(
        "segment", source, "--model", good, "--out", tmp_path / "x.nii.gz", "--uncertainty",
        tmp_path / "u.nii.gz", "--uncertainty-method", "tta",
    )  # fmt: skip
    assert_bad_input(refused, "compares mirrored copies: give --tta")
    assert not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "u.nii.gz").exists()
    same = attentionseg("segment", source, "--model", good, "--out", out, "--uncertainty", out, "--overwrite")
    assert_bad_input(same, "two outputs name the same file")
