"""Click-to-segment.

Locked segments never change, and an object takes voxels of other segments only under the
``"overwrite"`` overlap policy (:mod:`~AttentionSegLib.slicer.segment_overlap`); an undo puts back
every segment its prompt changed.

With an interactive model, every click (and a box) goes to the object's
:class:`~AttentionSegLib.interactive.session.InteractiveSession`: a click without a segment id starts
a new segment, a click with one refines it, reading the segment back as the previous mask each
time (so Segment Editor edits in between are built on), and only the region the network changed
is written back into that segment; ``undo_click`` restores the segment as it was before the last
prompt. With an automatic model, one window of the model around a clicked point adds the structure
under it to a segment, or a negative click removes the part of the segment under it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import slicer

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.interactive.component_click import component_at
from AttentionSegLib.interactive.session import InteractiveSession
from AttentionSegLib.interactive.strokes import lasso_mask, stroke_voxels
from AttentionSegLib.io.image import Image
from AttentionSegLib.slicer.mrml import remove_nodes
from AttentionSegLib.slicer.predictor_cache import PredictorCache
from AttentionSegLib.slicer.segment_overlap import (
    OVERLAP_NEVER,
    OVERLAP_OVERWRITE,
    TakenVoxels,
    give_back,
    protected_voxels,
    require_unlocked,
    take_from_others,
)
from AttentionSegLib.slicer.segments import (
    add_segment,
    merge_into_segment,
    region_volume,
    replace_segment_in_box,
    segment_is_empty,
    segment_mask,
)
from AttentionSegLib.slicer.volumes import model_inputs

if TYPE_CHECKING:
    from AttentionSegLib.inference.model_file import ModelFile
    from AttentionSegLib.inference.predictor import Predictor

__all__ = ["ClickLogic"]


class ClickLogic:
    """Adds or removes one structure per click.

    Args:
        scene: the MRML scene.
        predictors: the predictor cache (shared with the other logics of the module); default a new one.
        overlap: what an interactive object may take from the other segments
            (:mod:`~AttentionSegLib.slicer.segment_overlap`): ``"never"`` (default) or
            ``"overwrite"``; locked segments never change either way.
    """

    def __init__(self, scene, predictors: PredictorCache | None = None, overlap: str = OVERLAP_NEVER) -> None:
        self.scene = scene
        self.predictors = predictors or PredictorCache()
        self.overlap = overlap
        # (segmentation node id, segment id) -> the object's interactive session
        self._sessions: dict[tuple[str, str], _SegmentSession] = {}

    def click_to_segment(
        self,
        volume_nodes,
        model_file: str | Path,
        point_ras,
        segmentation_node,
        segment_id: str | None = None,
        positive: bool = True,
        device: str = "auto",
    ) -> str:
        """One click at ``point_ras`` (mm, RAS).

        Interactive model: the click refines the segment ``segment_id`` (its present content is the
        previous mask), or starts a new segment when none is given; only that segment changes,
        except under the "overwrite" policy, where unlocked segments give it their voxels.

        Automatic model: the model runs on one window centred on the point. Positive: the
        connected structure of the clicked label under the point (or the nearest one in the
        window) is added to the segment. Negative: the connected part of the segment under the
        point is removed. The segment is ``segment_id``, else the segment named after
        the clicked label (created, with the model's name and colour, when missing). Returns the
        segment id.

        Raises:
            AttentionSegError: the point is outside the volume, the model finds nothing around it
                (automatic, positive), the point is not in the segment (automatic, negative), or a
                negative click starts no segment (interactive).
        """
        _require_segmentation(segmentation_node)
        predictor = self.predictors.get(model_file, device)
        if predictor.model_file.is_interactive:
            return self._prompt(volume_nodes, predictor, segmentation_node, segment_id, click=(point_ras, positive))
        nodes, images, inputs = model_inputs(volume_nodes, predictor.model_file.image_dims)
        center = _array_index(images[0], point_ras)
        window_labels, region = _window(predictor, inputs, center, with_labels=positive or segment_id is None)
        local = tuple(int(c - r.start) for c, r in zip(center, region))
        value = _clicked_label(predictor.model_file, segmentation_node, segment_id, window_labels, local, positive)
        if value == 0 and positive:
            value = _nearest_label(window_labels, local, np.asarray(images[0].spacing_array_order))
        if value == 0 and positive:
            raise AttentionSegError("the model finds no structure in the window around this point")
        if segment_id is None:
            segment_id = _segment_of_label(segmentation_node, predictor.model_file, value)
        require_unlocked(segmentation_node, segment_id)
        # Only the window's region of the segment is read and rewritten: the cost of a click does
        # not grow with the volume (a 512x512x300 mask would take seconds to export).
        region_node = region_volume(self.scene, nodes[0], region)
        try:
            if positive:
                self._add_structure(segmentation_node, segment_id, window_labels == value, local, region_node, nodes[0])
            else:
                self._remove_structure(segmentation_node, segment_id, local, region_node, nodes[0])
        finally:
            remove_nodes(self.scene, region_node)
        return segment_id

    def box_to_segment(
        self,
        volume_nodes,
        model_file: str | Path,
        box,
        segmentation_node,
        segment_id: str | None = None,
        device: str = "auto",
    ) -> str:
        """A box prompt (interactive models): ``box`` is a markups ROI node or two opposite corners
        (mm, RAS); the object inside it becomes a new segment, or refines ``segment_id``. Returns
        the segment id.

        Raises:
            AttentionSegError: an automatic model, or a box outside the volume.
        """
        return self._interactive(volume_nodes, model_file, segmentation_node, segment_id, device, box=box)

    def scribble_to_segment(
        self, volume_nodes, model_file, points_ras, segmentation_node, segment_id=None, positive=True, device="auto"
    ) -> str:
        """A scribble (interactive models): a stroke through ``points_ras`` (mm, RAS; or a markups
        curve node, along its curve), every voxel
        it passes a positive (or negative) click, in one undo step; starts an object or refines
        ``segment_id``. Returns the segment id.

        Raises:
            AttentionSegError: an automatic model, no point, a point outside the volume, or a
                negative scribble that starts no segment.
        """
        return self._interactive(volume_nodes, model_file, segmentation_node, segment_id, device,
                                 scribble=(points_ras, positive))  # fmt: skip

    def lasso_to_segment(
        self, volume_nodes, model_file, contour_ras, segmentation_node, segment_id=None, device="auto"
    ):
        """A lasso (interactive models): a closed contour through ``contour_ras`` (mm, RAS; or a
        markups closed curve node, along its curve) on one
        slice of the volume; on that slice the object lies inside it. Starts an object or refines
        ``segment_id``; returns the segment id.

        Raises:
            AttentionSegError: an automatic model, fewer than three points, points off one slice
                or outside the volume, a contour that crosses itself or holds no voxel.
        """
        return self._interactive(volume_nodes, model_file, segmentation_node, segment_id, device,
                                 lasso=contour_ras)  # fmt: skip

    def _interactive(self, volume_nodes, model_file, segmentation_node, segment_id, device, **prompt) -> str:
        _require_segmentation(segmentation_node)
        predictor = self.predictors.get(model_file, device)
        if not predictor.model_file.is_interactive:
            kind = {"box": "box prompts", "scribble": "scribbles", "lasso": "lassos"}[next(iter(prompt))]
            raise AttentionSegError(f"{predictor.source}: {kind} need an interactive model")
        return self._prompt(volume_nodes, predictor, segmentation_node, segment_id, **prompt)

    def undo_click(self, segmentation_node, segment_id: str) -> bool:
        """Put the segment back as it was before its last interactive click or box; False when
        there is nothing to undo (no session, or every step undone)."""
        state = self._sessions.get((segmentation_node.GetID(), segment_id))
        if state is None or not state.session.can_undo:
            return False
        require_unlocked(segmentation_node, segment_id)  # locked since the prompt: it stays
        step = state.session.undo()
        self._write_region(segmentation_node, segment_id, state, step.region)
        box, records = state.taken.pop() if state.taken else (None, [])
        give_back(self.scene, segmentation_node, records, box, state.volume_node)  # what it took from others
        return True

    def can_undo(self, segmentation_node, segment_id: str) -> bool:
        """Whether the segment has an interactive prompt that :meth:`undo_click` can take back."""
        state = self._sessions.get((segmentation_node.GetID(), segment_id))
        return state is not None and state.session.can_undo

    def suggest_click(self, segmentation_node, segment_id: str) -> tuple[tuple[float, float, float], bool] | None:
        """``(RAS point, positive)``: where the network was least sure of the segment's object in
        its last prompt (:meth:`InteractiveSession.suggest_click`), and whether a click there
        adds or removes; None without an interactive prompt on the segment since its last undo."""
        from AttentionSegLib.evaluation.consensus import ras_of_index
        from AttentionSegLib.slicer.mrml import image_from_volume_node

        state = self._sessions.get((segmentation_node.GetID(), segment_id))
        suggestion = state.session.suggest_click() if state is not None else None
        if suggestion is None:
            return None
        index, positive = suggestion
        index = (0, *index) if state.two_d else index
        return tuple(ras_of_index(image_from_volume_node(state.volume_node), index)), positive

    def forget_sessions(self) -> None:
        """Drop every object's click history (a new case: node ids of the old one may come back)."""
        self._sessions.clear()

    def is_interactive(self, model_file: str | Path, device: str = "auto") -> bool:
        """Whether the model takes clicks as input (else the window-and-component click)."""
        return self.predictors.get(model_file, device).model_file.is_interactive

    def _prompt(
        self, volume_nodes, predictor, segmentation_node, segment_id, click=None, box=None, scribble=None, lasso=None
    ) -> str:
        """One interactive prompt on the segment: a click (``(point_ras, positive)``), a box (a
        markups ROI node or corners, RAS), a scribble (``(points_ras or a curve node, positive)``)
        or a lasso (contour points, RAS, or a closed curve node)."""
        nodes, images, inputs = model_inputs(volume_nodes, predictor.model_file.image_dims)
        two_d = inputs[0].spatial_dims == 2
        model_index = (lambda index: tuple(index[1:])) if two_d else (lambda index: tuple(index))
        grid = images[0].spatial_shape
        if box is not None:
            corners = np.asarray([_array_index(images[0], corner, clip=True) for corner in _box_corners_ras(box)])
            start, stop = model_index(corners.min(axis=0)), model_index(corners.max(axis=0) + 1)
        elif click is not None:
            index = model_index(_array_index(images[0], click[0]))
        elif scribble is not None:
            points = [_continuous_index(images[0], point) for point in _stroke_points_ras(scribble[0])]
            voxels = [model_index(voxel) for voxel in stroke_voxels(points, grid)]
        else:
            inside = lasso_mask([_continuous_index(images[0], point) for point in _stroke_points_ras(lasso)], grid)
            inside = inside[0] if two_d else inside
        negative = (click is not None and not click[1]) or (scribble is not None and not scribble[1])
        if segment_id is None:
            if negative:
                kind = "click" if click is not None else "scribble"
                raise AttentionSegError(f"a negative {kind} needs the segment to correct; choose a segment")
            segment_id = _new_object_segment(segmentation_node, predictor.model_file)
        elif segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
            raise AttentionSegError(f"segmentation {segmentation_node.GetName()!r} has no segment {segment_id!r}")
        else:
            require_unlocked(segmentation_node, segment_id)
        state = self._session(segmentation_node, segment_id, predictor, nodes, inputs)
        present = segment_mask(self.scene, segmentation_node, segment_id, nodes[0])
        state.session.set_mask(present[0] if two_d else present)
        if box is not None:
            step = state.session.set_box(start, stop)
        elif click is not None:
            step = state.session.add_click(index, click[1])
        elif scribble is not None:
            step = state.session.add_scribble(voxels, scribble[1])
        else:
            step = state.session.add_lasso(inside)
        box3 = (slice(0, 1), *step.region) if two_d else tuple(step.region)
        region_node = region_volume(self.scene, nodes[0], box3)
        try:
            # The object leaves out what it may not take (before it is written: the session's
            # mask stays what the segment holds, the previous mask of the next prompt).
            protected = protected_voxels(self.scene, segmentation_node, segment_id, region_node, self.overlap)
            state.session.mask[step.region] &= ~(protected[0] if two_d else protected)
            self._write_region(segmentation_node, segment_id, state, step.region, present)
            records: list[TakenVoxels] = []
            if self.overlap == OVERLAP_OVERWRITE:
                written = state.session.mask[step.region]
                records = take_from_others(
                    self.scene, segmentation_node, segment_id, written[None] if two_d else written, box3,
                    region_node, nodes[0],
                )  # fmt: skip
            state.taken.append((box3, records))
            del state.taken[: -state.session.max_undo]
        finally:
            remove_nodes(self.scene, region_node)
        return segment_id

    def _session(self, segmentation_node, segment_id, predictor, nodes, inputs) -> _SegmentSession:
        """The object's session, new when the model or the volumes changed."""
        key = (segmentation_node.GetID(), segment_id)
        volumes = tuple(node.GetID() for node in nodes)
        state = self._sessions.get(key)
        if state is None or state.predictor is not predictor or state.volumes != volumes:
            session = InteractiveSession.for_predictor(predictor, inputs)
            state = self._sessions[key] = _SegmentSession(
                session, predictor, volumes, nodes[0], len(inputs[0].spatial_shape) == 2
            )
        return state

    def _write_region(self, segmentation_node, segment_id, state: _SegmentSession, region, present=None) -> None:
        """Rewrite the segment inside ``region`` (the session's grid) with the session's mask;
        outside it the segment, and every other segment, stay as they are
        (:func:`~AttentionSegLib.slicer.segments.replace_segment_in_box`). ``present``: the segment
        as just read back (read there when None)."""
        region3 = (slice(0, 1), *region) if state.two_d else tuple(region)
        mask = state.session.mask[region][None] if state.two_d else state.session.mask[region]
        replace_segment_in_box(self.scene, segmentation_node, segment_id, mask, region3, state.volume_node, present)

    def _add_structure(self, segmentation_node, segment_id, label_mask, local, region_node, volume_node) -> None:
        """Merge (maximum) the connected part of ``label_mask`` at ``local`` (or nearest to it)
        inside the window: the segment outside it is kept as it is."""
        spacing = tuple(reversed(volume_node.GetSpacing()))  # array order
        structure = component_at(label_mask, local, spacing)  # under the point, or nearest to it
        # An automatic click has no undo: it never takes voxels another segment holds.
        structure &= ~protected_voxels(self.scene, segmentation_node, segment_id, region_node, OVERLAP_NEVER)
        # An empty segment has no labelmap extent to merge into: it is set instead.
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        mode = logic.MODE_REPLACE if segment_is_empty(segmentation_node, segment_id) else logic.MODE_MERGE_MAX
        merge_into_segment(segmentation_node, segment_id, structure, region_node, volume_node, mode)

    def _remove_structure(self, segmentation_node, segment_id, local, region_node, volume_node) -> None:
        """Merge (minimum) with "everything but the clicked part": removes only that part."""
        from scipy import ndimage

        components, _ = ndimage.label(segment_mask(self.scene, segmentation_node, segment_id, region_node))
        under = components[local]
        if under == 0:
            raise AttentionSegError("the point is not inside the segment; nothing to remove")
        mode = slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MIN
        merge_into_segment(segmentation_node, segment_id, components != under, region_node, volume_node, mode)


def _stroke_points_ras(points) -> list[tuple[float, float, float]]:
    """RAS points of a stroke: the points given, or a markups curve node's curve (world
    coordinates, interpolated between its control points as Slicer draws it)."""
    if hasattr(points, "GetCurvePointsWorld"):
        curve = points.GetCurvePointsWorld()
        if curve is None or curve.GetNumberOfPoints() == 0:
            raise AttentionSegError(f"the curve {points.GetName()!r} has no points; place some first")
        return [tuple(curve.GetPoint(i)) for i in range(curve.GetNumberOfPoints())]
    return [tuple(float(v) for v in point) for point in points]


def _continuous_index(volume_image: Image, point_ras) -> np.ndarray:
    """The continuous voxel position (array order k, j, i) of ``point_ras`` (mm, RAS)."""
    lps = np.array([-point_ras[0], -point_ras[1], point_ras[2], 1.0])
    return np.linalg.solve(volume_image.index_to_physical(), lps)[:3][::-1]


def _array_index(volume_image: Image, point_ras, clip: bool = False) -> np.ndarray:
    """The voxel (array order k, j, i) nearest to ``point_ras`` (mm, RAS); with ``clip``, the
    nearest voxel inside the volume.

    Raises:
        AttentionSegError: the point is outside the volume (without ``clip``).
    """
    center = np.round(_continuous_index(volume_image, point_ras)).astype(int)
    shape = np.asarray(volume_image.spatial_shape)
    if clip:
        return np.clip(center, 0, shape - 1)
    if np.any(center < 0) or np.any(center >= shape):
        raise AttentionSegError(f"the point {tuple(round(v, 1) for v in point_ras)} (RAS mm) is outside the volume")
    return center


@dataclass
class _SegmentSession:
    """An object's interactive session and what it was made for."""

    session: InteractiveSession
    predictor: object
    volumes: tuple[str, ...]
    volume_node: object
    two_d: bool
    # Per prompt, aligned with the session's undo history: (region box on the volume grid, what
    # the prompt took from other segments there).
    taken: list[tuple[tuple[slice, ...], list[TakenVoxels]]] = field(default_factory=list)


def _box_corners_ras(box) -> list[tuple[float, float, float]]:
    """The eight corners (RAS mm) of a markups ROI node, or the two corners given. A box with no
    extent along two axes or more (a point or a line: a click, not a drag) is refused; one flat
    along one axis is a box drawn on a slice."""
    if hasattr(box, "GetRASBounds"):
        bounds = [0.0] * 6
        box.GetRASBounds(bounds)
        if bounds[1] < bounds[0]:
            raise AttentionSegError(f"the ROI {box.GetName()!r} is empty")
        low, high = bounds[0::2], bounds[1::2]
    else:
        corners = [tuple(float(v) for v in corner) for corner in box]
        if len(corners) != 2 or any(len(corner) != 3 for corner in corners):
            raise AttentionSegError("a box is a markups ROI node or two opposite corners (R, A, S)")
        low, high = np.minimum(*corners), np.maximum(*corners)
    if sum(float(b - a) < 1e-6 for a, b in zip(low, high)) >= 2:
        raise AttentionSegError("the box is empty (no size along two axes or more); drag it open")
    return [(r, a, s) for r in (low[0], high[0]) for a in (low[1], high[1]) for s in (low[2], high[2])]


def _require_segmentation(segmentation_node) -> None:
    if segmentation_node is None:
        raise AttentionSegError("choose the segmentation the clicks go into")


def _new_object_segment(segmentation_node, model_file: ModelFile) -> str:
    """A new empty segment for an interactively segmented object: "object N", the next free label
    value, a colour of the model's labels in turn."""
    segmentation = segmentation_node.GetSegmentation()
    values = [int(segmentation.GetNthSegment(i).GetLabelValue()) for i in range(segmentation.GetNumberOfSegments())]
    value = max([0, *values]) + 1
    number = 1
    while segmentation.GetSegmentIdBySegmentName(f"object {number}"):
        number += 1
    colors = list(model_file.interactive.get("object_labels", [])) or [{"color": (1.0, 0.8, 0.2)}]
    color = colors[(number - 1) % len(colors)].get("color") or (1.0, 0.8, 0.2)
    return add_segment(segmentation_node, f"object {number}", value, tuple(color))


def _window(predictor: Predictor, inputs: list[Image], center: np.ndarray, with_labels: bool):
    """``(window labels or None, region)`` of the model's window around ``center``, both on the
    volume's 3D grid. Without labels only the window's extent is computed (the model does not run):
    removing from a known segment needs no prediction."""
    two_d = inputs[0].spatial_dims == 2
    model_center = center[1:] if two_d else center
    if with_labels:
        window_labels, region = predictor.predict_window(inputs, model_center)
    else:
        region = predictor.window_region(predictor.stack_channels(inputs), model_center)
        window_labels = None
    if two_d:
        window_labels = window_labels[None] if window_labels is not None else None
        region = (slice(0, 1), *region)
    return window_labels, region


def _clicked_label(
    model_file: ModelFile, segmentation_node, segment_id, window_labels, local, positive: bool
) -> int | None:
    """The label value the click is about: the given segment's (by the model's label names, else
    its own value), else the model's label at the point (0: none there)."""
    if segment_id is not None:
        segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
        if segment is None:
            raise AttentionSegError(f"segmentation {segmentation_node.GetName()!r} has no segment {segment_id!r}")
        by_name = {name: value for value, name in model_file.label_names.items()}
        value = by_name.get(segment.GetName()) or int(segment.GetLabelValue()) or None
        if value is not None or window_labels is None:
            return value
    return int(window_labels[local])


def _segment_of_label(segmentation_node, model_file: ModelFile, value: int) -> str:
    """The id of the segment named after the model's label ``value``, added when missing."""
    name = model_file.label_names.get(value, f"label {value}")
    segment_id = segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(name)
    return segment_id or add_segment(
        segmentation_node, name, value, model_file.label_colors.get(value), model_file.label_terminology.get(value)
    )


def _nearest_label(labels: np.ndarray, point: tuple[int, ...], spacing: np.ndarray) -> int:
    """The label of the foreground voxel nearest to ``point`` (mm distance), or 0."""
    from scipy import ndimage

    if not labels.any():
        return 0
    _, indices = ndimage.distance_transform_edt(labels == 0, sampling=spacing, return_indices=True)
    return int(labels[tuple(indices[(slice(None), *point)])])
