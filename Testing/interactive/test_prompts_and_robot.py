"""Prompt encoding (balls in mm, box, previous mask) and the simulated user's clicks, in 2D and 3D,
on hand-made masks whose answers are known."""

import numpy as np
import pytest

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.interactive.prompts import (
    PROMPT_CHANNELS,
    ObjectPrompts,
    PromptEncoding,
    default_click_radius_mm,
    draw_balls,
    encode_prompts,
)
from AttentionSegLib.interactive.robot import (
    bounding_box,
    interior_point,
    largest_error_region,
    next_click,
    random_interior_point,
)


def test_a_click_is_a_ball_of_the_same_size_in_mm_on_an_anisotropic_grid():
    spacing = (3.0, 1.0, 0.5)  # mm per array axis
    ball = draw_balls((21, 41, 61), spacing, [(10, 20, 30)], radius_mm=3.0)
    indices = np.argwhere(ball)
    extent_mm = (indices.max(axis=0) - indices.min(axis=0)) * np.asarray(spacing)
    assert np.allclose(extent_mm, 6.0)  # 3 mm either side along every axis
    assert ball[10, 20, 30] and not ball[10, 20, 30 + 7] and ball[10, 20, 30 + 6]
    # Every voxel of the ball is within the radius, in mm.
    assert np.all(np.sqrt((((indices - (10, 20, 30)) * spacing) ** 2).sum(axis=1)) <= 3.0)
    # A coarse axis still marks the click's own voxel; a point outside draws the part inside.
    assert draw_balls((5, 5), (10.0, 10.0), [(2, 2)], 1.0).sum() == 1
    assert draw_balls((5, 5), (1.0, 1.0), [(-1, 2)], 1.5).sum() == 3  # (0, 1..3): within 1.5 px


def test_prompt_channels_hold_clicks_mask_and_box_in_order():
    previous = np.zeros((8, 10), dtype=bool)
    previous[2:4, 2:4] = True
    prompts = ObjectPrompts(positive=[(1, 1)], negative=[(6, 8)], box=((5, 0), (7, 3)), previous_mask=previous)
    channels = encode_prompts((8, 10), (1.0, 1.0), prompts, PromptEncoding(1.0))
    assert channels.shape == (len(PROMPT_CHANNELS), 8, 10) and channels.dtype == np.float32
    assert channels[0, 1, 1] == 1 and channels[0].sum() == 5  # a 1 mm ball on a 1 mm grid: 5 pixels
    assert channels[1, 6, 8] == 1 and channels[1, 1, 1] == 0
    assert np.array_equal(channels[2], previous)
    assert channels[3].sum() == 2 * 3 and channels[3, 5:7, 0:3].all()
    with pytest.raises(AttentionSegError, match="previous mask"):
        encode_prompts((8, 11), (1.0, 1.0), prompts, PromptEncoding(1.0))


def test_prompt_encoding_round_trips_and_refuses_bad_values():
    encoding = PromptEncoding(2.5)
    assert PromptEncoding.from_dict(encoding.to_dict()) == encoding
    with pytest.raises(AttentionSegError, match="radius"):
        PromptEncoding(0)
    with pytest.raises(AttentionSegError, match="prompt channels"):
        PromptEncoding(1.0, ("positive_clicks",))
    assert default_click_radius_mm((1.0, 1.0, 1.0)) == 2.0 and default_click_radius_mm((0.2, 0.2)) == 1.0


def test_the_first_click_is_the_interior_most_voxel_in_mm():
    mask = np.zeros((9, 30), dtype=bool)
    mask[1:8, 2:9] = True  # a 7x7 square: centre (4, 5)
    mask[0:9, 15:28] = True  # touches the array's edges, which count as border: 5 px deep at row 4
    # Deepest: row 4, columns 19-23 (5 px from rows -1 and 9 and from columns 14 and 28); first one.
    assert interior_point(mask, (1.0, 1.0)) == (4, 19)
    square = np.zeros((9, 9), dtype=bool)
    square[1:8, 1:8] = True
    assert interior_point(square, (1.0, 1.0)) == (4, 4)
    # Anisotropic: along a 3 mm axis the border is nearer in voxels.
    slab = np.zeros((7, 21, 21), dtype=bool)
    slab[1:6, 3:18, 3:18] = True
    assert interior_point(slab, (3.0, 1.0, 1.0)) == (3, 10, 10)
    assert interior_point(np.zeros((4, 4), dtype=bool), (1.0, 1.0)) is None


def test_the_next_click_lands_in_the_largest_error_with_its_sign_2d_and_3d():
    reference = np.zeros((20, 20), dtype=bool)
    reference[2:18, 2:10] = True
    prediction = reference.copy()
    prediction[2:18, 2:6] = False  # missed: 16x4 = 64 pixels
    prediction[5:8, 14:17] = True  # leak: 9 pixels
    click = next_click(prediction, reference, (1.0, 1.0))
    assert click.positive and reference[click.index] and not prediction[click.index]
    assert 2 <= click.index[1] <= 5
    prediction[2:18, 2:6] = True  # fixed: now only the leak is left
    click = next_click(prediction, reference, (1.0, 1.0))
    assert not click.positive and click.index == (6, 15)
    assert next_click(reference, reference, (1.0, 1.0)) is None
    # 3D: a diagonal chain of missed voxels is one region under 26-connectivity.
    reference3 = np.zeros((6, 6, 6), dtype=bool)
    for i in range(5):
        reference3[i, i, i] = True
    region, positive = largest_error_region(np.zeros_like(reference3), reference3)
    assert positive and region.sum() == 5


def test_random_interior_points_stay_inside_and_boxes_are_exclusive():
    mask = np.zeros((12, 12, 12), dtype=bool)
    mask[2:10, 3:9, 4:8] = True
    rng = np.random.default_rng(0)
    points = {random_interior_point(mask, (1.0, 1.0, 1.0), rng) for _ in range(50)}
    assert all(mask[p] for p in points) and len(points) > 1
    assert bounding_box(mask) == ((2, 3, 4), (10, 9, 8))
    assert bounding_box(np.zeros((3, 3), dtype=bool)) is None
