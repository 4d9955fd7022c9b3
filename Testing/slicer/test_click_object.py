"""The object being clicked (:class:`ClickObject`, the one rule both front ends follow) on real
MRML: which segment the next prompt refines, and each event that starts a new object."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from AttentionSegLib.interactive.robot import interior_point  # noqa: E402
from AttentionSegLib.slicer.click_logic import ClickLogic  # noqa: E402
from AttentionSegLib.slicer.click_object import ClickObject  # noqa: E402
from AttentionSegLib.slicer.mrml import StandaloneScene, volume_node_from_image  # noqa: E402
from AttentionSegLib.slicer.segments import segment_mask, segment_voxel_counts  # noqa: E402
from conftest import held_out_image_and_reference  # noqa: E402


@pytest.fixture
def clicking(interactive_model, trained_models, tmp_path):
    """A held-out case as a volume, an empty segmentation, the interactive model (also under a
    second file name: another model as far as the rule goes) and the automatic one."""
    dataset, summary = interactive_model
    _, (automatic, _) = trained_models
    image, reference = held_out_image_and_reference(dataset, summary["model_file"])
    wiring = StandaloneScene()
    volume = volume_node_from_image(wiring.scene, image, "phantom")
    segmentation = wiring.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "work")
    segmentation.CreateDefaultDisplayNodes()
    other = tmp_path / "other.pt"
    other.write_bytes(open(summary["model_file"], "rb").read())
    point = ras_of(image, interior_point(reference == 1, image.spacing_array_order))
    return wiring.scene, volume, segmentation, summary["model_file"], other, automatic, point


def ras_of(image, index) -> tuple[float, float, float]:
    k, j, i = index
    lps = image.index_to_physical() @ np.array([i, j, k, 1.0])
    return (-lps[0], -lps[1], lps[2])


def test_clicks_refine_the_current_object_until_a_new_one_is_asked_for(clicking):
    scene, volume, segmentation, model, _, _, point = clicking
    clicks = ClickObject(ClickLogic(scene))
    assert clicks.segment_id is None and not clicks.can_undo and not clicks.undo()
    first = clicks.click(volume, model, point, segmentation, device="cpu")
    assert clicks.segment_id == first and clicks.segmentation is segmentation and clicks.can_undo
    assert clicks.click(volume, model, point, segmentation, positive=False, device="cpu") == first
    assert clicks.undo() and clicks.segment_id == first
    clicks.new_object()
    assert clicks.segment_id is None and not clicks.undo()
    second = clicks.click(volume, model, point, segmentation, device="cpu")
    names = [segmentation.GetSegmentation().GetSegment(s).GetName() for s in (first, second)]
    assert names == ["object 1", "object 2"]


def test_a_new_model_segmentation_or_case_or_a_deleted_segment_starts_a_new_object(clicking):
    scene, volume, segmentation, model, other, _, point = clicking
    clicks = ClickObject(ClickLogic(scene))
    first = clicks.click(volume, model, point, segmentation, device="cpu")
    # Another model file: a new object, even on the same point.
    by_other = clicks.click(volume, other, point, segmentation, device="cpu")
    assert by_other != first and clicks.segment_id == by_other
    # Another segmentation: the object starts there.
    elsewhere = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "elsewhere")
    elsewhere.CreateDefaultDisplayNodes()
    there = clicks.click(volume, other, point, elsewhere, device="cpu")
    assert clicks.segmentation is elsewhere and elsewhere.GetSegmentation().GetSegment(there) is not None
    # The object's segment deleted in the Segment Editor: no current object any more.
    elsewhere.GetSegmentation().RemoveSegment(there)
    assert clicks.segment_id is None and not clicks.undo()
    # A new case forgets the object and every object's history.
    clicks.click(volume, model, point, segmentation, device="cpu")
    clicks.forget()
    assert clicks.segment_id is None and not clicks.click_logic.can_undo(segmentation, first)


def test_an_automatic_click_has_no_object_and_keeps_other_segments(clicking):
    """An automatic model's click adds the structure in the segment of its label: no current object,
    so the next interactive click starts one; that object leaves the structure's voxels to it (the
    default overlap policy), and every segment is counted whole."""
    scene, volume, segmentation, model, _, automatic, point = clicking
    clicks = ClickObject(ClickLogic(scene))
    structure = clicks.click(volume, automatic, point, segmentation, device="cpu")
    name = segmentation.GetSegmentation().GetSegment(structure).GetName()
    assert name in ("liver", "spleen") and clicks.segment_id is None
    structure_before = segment_mask(scene, segmentation, structure, volume)
    object_id = clicks.click(volume, model, point, segmentation, device="cpu")
    assert object_id != structure and clicks.segment_id == object_id
    np.testing.assert_array_equal(segment_mask(scene, segmentation, structure, volume), structure_before)
    object_mask = segment_mask(scene, segmentation, object_id, volume)
    assert object_mask.any() and not (object_mask & structure_before).any()
    assert segment_voxel_counts(segmentation) == {name: int(structure_before.sum()), "object 1": int(object_mask.sum())}
