"""Consensus and error maps on phantoms where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from AttentionSegLib.evaluation.consensus import (
    ERROR_KINDS,
    agreement_counts,
    agreement_level,
    disagreement_regions,
    error_map,
    error_masks,
    majority_vote,
    ras_of_index,
    staple,
)
from AttentionSegLib.io.image import Image


def three_models():
    """Two models agree on a cube; the third adds a slab and misses a corner."""
    shape = (20, 24, 28)
    agreed = np.zeros(shape, np.uint8)
    agreed[5:15, 6:18, 8:20] = 1
    agreed[2:4, 2:5, 2:6] = 2
    third = agreed.copy()
    third[5:15, 18:22, 8:20] = 1  # a leak
    third[5:8, 6:9, 8:11] = 0  # a miss
    return [agreed, agreed.copy(), third]


def test_majority_vote_and_staple_follow_the_two_that_agree():
    maps = three_models()
    np.testing.assert_array_equal(majority_vote(maps), maps[0])
    np.testing.assert_array_equal(staple(maps), maps[0])
    counts = agreement_counts(maps, [1, 2])
    assert counts[1][10, 10, 10] == 3 and counts[1][10, 20, 10] == 1 and counts[1][6, 7, 9] == 2
    assert counts[2].max() == 3 and counts[1].dtype == np.uint8


def test_the_agreement_level_counts_the_models_behind_the_majority():
    maps = three_models()
    level = agreement_level(maps)
    assert level[10, 10, 10] == 3  # all three: liver
    assert level[6, 7, 9] == 2  # the third model missed it
    assert level[10, 20, 10] == 1  # only the third model's leak (the majority says background)
    assert level[0, 0, 0] == 0


def test_error_segments_partition_prediction_xor_reference():
    reference, _, prediction = three_models()
    for label, masks in error_masks(prediction, reference, [1, 2]).items():
        fp, fn = masks["false_positive"], masks["false_negative"]
        assert not (fp & fn).any()
        np.testing.assert_array_equal(fp | fn, (prediction == label) ^ (reference == label))
    codes = error_map(prediction, reference, 1)
    assert ERROR_KINDS[1][0] == "false positive" and ERROR_KINDS[2][0] == "false negative"
    np.testing.assert_array_equal(codes == 1, (prediction == 1) & (reference != 1))
    np.testing.assert_array_equal(codes == 2, (reference == 1) & (prediction != 1))
    masks = error_masks(prediction, reference, [1])[1]
    assert masks["false_positive"].sum() == 10 * 4 * 12 and masks["false_negative"].sum() == 27


def test_disagreement_regions_are_ranked_and_their_centres_lie_inside_on_an_oblique_grid():
    maps = three_models()
    spacing = (2.0, 1.0, 0.5)
    regions = disagreement_regions(maps, spacing)
    assert [r["voxels"] for r in regions] == [480, 27]
    assert regions[0]["volume_ml"] == pytest.approx(480 * 1.0 / 1000)
    angle = np.deg2rad(25)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    image = Image(maps[0].astype(np.float32), spacing=spacing[::-1], origin=(10.0, -5.0, 3.0), direction=direction)
    for region in regions:
        index = region["index"]
        assert maps[2][index] != maps[0][index]  # inside the region
        ras = ras_of_index(image, index)
        # Back from RAS to the index with the inverse geometry: the same voxel.
        lps = np.array([-ras[0], -ras[1], ras[2], 1.0])
        ijk = np.linalg.inv(image.index_to_physical()) @ lps
        assert tuple(np.round(ijk[:3][::-1]).astype(int)) == index
