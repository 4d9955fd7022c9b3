"""Segments of segmentation nodes: label values, masks on a grid, merges into a segment, new
segments with a model's name and colour, and small label map grids on part of a volume."""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.interactive.robot import bounding_box
from AttentionSegLib.io.image import Image
from AttentionSegLib.io.terminology import slicer_terminology_entry
from AttentionSegLib.slicer.mrml import has_voxels, remove_nodes, segmentation_node_from_label_image

__all__ = [
    "add_segment",
    "merge_into_segment",
    "oriented_mask",
    "region_volume",
    "replace_segment_in_box",
    "segment_is_empty",
    "segment_label_values",
    "segment_mask",
    "segment_voxel_count",
    "segment_voxel_counts",
    "segmentation_node_for_model",
    "show_in_3d",
]


def segment_label_values(segmentation_node) -> dict[str, int]:
    """Segment name -> label value: the value kept since import, else the segment's position (1, 2, ...).

    Raises:
        AttentionSegError: two segments share a name.
    """
    segmentation = segmentation_node.GetSegmentation()
    values: dict[str, int] = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        if segment.GetName() in values:
            raise AttentionSegError(
                f"segmentation {segmentation_node.GetName()!r} has two segments named {segment.GetName()!r}"
            )
        values[segment.GetName()] = int(segment.GetLabelValue()) or index + 1
    return values


def segmentation_node_for_model(scene, label_image: Image, model_file, name: str, reference_volume_node):
    """A segmentation node from a model's label image: one segment per label of the
    :class:`~AttentionSegLib.inference.model_file.ModelFile`, with its name, colour and coded
    terminology, referring to ``reference_volume_node``'s grid."""
    return segmentation_node_from_label_image(
        scene,
        label_image,
        model_file.label_names,
        model_file.label_colors,
        name=name,
        reference_volume_node=reference_volume_node,
        terminology=model_file.label_terminology,
    )


def add_segment(
    segmentation_node, name: str, value: int, color: tuple[float, ...] | None = None, terminology=None
) -> str:
    """Add an empty segment (name, label value, colour and terminology when given); returns its id."""
    segment = slicer.vtkSegment()
    segment.SetName(name)
    segment.SetLabelValue(value)
    if color:
        segment.SetColor(*color)
    if terminology is not None:
        segment.SetTerminology(slicer_terminology_entry(terminology))
    segmentation = segmentation_node.GetSegmentation()
    segmentation.AddSegment(segment)
    return segmentation.GetSegmentIdBySegmentName(name)


def show_in_3d(segmentation_node) -> None:
    """Show the segments as surfaces in 3D views: the closed surface representation (kept up to
    date by MRML with every change) made the one 3D views display."""
    segmentation_node.CreateClosedSurfaceRepresentation()
    display = segmentation_node.GetDisplayNode()
    if display is None:
        segmentation_node.CreateDefaultDisplayNodes()
        display = segmentation_node.GetDisplayNode()
    display.SetPreferredDisplayRepresentationName3D(
        slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    )
    display.SetVisibility3D(True)


def segment_is_empty(segmentation_node, segment_id: str) -> bool:
    """Whether the segment has no voxel (its labelmap layer holds no voxel of its value)."""
    return segment_voxel_count(segmentation_node, segment_id) == 0


def segment_voxel_count(segmentation_node, segment_id: str) -> int:
    """The segment's voxels, counted in its own labelmap layer: segments that overlap sit in
    layers of their own, so each is counted whole (a label map of the segmentation would give
    an overlap to one segment only). No export, so a click's count does not grow with the volume."""
    from vtk.util import numpy_support

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    labelmap = segment.GetRepresentation(name)
    if labelmap is None or labelmap.GetPointData().GetScalars() is None:
        return 0
    extent = labelmap.GetExtent()
    if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
        return 0
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
    return int(np.count_nonzero(values == segment.GetLabelValue()))


