"""Locked segments and the overlap policy of interactive prompts on real MRML (slicer-core): a
locked segment stays bit-identical through every prompt and undo; under "never" an object leaves
other segments' voxels to them; under "overwrite" it takes them and undo gives them back."""

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
from AttentionSegLib.slicer.segment_overlap import (  # noqa: E402
    OVERLAP_OVERWRITE,
    segment_is_locked,
    set_segment_locked,
)
from AttentionSegLib.slicer.segments import segment_mask  # noqa: E402
from conftest import held_out_image_and_reference  # noqa: E402


@pytest.fixture
def finished(interactive_model):
    """A held-out case and a segmentation holding its reference liver and spleen as finished
    segments: clicks on the liver make an object that lies on them."""
    dataset, summary = interactive_model
    image, reference = held_out_image_and_reference(dataset, summary["model_file"])
    wiring = StandaloneScene()
    volume = volume_node_from_image(wiring.scene, image, "phantom")
    segmentation = segmentation_node_from_label_image(
        wiring.scene, image.with_array(reference.astype(np.uint8)), {1: "liver", 2: "spleen"}, name="work",
        reference_volume_node=volume,
    )  # fmt: skip
    liver = interior_point(reference == 1, image.spacing_array_order)
    return wiring.scene, volume, segmentation, image, liver, summary["model_file"]


def ras_of(image, index) -> tuple[float, float, float]:
    k, j, i = index
    lps = image.index_to_physical() @ np.array([i, j, k, 1.0])
    return (-lps[0], -lps[1], lps[2])


def masks(scene, segmentation, volume) -> dict[str, np.ndarray]:
    nodes = segmentation.GetSegmentation()
    ids = [nodes.GetNthSegmentID(i) for i in range(nodes.GetNumberOfSegments())]
    return {nodes.GetSegment(i).GetName(): segment_mask(scene, segmentation, i, volume) for i in ids}


def test_a_locked_segment_is_bit_identical_through_prompts_and_undo_and_refuses_them(finished):
    scene, volume, segmentation, image, liver, model = finished
    liver_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("liver")
    set_segment_locked(segmentation, liver_id)
    assert segment_is_locked(segmentation, liver_id)
    logic = ClickLogic(scene, overlap=OVERLAP_OVERWRITE)  # even where objects may overwrite
    before = masks(scene, segmentation, volume)
    point = ras_of(image, liver)
    segment_id = logic.click_to_segment(volume, model, point, segmentation, device="cpu")
    logic.box_to_segment(volume, model, (ras_of(image, (0, 0, 0)), ras_of(image, image.spatial_shape)),
                         segmentation, segment_id, device="cpu")  # fmt: skip
    np.testing.assert_array_equal(masks(scene, segmentation, volume)["liver"], before["liver"])
    assert logic.undo_click(segmentation, segment_id) and logic.undo_click(segmentation, segment_id)
    after = masks(scene, segmentation, volume)
    np.testing.assert_array_equal(after["liver"], before["liver"])
    np.testing.assert_array_equal(after["spleen"], before["spleen"])
    with pytest.raises(AttentionSegError, match="segment 'liver' is locked"):
        logic.click_to_segment(volume, model, point, segmentation, liver_id, device="cpu")
    # An object locked after its prompt: its undo is refused, and the object stays as it is.
    again = logic.click_to_segment(volume, model, point, segmentation, device="cpu")
    object_before = segment_mask(scene, segmentation, again, volume)
    set_segment_locked(segmentation, again)
    with pytest.raises(AttentionSegError, match="is locked"):
        logic.undo_click(segmentation, again)
    np.testing.assert_array_equal(segment_mask(scene, segmentation, again, volume), object_before)
    np.testing.assert_array_equal(masks(scene, segmentation, volume)["liver"], before["liver"])
    set_segment_locked(segmentation, liver_id, False)
    assert not segment_is_locked(segmentation, liver_id)


def test_never_leaves_other_segments_whole_and_overwrite_takes_then_undo_gives_back(finished):
    scene, volume, segmentation, image, liver, model = finished
    before = masks(scene, segmentation, volume)
    point = ras_of(image, liver)
    never = ClickLogic(scene)
    first = never.click_to_segment(volume, model, point, segmentation, device="cpu")
    after = masks(scene, segmentation, volume)
    assert not (after["object 1"] & (before["liver"] | before["spleen"])).any()
    np.testing.assert_array_equal(after["liver"], before["liver"])
    np.testing.assert_array_equal(after["spleen"], before["spleen"])
    assert never.undo_click(segmentation, first) and not masks(scene, segmentation, volume)["object 1"].any()

    overwrite = ClickLogic(scene, overlap=OVERLAP_OVERWRITE)
    second = overwrite.click_to_segment(volume, model, point, segmentation, device="cpu")
    taken = masks(scene, segmentation, volume)
    obj = taken[segmentation.GetSegmentation().GetSegment(second).GetName()]
    assert (obj & before["liver"]).any()  # the object took liver voxels ...
    for name in ("liver", "spleen"):  # ... which the liver (and spleen) no longer hold, and nothing else changed
        np.testing.assert_array_equal(taken[name], before[name] & ~obj)
    assert overwrite.undo_click(segmentation, second)
    restored = masks(scene, segmentation, volume)
    for name in ("liver", "spleen"):
        np.testing.assert_array_equal(restored[name], before[name])


def test_show_in_3d_gives_every_segment_a_surface_the_3d_views_display(finished):
    from AttentionSegLib.slicer.segments import show_in_3d

    scene, volume, segmentation, *_ = finished
    show_in_3d(segmentation)
    surface = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    display = segmentation.GetDisplayNode()
    assert display.GetPreferredDisplayRepresentationName3D() == surface and display.GetVisibility3D()
    nodes = segmentation.GetSegmentation()
    for index in range(nodes.GetNumberOfSegments()):
        polydata = nodes.GetNthSegment(index).GetRepresentation(surface)
        assert polydata is not None and polydata.GetNumberOfPoints() > 0
