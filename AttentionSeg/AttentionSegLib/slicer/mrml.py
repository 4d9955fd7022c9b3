"""MRML glue: images with geometry <-> volume, segmentation and table nodes.

Part of the ``slicer`` package, the only one of the engine that imports ``slicer``, ``vtk`` or
``qt``. It works inside the Slicer application and with the ``slicer-core`` package (real MRML
without the desktop app), which the tests use.

Coordinates: the engine keeps geometry in LPS (ITK, DICOM, files); MRML nodes are in RAS. The
conversion flips the first two axes of the origin and of each direction vector. Array order is
the same on both sides: ``(k, j, i)`` (``slicer.util.arrayFromVolume``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.evaluation.report import METRIC_COLUMNS
from AttentionSegLib.io.image import Image
from AttentionSegLib.io.terminology import slicer_terminology_entry

__all__ = [
    "StandaloneScene",
    "image_from_volume_node",
    "volume_node_from_image",
    "segmentation_node_from_label_image",
    "label_image_from_segmentation_node",
    "table_node_from_metrics",
    "reference_geometry_volume",
    "remove_nodes",
    "has_voxels",
]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class StandaloneScene:
    """An MRML scene wired the way the Slicer application wires it, for scripts and tests.

    The logics are kept here on purpose: the application logic holds them weakly, and a
    collected colour logic removes the default colour nodes from the scene.
    """

    scene: object = field(default_factory=lambda: slicer.vtkMRMLScene())

    def __post_init__(self) -> None:
        self.application_logic = slicer.vtkSlicerApplicationLogic()
        self.application_logic.SetMRMLScene(self.scene)
        self.color_logic = self.application_logic.GetColorLogic()
        self.color_logic.SetMRMLScene(self.scene)
        self.color_logic.AddDefaultColorNodes()
        self.application_logic.SetModuleLogic("Colors", self.color_logic)
        self.segmentations_logic = slicer.vtkSlicerSegmentationsModuleLogic()
        self.segmentations_logic.SetMRMLScene(self.scene)  # registers the representation converters
        self.volumes_logic = slicer.vtkSlicerVolumesLogic()
        self.volumes_logic.SetMRMLScene(self.scene)
        self.volumes_logic.SetMRMLApplicationLogic(self.application_logic)


def remove_nodes(scene, *nodes) -> None:
    """Remove nodes with their display and storage nodes (MRML leaves those behind otherwise)."""
    for node in nodes:
        if node is None or node.GetScene() is None:
            continue
        helpers = []
        for kind in ("Display", "Storage"):
            count = getattr(node, f"GetNumberOf{kind}Nodes", lambda: 0)()
            helpers += [getattr(node, f"GetNth{kind}Node")(i) for i in range(count)]
        scene.RemoveNode(node)
        for helper in helpers:
            if helper is not None and helper.GetScene() is not None:
                scene.RemoveNode(helper)


def has_voxels(volume_node) -> bool:
    """Whether a volume node holds voxel data (an export of an empty segment holds none)."""
    image = volume_node.GetImageData()
    return image is not None and image.GetPointData().GetScalars() is not None


def _ijk_to_ras_directions(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)])


def image_from_volume_node(volume_node) -> Image:
    """The voxels and geometry of a scalar, label map or vector volume node.

    A vector volume (components last in MRML) becomes a channel-first image.

    Raises:
        AttentionSegError: the node has no image data, or sits under a non-identity transform
            (harden the transform first so the geometry is explicit).
    """
    if volume_node is None or volume_node.GetImageData() is None:
        raise AttentionSegError(f"volume {getattr(volume_node, 'GetName', lambda: None)()!r} has no image data")
    transform = volume_node.GetParentTransformNode()
    if transform is not None and not transform.IsTransformToWorldLinear():
        raise AttentionSegError(f"volume {volume_node.GetName()!r} is under a non-linear transform; harden it first")
    if transform is not None:
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)
        if not all(to_world.GetElement(r, c) == float(r == c) for r in range(4) for c in range(4)):
            raise AttentionSegError(f"volume {volume_node.GetName()!r} is under a transform; harden it first")
    array = np.array(slicer.util.arrayFromVolume(volume_node), copy=True)
    has_channels = array.ndim == 4
    if has_channels:
        array = np.moveaxis(array, -1, 0)
    direction_lps = _LPS_TO_RAS @ _ijk_to_ras_directions(volume_node)
    origin_lps = _LPS_TO_RAS @ np.asarray(volume_node.GetOrigin())
    return Image(array, volume_node.GetSpacing(), tuple(origin_lps), direction_lps, has_channels)


def _as_3d(image: Image) -> Image:
    """MRML volumes are 3D: a 2D image becomes one slice, 1 mm thick, normal along +S."""
    if image.spatial_dims == 3:
        return image
    array = image.array[:, None] if image.has_channels else image.array[None]
    direction = np.eye(3)
    direction[:2, :2] = image.direction
    return Image(array, image.spacing + (1.0,), image.origin + (0.0,), direction, image.has_channels)


def volume_node_from_image(scene, image: Image, name: str, labelmap: bool = False, node=None):
    """Create (or update ``node``) a volume node holding ``image`` with its geometry.

    Scalar images become ``vtkMRMLScalarVolumeNode`` (``vtkMRMLLabelMapVolumeNode`` with
    ``labelmap``); multi-channel images become ``vtkMRMLVectorVolumeNode``.
    """
    image = _as_3d(image)
    if node is None:
        if image.has_channels:
            node_class = "vtkMRMLVectorVolumeNode"
        else:
            node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = scene.AddNewNodeByClass(node_class, name)
    node.SetSpacing(*image.spacing)
    node.SetOrigin(*(_LPS_TO_RAS @ np.asarray(image.origin)))
    node.SetIJKToRASDirections((_LPS_TO_RAS @ image.direction).tolist())
    array = np.moveaxis(image.array, 0, -1) if image.has_channels else image.array
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def segmentation_node_from_label_image(
    scene,
    label_image: Image,
    labels: dict[int, str],
    colors: dict[int, tuple[float, float, float]] | None = None,
    name: str = "Segmentation",
    reference_volume_node=None,
    include_empty: bool = True,
    terminology: dict | None = None,
):
    """A segmentation node with one segment per label, carrying the label's name, colour and
    coded terminology.

    Args:
        scene: the MRML scene.
        label_image: integer label map (its geometry places the segments).
        labels: label value -> segment name; background 0 is skipped.
        colors: label value -> RGB (0-1); default: MRML's.
        name: node name.
        reference_volume_node: the volume whose grid the segmentation refers to (default: the
            label image's own grid).
        include_empty: also add empty segments for declared labels absent from the image, so
            that a user can paint a missed structure in the Segment Editor.
        terminology: label value -> :class:`~AttentionSegLib.io.terminology.SegmentTerminology`,
            set as Slicer's segment terminology (what Slicer's DICOM export writes as codes).

    Each segment keeps its source label value (``segment.GetLabelValue()``).
    """
    if label_image.has_channels:
        raise AttentionSegError("a label map needs one channel")
    labelmap_node = volume_node_from_image(scene, label_image, f"{name} labels", labelmap=True)
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node or labelmap_node)
    try:
        if label_image.array.any() and not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            labelmap_node, segmentation_node
        ):
            raise AttentionSegError(f"could not import the label map into segmentation {name!r}")
    finally:
        remove_nodes(scene, labelmap_node)
    segmentation = segmentation_node.GetSegmentation()
    present = {int(segmentation.GetNthSegment(i).GetLabelValue()) for i in range(segmentation.GetNumberOfSegments())}
    if include_empty:
        for value in labels:
            if value != 0 and value not in present:
                segment = slicer.vtkSegment()
                segment.SetLabelValue(value)
                segment.SetName(labels[value])
                segmentation.AddSegment(segment)
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        value = int(segment.GetLabelValue())
        segment.SetName(labels.get(value, f"label {value}"))
        if colors and value in colors:
            segment.SetColor(*colors[value])
        if terminology and value in terminology:
            segment.SetTerminology(slicer_terminology_entry(terminology[value]))
    return segmentation_node


def label_image_from_segmentation_node(
    segmentation_node, reference_volume_node, label_values_by_name: dict[str, int] | None = None
) -> Image:
    """The segments as one label map on the grid of ``reference_volume_node``.

    Each segment gets the value ``label_values_by_name[name]`` when given, else its own label
    value (kept since import), else its position (1, 2, ...). Where segments overlap, the later
    segment wins. Exported segment by segment, so MRML never renumbers the values.
    """
    reference = image_from_volume_node(reference_volume_node)
    label_array = np.zeros(reference.spatial_shape, dtype=np.uint16)
    segmentation = segmentation_node.GetSegmentation()
    scene = segmentation_node.GetScene()
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    try:
        for index in range(segmentation.GetNumberOfSegments()):
            segment_id = segmentation.GetNthSegmentID(index)
            segment = segmentation.GetSegment(segment_id)
            value = (label_values_by_name or {}).get(segment.GetName()) or int(segment.GetLabelValue()) or index + 1
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node,
                ids,
                labelmap_node,
                reference_volume_node,
                slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY,
            ):
                raise AttentionSegError(f"could not export segment {segment.GetName()!r}")
            if not has_voxels(labelmap_node):  # an empty segment exports no image
                continue
            mask = slicer.util.arrayFromVolume(labelmap_node) > 0
            if mask.shape != label_array.shape:
                raise AttentionSegError(f"segment {segment.GetName()!r} exported on an unexpected grid {mask.shape}")
            label_array[mask] = value
    finally:
        remove_nodes(scene, labelmap_node)
    return reference.with_array(label_array, has_channels=False)


def table_node_from_metrics(scene, report: dict, name: str = "Segmentation metrics", node=None):
    """A table node with one row per label, then a mean row (NaN where a value is undefined).

    Columns: Label, Name, Present in, then Dice, IoU, Precision, Sensitivity, HD95 (mm),
    HD max (mm), ASSD (mm), NSD, volumes (mL). The mean row's Name says how many labels it covers.
    """
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    else:
        node.RemoveAllColumns()
    table = node.GetTable()
    label_column, name_column, present_column = vtk.vtkStringArray(), vtk.vtkStringArray(), vtk.vtkStringArray()
    for column, title in ((label_column, "Label"), (name_column, "Name"), (present_column, "Present in")):
        column.SetName(title)
    metric_columns = []
    for key, title, unit in METRIC_COLUMNS:
        column = vtk.vtkDoubleArray()
        column.SetName(f"{title} ({unit})" if unit else title)
        metric_columns.append((key, column))
    rows = list(report["labels"]) + [
        {"value": "mean", "name": f"mean of {report['n_labels_averaged']} labels", "present_in": "", **report["mean"]}
    ]
    for row in rows:
        label_column.InsertNextValue(str(row["value"]))
        name_column.InsertNextValue(str(row["name"]))
        present_column.InsertNextValue(str(row["present_in"]))
        for key, column in metric_columns:
            value = row.get(key)
            column.InsertNextValue(float("nan") if value is None else float(value))
    for column in (label_column, name_column, present_column, *[c for _, c in metric_columns]):
        table.AddColumn(column)
    for _, title, unit in METRIC_COLUMNS:
        if unit:
            node.SetColumnUnitLabel(f"{title} ({unit})", unit)
    node.Modified()
    return node


def reference_geometry_volume(scene, segmentation_node):
    """A zero-filled label map volume node on the segmentation's reference image geometry (the
    grid its labelmaps refer to); the caller removes it when done.

    Raises:
        AttentionSegError: the segmentation has no reference geometry.
    """
    segmentation = segmentation_node.GetSegmentation()
    geometry = segmentation.GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    )
    if not geometry:
        raise AttentionSegError(
            f"segmentation {segmentation_node.GetName()!r} has no reference geometry; choose a reference volume"
        )
    oriented = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, oriented)
    extent = oriented.GetExtent()
    to_world = vtk.vtkMatrix4x4()
    oriented.GetImageToWorldMatrix(to_world)
    first_voxel = to_world.MultiplyPoint((extent[0], extent[2], extent[4], 1.0))
    for row in range(3):  # the grid starts at the extent's first voxel
        to_world.SetElement(row, 3, first_voxel[row])
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{segmentation_node.GetName()} grid")
    node.SetIJKToRASMatrix(to_world)
    image = vtk.vtkImageData()
    image.SetDimensions(extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.GetPointData().GetScalars().Fill(0)
    node.SetAndObserveImageData(image)
    return node