def segment_voxel_counts(segmentation_node) -> dict[str, int]:
    """Segment name -> its voxels (:func:`segment_voxel_count`), in the segmentation's order."""
    segmentation = segmentation_node.GetSegmentation()
    counts = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        counts[segmentation.GetSegment(segment_id).GetName()] = segment_voxel_count(segmentation_node, segment_id)
    return counts


def segment_mask(scene, segmentation_node, segment_id: str, grid_node) -> np.ndarray:
    """The segment as a boolean array (array order k, j, i) on the grid of ``grid_node``."""
    colors_before = _color_table_ids(scene)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "segment export")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, grid_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        )
        if not has_voxels(labelmap):  # an empty segment exports no image
            return np.zeros(slicer.util.arrayFromVolume(grid_node).shape[:3], dtype=bool)
        return np.array(slicer.util.arrayFromVolume(labelmap)) > 0
    finally:
        # The export makes a colour table for the label map: it goes too, or every call leaves one.
        added = [scene.GetNodeByID(i) for i in _color_table_ids(scene) - colors_before]
        remove_nodes(scene, labelmap, *added)


def _color_table_ids(scene) -> set[str]:
    nodes = scene.GetNodesByClass("vtkMRMLColorTableNode")
    return {nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())}


def oriented_mask(mask: np.ndarray, volume_node):
    """A vtkOrientedImageData holding ``mask`` (array order k, j, i) on the volume's grid."""
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    flat[:] = mask.astype(np.uint8).ravel()
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    return image


def merge_into_segment(segmentation_node, segment_id: str, mask: np.ndarray, grid_node, volume_node, mode) -> None:
    """Merge ``mask`` (on the grid of ``grid_node``) into the segment with ``mode`` (MRML's
    MODE_MERGE_MAX adds, MODE_MERGE_MIN keeps only where the mask is set, MODE_REPLACE sets the
    whole segment); outside the grid a merge leaves the segment untouched. A segmentation without
    reference geometry takes ``volume_node``'s.

    Raises:
        AttentionSegError: MRML refused the update.
    """
    image = oriented_mask(mask, grid_node)
    geometry_name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    if not segmentation_node.GetSegmentation().GetConversionParameter(geometry_name):
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, segmentation_node, segment_id, mode, image.GetExtent()
    )
    if not ok:
        raise AttentionSegError(f"could not update segment {segment_id!r}")


def replace_segment_in_box(
    scene, segmentation_node, segment_id: str, mask: np.ndarray, box: tuple[slice, ...], volume_node, whole=None
) -> None:
    """Set the segment to ``mask`` inside ``box`` (array order, on ``volume_node``'s grid); outside
    it the segment stays. ``whole``: the segment on that grid as just read (read here when None).

    The whole segment is replaced over the box holding both its voxels and ``box``: merging
    (minimum, then maximum) into a labelmap layer shared with other segments can change or lose
    their voxels there, while a replacement moves the segment to a layer of its own where it
    overlaps.
    """
    updated = (segment_mask(scene, segmentation_node, segment_id, volume_node) if whole is None else whole).copy()
    updated[box] = mask
    covered = updated.copy()
    covered[box] = True
    extent = tuple(slice(a, b) for a, b in zip(*bounding_box(covered)))
    extent_node = region_volume(scene, volume_node, extent)
    try:
        replace = slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
        merge_into_segment(segmentation_node, segment_id, updated[extent], extent_node, volume_node, replace)
    finally:
        remove_nodes(scene, extent_node)


def region_volume(scene, volume_node, region: tuple[slice, ...], name: str = "click window"):
    """A zero label map node on the sub-grid ``region`` (array order) of ``volume_node``; the
    caller removes it when done."""
    to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(to_ras)
    start = [region[2].start, region[1].start, region[0].start]  # i, j, k
    first_voxel = to_ras.MultiplyPoint((*start, 1.0))
    for row in range(3):
        to_ras.SetElement(row, 3, first_voxel[row])
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    node.SetIJKToRASMatrix(to_ras)
    image = vtk.vtkImageData()
    image.SetDimensions(*(r.stop - r.start for r in reversed(region)))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.GetPointData().GetScalars().Fill(0)
    node.SetAndObserveImageData(image)
    return node
