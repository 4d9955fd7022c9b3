"""Metrics equal MONAI's and a brute-force computation written from the definitions."""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from AttentionSegLib.data.phantoms import ellipsoid_label_map, perturbed_label_map
from AttentionSegLib.evaluation.metrics import compute_label_metrics, evaluate_label_maps, label_surfaces, summarize


def monai_metrics(prediction, reference, spacing, values, tolerance_mm=1.0):
    """MONAI 1.6's numbers for each value, from one-hot tensors."""
    from monai.metrics import (
        DiceMetric,
        HausdorffDistanceMetric,
        compute_average_surface_distance,
        compute_surface_dice,
    )
    from monai.networks.utils import one_hot

    lookup = np.zeros(max(values) + 1, dtype=np.int64)
    lookup[values] = np.arange(1, len(values) + 1)
    n = len(values) + 1
    p = one_hot(torch.from_numpy(lookup[prediction])[None, None], n)
    r = one_hot(torch.from_numpy(lookup[reference])[None, None], n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": DiceMetric(include_background=False, reduction="none")(p, r)[0].numpy(),
            "hd95_mm": HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
                p, r, spacing=spacing
            )[0].numpy(),
            "hd_max_mm": HausdorffDistanceMetric(include_background=False, reduction="none")(p, r, spacing=spacing)[
                0
            ].numpy(),
            "assd_mm": compute_average_surface_distance(
                p, r, include_background=False, symmetric=True, spacing=spacing
            )[0].numpy(),
            "nsd": compute_surface_dice(p, r, [tolerance_mm] * (n - 1), include_background=False, spacing=spacing)[
                0
            ].numpy(),
        }


def brute_force(prediction_mask, reference_mask, spacing, tolerance_mm):
    """Surfaces by scipy erosion, all pairwise distances: the definitions, written the slow way."""
    surface_p = prediction_mask & ~ndimage.binary_erosion(prediction_mask)
    surface_r = reference_mask & ~ndimage.binary_erosion(reference_mask)
    points_p = np.argwhere(surface_p) * np.asarray(spacing)
    points_r = np.argwhere(surface_r) * np.asarray(spacing)
    pairwise = cdist(points_p, points_r)
    d_pr, d_rp = pairwise.min(axis=1), pairwise.min(axis=0)
    both = np.concatenate([d_pr, d_rp])
    return {
        "hd95_mm": max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)),
        "hd_max_mm": both.max(),
        "assd_mm": both.mean(),
        "nsd": np.mean(both <= tolerance_mm),
        "dice": 2 * np.sum(prediction_mask & reference_mask) / (prediction_mask.sum() + reference_mask.sum()),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_monai_on_anisotropic_multilabel_volumes(seed):
    spacing = (3.0, 0.8, 0.6)
    reference = ellipsoid_label_map((20, 40, 44), 6, seed=seed, spacing_mm=spacing)
    prediction = perturbed_label_map(reference, seed=seed + 10, max_shift_mm=4.0, spacing_mm=spacing)
    rows = compute_label_metrics(prediction, reference, spacing)
    values = [row["value"] for row in rows]
    expected = monai_metrics(prediction, reference, spacing, values)
    compared = 0
    for i, row in enumerate(rows):
        if row["present_in"] != "both":
            continue
        compared += 1
        assert row["dice"] == pytest.approx(float(expected["dice"][i]), abs=1e-6)
        for key in ("hd95_mm", "hd_max_mm", "assd_mm"):
            assert row[key] == pytest.approx(float(expected[key][i]), abs=1e-3), (row["value"], key)
        assert row["nsd"] == pytest.approx(float(expected["nsd"][i]), abs=1e-6)
    assert compared >= 4


def test_equal_to_monai_in_2d():
    spacing = (0.5, 0.3)
    reference = ellipsoid_label_map((120, 150), 4, seed=4, spacing_mm=spacing)
    prediction = perturbed_label_map(reference, seed=5, max_shift_mm=2.0, spacing_mm=spacing)
    rows = compute_label_metrics(prediction, reference, spacing)
    expected = monai_metrics(prediction, reference, spacing, [row["value"] for row in rows])
    for i, row in enumerate(rows):
        assert row["present_in"] == "both"
        assert row["dice"] == pytest.approx(float(expected["dice"][i]), abs=1e-6)
        assert row["hd95_mm"] == pytest.approx(float(expected["hd95_mm"][i]), abs=1e-3)


def test_equal_to_brute_force_definitions(anisotropic_pair):
    prediction, reference, spacing = anisotropic_pair
    tolerance = 1.5
    for row in compute_label_metrics(prediction, reference, spacing, nsd_tolerance_mm=tolerance):
        if row["present_in"] != "both":
            continue
        expected = brute_force(prediction == row["value"], reference == row["value"], spacing, tolerance)
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, abs=1e-9), (row["value"], key)


