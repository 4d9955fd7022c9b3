"""Interactive click-to-segment through the Logic on real MRML (slicer-core): clicks in RAS on an
oblique, anisotropic volume, refinement of one segment only, undo, Segment Editor edits between
clicks, and the box prompt."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from AttentionSegLib.errors import AttentionSegError  # noqa: E402
from AttentionSegLib.interactive.robot import interior_point  # noqa: E402
from AttentionSegLib.slicer.click_logic import ClickLogic  # noqa: E402
from AttentionSegLib.slicer.mrml import (  # noqa: E402
    StandaloneScene,
    segmentation_node_from_label_image,
    volume_node_from_image,
)
from AttentionSegLib.slicer.segments import merge_into_segment, region_volume, segment_mask  # noqa: E402
from conftest import held_out_image_and_reference  # noqa: E402


@pytest.fixture
def interactive_scene(interactive_model):
    """A held-out case of the interactive model as a volume, and a segmentation holding a finished
    "spleen" segment from the reference (the segment clicks must never touch)."""
    dataset, summary = interactive_model
    image, reference = held_out_image_and_reference(dataset, summary["model_file"])
    wiring = StandaloneScene()
    volume = volume_node_from_image(wiring.scene, image, "phantom")
    spleen = image.with_array((reference == 2).astype(np.uint8) * 2)
    segmentation = segmentation_node_from_label_image(
        wiring.scene, spleen, {2: "spleen"}, name="work", reference_volume_node=volume
    )
    return wiring.scene, volume, segmentation, image, reference, summary["model_file"]


def ras_of(image, index) -> tuple[float, float, float]:
    """RAS (mm) of voxel ``index`` (array order k, j, i)."""
    k, j, i = index
    lps = image.index_to_physical() @ np.array([i, j, k, 1.0])
    return (-lps[0], -lps[1], lps[2])


def spleen_of(scene, segmentation, volume) -> np.ndarray:
    spleen_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("spleen")
    return segment_mask(scene, segmentation, spleen_id, volume)


def test_clicks_refine_one_segment_with_undo_and_keep_every_other_segment(interactive_scene):
    scene, volume, segmentation, image, reference, model = interactive_scene
    liver = reference == 1
    spleen_before = spleen_of(scene, segmentation, volume)
    assert spleen_before.any()
    logic = ClickLogic(scene)
    assert logic.is_interactive(model, "cpu")
    spacing = image.spacing_array_order
    first = interior_point(liver, spacing)
    segment_id = logic.click_to_segment(volume, model, ras_of(image, first), segmentation, device="cpu")
    segment = segmentation.GetSegmentation().GetSegment(segment_id)
    assert segment.GetName() == "object 1" and segment.GetLabelValue() == 3
    # The RAS point of voxel `first` on this oblique, 2 x 1 x 1 mm grid reached the session as that voxel.
    session = logic._sessions[(segmentation.GetID(), segment_id)].session
    assert session.prompts.positive == [tuple(int(v) for v in first)]
    after_one = segment_mask(scene, segmentation, segment_id, volume)
    assert np.array_equal(after_one, session.mask) and after_one[tuple(first)]
    dice_one = 2 * (after_one & liver).sum() / (after_one.sum() + liver.sum())
    assert dice_one > 0.5
    np.testing.assert_array_equal(spleen_of(scene, segmentation, volume), spleen_before)
    # A negative click on a voxel of the object: only this segment changes; undo restores it exactly.
    inside = tuple(int(v) for v in np.argwhere(after_one)[-1])
    logic.click_to_segment(volume, model, ras_of(image, inside), segmentation, segment_id, positive=False, device="cpu")
    np.testing.assert_array_equal(spleen_of(scene, segmentation, volume), spleen_before)
    assert logic.undo_click(segmentation, segment_id)
    np.testing.assert_array_equal(segment_mask(scene, segmentation, segment_id, volume), after_one)
    assert logic.undo_click(segmentation, segment_id)  # the first click too: the segment is empty again
    assert not segment_mask(scene, segmentation, segment_id, volume).any()
    assert not logic.undo_click(segmentation, segment_id)
    np.testing.assert_array_equal(spleen_of(scene, segmentation, volume), spleen_before)
    with pytest.raises(AttentionSegError, match="negative click needs"):
        logic.click_to_segment(volume, model, ras_of(image, first), segmentation, positive=False, device="cpu")


def test_an_edit_between_clicks_is_the_previous_mask_of_the_next(interactive_scene):
    scene, volume, segmentation, image, reference, model = interactive_scene
    logic = ClickLogic(scene)
    first = interior_point(reference == 1, image.spacing_array_order)
    segment_id = logic.click_to_segment(volume, model, ras_of(image, first), segmentation, device="cpu")
    # A Segment Editor-style edit: paint a block into the segment.
    edited = segment_mask(scene, segmentation, segment_id, volume)
    block = (slice(0, 2), slice(0, 3), slice(0, 3))
    edited[block] = True
    whole = tuple(slice(0, n) for n in edited.shape)
    region_node = region_volume(scene, volume, whole)
    replace = slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    merge_into_segment(segmentation, segment_id, edited, region_node, volume, replace)
    scene.RemoveNode(region_node)
    np.testing.assert_array_equal(segment_mask(scene, segmentation, segment_id, volume), edited)
    logic.click_to_segment(volume, model, ras_of(image, first), segmentation, segment_id, device="cpu")
    session = logic._sessions[(segmentation.GetID(), segment_id)].session
    assert session.prompts.positive == [tuple(int(v) for v in first)] * 2
    after = segment_mask(scene, segmentation, segment_id, volume)
    # The session took the edit as its mask; outside what the click's windows covered it stays.
    step_region = session._history[-1][0]
    outside = np.ones(after.shape, bool)
    outside[step_region] = False
    np.testing.assert_array_equal(after[outside], edited[outside])
    np.testing.assert_array_equal(after, session.mask)


def test_a_roi_box_makes_a_segment_and_automatic_models_refuse_boxes(interactive_scene, trained_models):
    scene, volume, segmentation, image, reference, model = interactive_scene
    logic = ClickLogic(scene)
    liver = reference == 1
    indices = np.argwhere(liver)
    corners = [ras_of(image, indices.min(axis=0)), ras_of(image, indices.max(axis=0))]
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    center = (np.asarray(corners[0]) + np.asarray(corners[1])) / 2
    roi.SetCenter(*center)
    roi.SetSize(*(np.abs(np.asarray(corners[1]) - np.asarray(corners[0])) + 4.0))
    segment_id = logic.box_to_segment(volume, model, roi, segmentation, device="cpu")
    mask = segment_mask(scene, segmentation, segment_id, volume)
    assert 2 * (mask & liver).sum() / (mask.sum() + liver.sum()) > 0.3
    again = logic.box_to_segment(volume, model, corners, segmentation, device="cpu")
    assert again != segment_id  # no segment id: a new object
    _, (automatic, _) = trained_models
    with pytest.raises(AttentionSegError, match="interactive model"):
        logic.box_to_segment(volume, automatic, corners, segmentation, device="cpu")
    assert not logic.is_interactive(automatic, "cpu")


def test_the_suggested_click_comes_back_in_ras_at_the_sessions_voxel(interactive_scene):
    scene, volume, segmentation, image, reference, model = interactive_scene
    logic = ClickLogic(scene)
    first = interior_point(reference == 1, image.spacing_array_order)
    segment_id = logic.click_to_segment(volume, model, ras_of(image, first), segmentation, device="cpu")
    session = logic._sessions[(segmentation.GetID(), segment_id)].session
    index, positive = session.suggest_click()
    ras, suggested_positive = logic.suggest_click(segmentation, segment_id)
    # On this oblique, anisotropic grid the RAS point is that voxel's centre.
    np.testing.assert_allclose(ras, ras_of(image, index), atol=1e-6)
    assert suggested_positive == positive
    assert logic.undo_click(segmentation, segment_id) and logic.suggest_click(segmentation, segment_id) is None
