"""Scribbles and lassos as voxels of the grid: strokes pass every voxel on their way, a lasso marks
the voxel centres inside it on its slice (checked against the polygon drawn by hand), and bad
strokes get one line."""

from __future__ import annotations

import numpy as np
import pytest

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.interactive.strokes import lasso_mask, stroke_voxels


def test_a_stroke_passes_every_voxel_on_its_way_in_order_once():
    voxels = stroke_voxels([(0, 0, 0), (0, 4, 4), (0, 4, 4), (2, 4, 4)], (3, 6, 6))
    assert voxels[:5] == [(0, k, k) for k in range(5)]
    assert voxels[-2:] == [(1, 4, 4), (2, 4, 4)] and len(voxels) == len(set(voxels)) == 7
    with pytest.raises(AttentionSegError, match="the scribble leaves the volume"):
        stroke_voxels([(0, 0, 0), (0, 9, 0)], (3, 6, 6))
    with pytest.raises(AttentionSegError, match="at least 1 point"):
        stroke_voxels([], (3, 6, 6))


def test_a_lasso_marks_the_voxel_centres_inside_it_on_its_slice():
    # A square on the slice i = 5 (axis 2), corners between voxel centres, drawn counter-clockwise
    # and clockwise: k 2..5, j 3..6 inside; the points may sit up to half a voxel off the slice.
    square = [(1.5, 2.5, 5.2), (5.5, 2.5, 4.9), (5.5, 6.5, 5.0), (1.5, 6.5, 5.1)]
    expected = np.zeros((8, 9, 10), dtype=bool)
    expected[2:6, 3:7, 5] = True
    np.testing.assert_array_equal(lasso_mask(square, expected.shape), expected)
    np.testing.assert_array_equal(lasso_mask(square[::-1], expected.shape), expected)
    # A triangle on a 2D grid: the centres under its hypotenuse.
    triangle = lasso_mask([(-0.5, -0.5), (-0.5, 4.5), (4.5, -0.5)], (5, 5))
    rows, columns = np.indices((5, 5))
    np.testing.assert_array_equal(triangle, rows + columns < 4)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([(2, 2, 5), (6, 6, 5), (2, 6, 5), (6, 2, 5)], "crosses itself"),
        ([(2, 2, 3), (6, 2, 5), (6, 6, 7), (2, 6, 5)], "not on one slice"),
        ([(2, 2, 5), (6, 2, 5)], "at least 3 point"),
        ([(2.1, 2.1, 5), (2.3, 2.1, 5), (2.2, 2.3, 5)], "holds no voxel"),
        ([(2, 2, 5), (20, 2, 5), (2, 6, 5)], "leaves the volume"),
    ],
)
def test_bad_lassos_get_one_line(points, message):
    with pytest.raises(AttentionSegError, match=message) as error:
        lasso_mask(points, (8, 9, 10))
    assert "\n" not in str(error.value)


class RecordingTool:
    """A tool that records the robot's prompts and answers with the reference itself."""

    def __init__(self, reference):
        self.reference, self.mask, self.calls = reference, np.zeros_like(reference), []

    def _answer(self):
        from AttentionSegLib.interactive.session import SessionStep

        self.mask = self.reference.copy()
        return SessionStep((), 0.0)

    def set_box(self, start, stop):
        self.calls.append(("box", tuple(start), tuple(stop)))
        return self._answer()

    def add_scribble(self, voxels, positive=True):
        self.calls.append(("scribble", [tuple(v) for v in voxels], positive))
        return self._answer()

    def add_click(self, index, positive=True):
        self.calls.append(("click", tuple(index), positive))
        return self._answer()


def test_the_robot_draws_a_2d_box_and_a_scribble_on_the_slice_across_the_coarsest_axis():
    from AttentionSegLib.evaluation.interactive import run_robot_user

    reference = np.zeros((12, 20, 20), dtype=bool)
    reference[3:9, 5:15, 6:12] = True  # slices 3-8 along the 3 mm axis
    spacing = (3.0, 1.0, 1.0)
    tool = RecordingTool(reference)
    result = run_robot_user(tool, reference, spacing, interactions=2, initial="box2d")
    (kind, start, stop), *_ = tool.calls
    # On a slice of the object across k (the 3 mm axis), its 10 x 6 box, 5 slices deep on each side
    # of that slice (10, its larger side), within the grid.
    assert kind == "box" and start[1:] == (5, 6) and stop[1:] == (15, 12)
    assert any((start[0], stop[0]) == (max(0, at - 5), min(12, at + 6)) for at in range(3, 9))
    assert result.interactions[0].kind == "box2d"
    tool = RecordingTool(reference)
    run_robot_user(tool, reference, spacing, interactions=1, initial="scribble")
    kind, voxels, positive = tool.calls[0]
    assert kind == "scribble" and positive and len({v[0] for v in voxels}) == 1 and len({v[1] for v in voxels}) == 1
    assert all(reference[v] for v in voxels) and [v[2] for v in voxels] == list(range(6, 12))
