"""Click-to-segment: one window of the model around a clicked point adds the structure under it to
a segment, or a negative click removes the part of the segment under it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import slicer

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.io.image import Image
from AttentionSegLib.slicer.mrml import remove_nodes
from AttentionSegLib.slicer.predictor_cache import PredictorCache
from AttentionSegLib.slicer.segments import (
    add_segment,
    merge_into_segment,
    region_volume,
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
    """

    def __init__(self, scene, predictors: PredictorCache | None = None) -> None:
        self.scene = scene
        self.predictors = predictors or PredictorCache()

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
        """One click: the model runs on one window centred on ``point_ras`` (mm, RAS).

        Positive: the connected structure of the clicked label under the point (or the nearest
        one in the window) is added to the segment. Negative: the connected part of the segment
        under the point is removed. The segment is ``segment_id``, else the segment named after
        the clicked label (created, with the model's name and colour, when missing). Returns the
        segment id.

        Raises:
            AttentionSegError: the point is outside the volume, the model finds nothing around it
                (positive), or the point is not in the segment (negative).
        """
        predictor = self.predictors.get(model_file, device)
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

    def _add_structure(self, segmentation_node, segment_id, label_mask, local, region_node, volume_node) -> None:
        """Merge (maximum) the connected part of ``label_mask`` at ``local`` (or nearest to it)
        inside the window: the segment outside it is kept as it is."""
        from scipy import ndimage

        components, _ = ndimage.label(label_mask)
        under = components[local]
        if under == 0:  # the point is just outside: take the nearest component
            nearest = ndimage.distance_transform_edt(components == 0, return_indices=True)[1]
            under = components[tuple(nearest[(slice(None), *local)])]
        # An empty segment has no labelmap extent to merge into: it is set instead.
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        mode = logic.MODE_REPLACE if segment_is_empty(segmentation_node, segment_id) else logic.MODE_MERGE_MAX
        merge_into_segment(segmentation_node, segment_id, components == under, region_node, volume_node, mode)

    def _remove_structure(self, segmentation_node, segment_id, local, region_node, volume_node) -> None:
        """Merge (minimum) with "everything but the clicked part": removes only that part."""
        from scipy import ndimage

        components, _ = ndimage.label(segment_mask(self.scene, segmentation_node, segment_id, region_node))
        under = components[local]
        if under == 0:
            raise AttentionSegError("the point is not inside the segment; nothing to remove")
        mode = slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MIN
        merge_into_segment(segmentation_node, segment_id, components != under, region_node, volume_node, mode)


def _array_index(volume_image: Image, point_ras) -> np.ndarray:
    """The voxel (array order k, j, i) nearest to ``point_ras`` (mm, RAS).

    Raises:
        AttentionSegError: the point is outside the volume.
    """
    lps = np.array([-point_ras[0], -point_ras[1], point_ras[2], 1.0])
    ijk = np.linalg.solve(volume_image.index_to_physical(), lps)[:3]
    center = np.round(ijk[::-1]).astype(int)
    if np.any(center < 0) or np.any(center >= np.asarray(volume_image.spatial_shape)):
        raise AttentionSegError(f"the point {tuple(round(v, 1) for v in point_ras)} (RAS mm) is outside the volume")
    return center


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
    return segment_id or add_segment(segmentation_node, name, value, model_file.label_colors.get(value))


def _nearest_label(labels: np.ndarray, point: tuple[int, ...], spacing: np.ndarray) -> int:
    """The label of the foreground voxel nearest to ``point`` (mm distance), or 0."""
    from scipy import ndimage

    if not labels.any():
        return 0
    _, indices = ndimage.distance_transform_edt(labels == 0, sampling=spacing, return_indices=True)
    return int(labels[tuple(indices[(slice(None), *point)])])
