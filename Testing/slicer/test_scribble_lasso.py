"""Scribbles and lassos through the Logic on real MRML (slicer-core), on the oblique, anisotropic
phantom grid: RAS points land on the voxels they were drawn on, a lasso cuts the object on its
slice to the contour, undo takes each back, and bad strokes change nothing."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from AttentionSegLib.errors import AttentionSegError  # noqa: E402
from AttentionSegLib.interactive.strokes import lasso_mask  # noqa: E402
from AttentionSegLib.regions import interior_point  # noqa: E402
from AttentionSegLib.slicer.click_logic import ClickLogic, _continuous_index  # noqa: E402
from AttentionSegLib.slicer.mrml import StandaloneScene, volume_node_from_image  # noqa: E402
from AttentionSegLib.slicer.segments import segment_mask  # noqa: E402
from conftest import held_out_image_and_reference  # noqa: E402


@pytest.fixture
def drawing(interactive_model):
    dataset, summary = interactive_model
    image, reference = held_out_image_and_reference(dataset, summary["model_file"])
    wiring = StandaloneScene()
    volume = volume_node_from_image(wiring.scene, image, "phantom")
    segmentation = wiring.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "work")
    segmentation.CreateDefaultDisplayNodes()
    return wiring.scene, volume, segmentation, image, reference, summary["model_file"]


def ras_of(image, index) -> tuple[float, float, float]:
    """RAS (mm) of a (continuous) voxel position, array order k, j, i."""
    k, j, i = index
    lps = image.index_to_physical() @ np.array([i, j, k, 1.0])
    return (-lps[0], -lps[1], lps[2])


def square_around(mask: np.ndarray, axis: int, at: int, margin: float = 1.5) -> list[tuple[float, ...]]:
    """The corners (voxel positions) of a square on slice ``at`` of ``axis`` around ``mask`` there."""
    in_plane = np.argwhere(np.take(mask, at, axis=axis))
    low, high = in_plane.min(axis=0) - margin, in_plane.max(axis=0) + margin
    corners = [(low[0], low[1]), (high[0], low[1]), (high[0], high[1]), (low[0], high[1])]
    return [tuple(np.insert(np.asarray(c, float), axis, at)) for c in corners]


def test_a_lasso_on_a_slice_of_an_oblique_grid_cuts_the_object_to_its_voxels(drawing):
    scene, volume, segmentation, image, reference, model = drawing
    liver = reference == 1
    centre = np.asarray(interior_point(liver, image.spacing_array_order))
    axis = 2  # a slice across i: on this oblique grid, not a patient plane
    contour = square_around(liver, axis, int(centre[axis]))
    inside = lasso_mask(contour, image.spatial_shape)  # drawn in voxels: what the RAS points must give
    from_ras = [_continuous_index(image, ras_of(image, p)) for p in contour]
    np.testing.assert_allclose(from_ras, contour, atol=1e-6)
    np.testing.assert_array_equal(lasso_mask(from_ras, image.spatial_shape), inside)
    logic = ClickLogic(scene)
    segment_id = logic.lasso_to_segment(volume, model, [ras_of(image, p) for p in contour], segmentation, device="cpu")
    state = logic._sessions[(segmentation.GetID(), segment_id)]
    result = segment_mask(scene, segmentation, segment_id, volume)
    on_slice = np.take(result, int(centre[axis]), axis=axis)
    assert on_slice.any() and not (on_slice & ~np.take(inside, int(centre[axis]), axis=axis)).any()
    assert inside[state.session.prompts.positive[0]]  # the prompt's click lies inside the contour
    assert (
        logic.undo_click(segmentation, segment_id) and not segment_mask(scene, segmentation, segment_id, volume).any()
    )


def test_a_scribble_adds_its_voxels_as_clicks_in_one_step(drawing):
    scene, volume, segmentation, image, reference, model = drawing
    liver = reference == 1
    centre = np.asarray(interior_point(liver, image.spacing_array_order))
    stroke = [tuple(centre + (0, -1, 0)), tuple(centre), tuple(centre + (0, 1, 0))]
    logic = ClickLogic(scene)
    segment_id = logic.scribble_to_segment(
        volume, model, [ras_of(image, p) for p in stroke], segmentation, device="cpu"
    )
    session = logic._sessions[(segmentation.GetID(), segment_id)].session
    assert session.prompts.positive == [tuple(int(v) for v in p) for p in stroke]  # RAS back to its voxels
    assert segment_mask(scene, segmentation, segment_id, volume).any()
    negative = [tuple(centre + (0, 0, -1)), tuple(centre + (0, 0, 1))]
    logic.scribble_to_segment(volume, model, [ras_of(image, p) for p in negative], segmentation, segment_id,
                              positive=False, device="cpu")  # fmt: skip
    assert len(session.prompts.negative) == 3  # the stroke's voxels, one undo step
    assert logic.undo_click(segmentation, segment_id) and session.prompts.negative == []


def test_bad_strokes_and_boxes_get_one_line_and_change_nothing(drawing):
    scene, volume, segmentation, image, reference, model = drawing
    centre = np.asarray(interior_point(reference == 1, image.spacing_array_order))
    logic = ClickLogic(scene)
    segment_id = logic.scribble_to_segment(volume, model, [ras_of(image, centre)], segmentation, device="cpu")
    before = segment_mask(scene, segmentation, segment_id, volume)
    k, j, i = (float(v) for v in centre)
    bow_tie = [(k - 2, j - 2, i), (k + 2, j + 2, i), (k - 2, j + 2, i), (k + 2, j - 2, i)]
    outside = [(k, j, i), (k, j + 500, i)]
    for call, message in (
        (
            lambda: logic.lasso_to_segment(
                volume, model, [ras_of(image, p) for p in bow_tie], segmentation, segment_id, device="cpu"
            ),
            "crosses itself",
        ),  # fmt: skip
        (
            lambda: logic.scribble_to_segment(
                volume, model, [ras_of(image, p) for p in outside], segmentation, segment_id, device="cpu"
            ),
            "leaves the volume",
        ),  # fmt: skip
        (
            lambda: logic.scribble_to_segment(
                volume, model, [ras_of(image, centre)], segmentation, positive=False, device="cpu"
            ),
            "needs the segment",
        ),  # fmt: skip
        (
            lambda: logic.box_to_segment(
                volume, model, (ras_of(image, centre), ras_of(image, centre)), segmentation, segment_id, device="cpu"
            ),
            "empty",
        ),  # fmt: skip
    ):
        with pytest.raises(AttentionSegError, match=message) as error:
            call()
        assert "\n" not in str(error.value)
    np.testing.assert_array_equal(segment_mask(scene, segmentation, segment_id, volume), before)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1


def test_markups_curves_are_scribbles_and_lassos_along_their_curve(drawing):
    scene, volume, segmentation, image, reference, model = drawing
    liver = reference == 1
    centre = np.asarray(interior_point(liver, image.spacing_array_order))
    closed = scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode", "lasso")
    closed.SetCurveTypeToLinear()  # on this small grid a spline through the corners leaves the volume
    for corner in square_around(liver, 2, int(centre[2])):
        closed.AddControlPoint(ras_of(image, corner))
    logic = ClickLogic(scene)
    segment_id = logic.lasso_to_segment(volume, model, closed, segmentation, device="cpu")
    curve = closed.GetCurvePointsWorld()
    along = [_continuous_index(image, curve.GetPoint(i)) for i in range(curve.GetNumberOfPoints())]
    inside = np.take(lasso_mask(along, image.spatial_shape), int(centre[2]), axis=2)
    on_slice = np.take(segment_mask(scene, segmentation, segment_id, volume), int(centre[2]), axis=2)
    assert on_slice.any() and not (on_slice & ~inside).any()
    open_curve = scene.AddNewNodeByClass("vtkMRMLMarkupsCurveNode", "scribble")
    with pytest.raises(AttentionSegError, match="has no points"):
        logic.scribble_to_segment(volume, model, open_curve, segmentation, segment_id, device="cpu")
    open_curve.AddControlPoint(ras_of(image, centre + (0, -1, 0)))
    open_curve.AddControlPoint(ras_of(image, centre + (0, 1, 0)))
    assert logic.scribble_to_segment(volume, model, open_curve, segmentation, segment_id, device="cpu") == segment_id