def test_far_apart_masks_use_exact_distances():
    """Surfaces farther apart than the neighbour search go to the k-d tree; still exact."""
    reference = np.zeros((10, 60, 60), np.uint8)
    prediction = np.zeros_like(reference)
    reference[3:7, 5:15, 5:15] = 1
    prediction[3:7, 40:52, 38:50] = 1
    spacing = (2.0, 0.5, 0.7)
    row = compute_label_metrics(prediction, reference, spacing)[0]
    expected = brute_force(prediction == 1, reference == 1, spacing, 1.0)
    for key in ("hd95_mm", "hd_max_mm", "assd_mm"):
        assert row[key] == pytest.approx(expected[key], abs=1e-9)
    assert row["dice"] == 0.0


def test_label_surfaces_equal_erosion_definition(anisotropic_pair):
    _, reference, _ = anisotropic_pair
    surfaces = label_surfaces(reference)
    expected = np.zeros_like(surfaces)
    for value in np.unique(reference[reference > 0]):
        mask = reference == value
        expected |= mask & ~ndimage.binary_erosion(mask)
    np.testing.assert_array_equal(surfaces, expected)


def test_identical_maps_are_perfect():
    reference = ellipsoid_label_map((16, 30, 30), 3, seed=2)
    for row in compute_label_metrics(reference, reference.copy(), (1.0, 1.0, 1.0)):
        assert row["dice"] == 1.0 and row["iou"] == 1.0 and row["nsd"] == 1.0
        assert row["hd95_mm"] == 0.0 and row["hd_max_mm"] == 0.0 and row["assd_mm"] == 0.0
        assert row["ref_ml"] == row["pred_ml"] == pytest.approx(np.sum(reference == row["value"]) / 1000.0)


def test_volumes_are_in_millilitres():
    reference = np.zeros((10, 10, 10), np.uint8)
    reference[:5, :4, :2] = 3  # 40 voxels of 2 x 1.5 x 0.5 mm = 60 mm^3 = 0.06 mL
    row = compute_label_metrics(reference, reference, (2.0, 1.5, 0.5))[0]
    assert row["value"] == 3
    assert row["ref_ml"] == pytest.approx(0.06)


def test_missing_labels_follow_documented_conventions():
    reference = np.zeros((8, 8, 8), np.uint8)
    prediction = np.zeros_like(reference)
    reference[1:4, 1:4, 1:4] = 1  # missed by the prediction
    prediction[5:7, 5:7, 5:7] = 2  # false positive
    reference[4:6, 1:3, 1:3] = 3
    prediction[4:6, 1:3, 1:3] = 3
    report = evaluate_label_maps(prediction, reference, (1, 1, 1), labels={1: "a", 2: "b", 3: "c", 4: "d"})
    rows = {row["value"]: row for row in report["labels"]}
    assert rows[1]["present_in"] == "reference" and rows[1]["dice"] == 0.0 and rows[1]["sensitivity"] == 0.0
    assert math.isnan(rows[1]["precision"]) and math.isinf(rows[1]["hd95_mm"]) and rows[1]["nsd"] == 0.0
    assert rows[2]["present_in"] == "prediction" and rows[2]["dice"] == 0.0 and rows[2]["precision"] == 0.0
    assert math.isnan(rows[2]["sensitivity"]) and math.isinf(rows[2]["assd_mm"])
    assert rows[4]["present_in"] == "neither" and math.isnan(rows[4]["dice"]) and math.isnan(rows[4]["hd95_mm"])
    # Means: labels in neither map are left out; distances average labels present in both maps.
    assert report["n_labels_averaged"] == 3
    assert report["mean"]["dice"] == pytest.approx((0.0 + 0.0 + 1.0) / 3)
    assert report["n_averaged"]["hd95_mm"] == 1 and report["mean"]["hd95_mm"] == 0.0
    assert report["n_infinite"]["hd95_mm"] == 2
    assert report["n_averaged"]["precision"] == 2 and report["n_averaged"]["sensitivity"] == 2


def test_summary_of_nothing_is_nan_not_zero():
    summary = summarize([])
    assert summary["n_labels_averaged"] == 0 and math.isnan(summary["mean"]["dice"])


def test_large_label_values_are_renumbered_transparently():
    reference = np.zeros((6, 6, 6), np.int64)
    reference[1:3, 1:3, 1:3] = 5_000_000
    prediction = reference.copy()
    prediction[1, 1, 1] = 0
    rows = compute_label_metrics(prediction, reference, (1, 1, 1))
    assert [row["value"] for row in rows] == [5_000_000]
    assert rows[0]["dice"] == pytest.approx(2 * 7 / 15)


@pytest.mark.parametrize(
    "prediction, reference, spacing, message",
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), (1, 1), "shape"),
        (np.zeros((4, 4)), np.zeros((4, 4)), (1, 1, 1), "spacing"),
        (np.zeros((4, 4)), np.zeros((4, 4)), (1, 0), "spacing"),
        (np.full((4, 4), 0.5), np.zeros((4, 4)), (1, 1), "integer"),
        (np.full((4, 4), -1), np.zeros((4, 4)), (1, 1), "negative"),
    ],
)
def test_bad_arguments_raise_value_error(prediction, reference, spacing, message):
    with pytest.raises(ValueError, match=message):
        compute_label_metrics(prediction, reference, spacing)
