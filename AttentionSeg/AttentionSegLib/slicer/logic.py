"""Qt-free logic behind the AttentionSeg Slicer module: works on an MRML scene, testable with slicer-core."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import slicer
import vtk

from AttentionSegLib.data.dataset import DEFAULT_LABEL_COLORS
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM, evaluate_label_maps
from AttentionSegLib.inference.model_store import model_display_name, model_display_names
from AttentionSegLib.io.image import Image
from AttentionSegLib.slicer.mrml import (
    has_voxels,
    image_from_volume_node,
    label_image_from_segmentation_node,
    reference_geometry_volume,
    remove_nodes,
    segmentation_node_from_label_image,
    table_node_from_metrics,
)

if TYPE_CHECKING:  # PyTorch loads only when a model runs (Slicer starts without it)
    from AttentionSegLib.inference.predictor import Predictor

__all__ = ["SegmentationMetricsLogic", "AttentionSegLogic", "segment_label_values"]


def segment_label_values(segmentation_node) -> dict[str, int]:
    """Segment name -> label value: the value kept since import, else the segment's position (1, 2, ...)."""
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


class SegmentationMetricsLogic:
    """Per-label metrics of a segmentation node against a reference segmentation node."""

    def __init__(self, scene):
        self.scene = scene

    def compute_metrics(
        self,
        segmentation_node,
        reference_segmentation_node,
        reference_volume_node,
        nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
        table_node=None,
    ):
        """Fill a table node (one row per label, then the mean) and return ``(table_node, report)``.

        Both segmentations are rasterised on the grid of ``reference_volume_node``. Labels are
        the reference's segments; a predicted segment matches by name, then by label value. A
        predicted segment matching none is reported as a label of its own (a false positive).
        The values equal ``attentionseg evaluate`` on the same two label maps.
        """
        if segmentation_node is None or reference_segmentation_node is None or reference_volume_node is None:
            raise AttentionSegError("choose a segmentation, a reference segmentation and a reference volume")
        reference_values = segment_label_values(reference_segmentation_node)
        names = {value: name for name, value in reference_values.items()}
        predicted_values = {}
        for name, value in segment_label_values(segmentation_node).items():
            if name in reference_values:
                predicted_values[name] = reference_values[name]
            elif value not in names and value not in predicted_values.values():
                predicted_values[name] = value
            else:
                predicted_values[name] = max([*names, *predicted_values.values(), 0]) + 1
            names.setdefault(predicted_values[name], name)
        reference = label_image_from_segmentation_node(
            reference_segmentation_node, reference_volume_node, reference_values
        )
        prediction = label_image_from_segmentation_node(segmentation_node, reference_volume_node, predicted_values)
        spacing = image_from_volume_node(reference_volume_node).spacing_array_order
        report = evaluate_label_maps(prediction.array, reference.array, spacing, names, nsd_tolerance_mm)
        table_node = table_node_from_metrics(
            self.scene, report, f"{segmentation_node.GetName()} vs {reference_segmentation_node.GetName()}", table_node
        )
        return table_node, report


# ----------------------------------------------------------------------------------------------
# Segmentation with model files: segment, compare, click-to-segment, corrections.


def _number(value) -> float:
    """A table cell: None (undefined) becomes NaN; infinity stays."""
    return math.nan if value is None else float(value)


def _volume_nodes(volume_nodes) -> list:
    nodes = list(volume_nodes) if isinstance(volume_nodes, (list, tuple)) else [volume_nodes]
    if not nodes or any(node is None for node in nodes):
        raise AttentionSegError("choose the input volume(s)")
    return nodes


def for_model(image: Image, predictor) -> Image:
    """MRML volumes are 3D: a one-slice volume goes to a 2D model as a 2D image."""
    if predictor.image_dims == 2 and image.spatial_dims == 3 and image.spatial_shape[0] == 1:
        array = image.array[:, 0] if image.has_channels else image.array[0]
        return Image(array, image.spacing[:2], image.origin[:2], image.direction[:2, :2], image.has_channels)
    return image


def on_volume_grid(labels: np.ndarray, volume_image: Image) -> Image:
    """Labels from a 2D model back onto the one-slice volume they came from."""
    if labels.ndim == 2 and volume_image.spatial_dims == 3:
        labels = labels[None]
    return volume_image.with_array(labels, has_channels=False)


def _oriented_mask(mask: np.ndarray, volume_node):
    """A vtkOrientedImageData holding ``mask`` (array order k, j, i) on the volume's grid."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    from vtk.util import numpy_support

    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    flat[:] = mask.astype(np.uint8).ravel()
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    return image


def _default_predictor(model_file: Path, device: str, tta: bool) -> Predictor:
    from AttentionSegLib.inference.predictor import Predictor

    return Predictor(model_file, device=device, tta=tta)


def _segment_is_empty(segmentation_node, segment_id: str) -> bool:
    """Whether the segment has no voxel (its shared labelmap layer holds no voxel of its value)."""
    from vtk.util import numpy_support

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    labelmap = segment.GetRepresentation(name)
    if labelmap is None or labelmap.GetPointData().GetScalars() is None:
        return True
    extent = labelmap.GetExtent()
    if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
        return True
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
    return not np.any(values == segment.GetLabelValue())


def _region_volume(scene, volume_node, region: tuple[slice, ...]):
    """A zero label map node on the sub-grid ``region`` (array order) of ``volume_node``."""
    to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(to_ras)
    start = [region[2].start, region[1].start, region[0].start]  # i, j, k
    first_voxel = to_ras.MultiplyPoint((*start, 1.0))
    for row in range(3):
        to_ras.SetElement(row, 3, first_voxel[row])
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "click window")
    node.SetIJKToRASMatrix(to_ras)
    image = vtk.vtkImageData()
    image.SetDimensions(*(r.stop - r.start for r in reversed(region)))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.GetPointData().GetScalars().Fill(0)
    node.SetAndObserveImageData(image)
    return node


class AttentionSegLogic(SegmentationMetricsLogic):
    """Everything the AttentionSeg module does, on an MRML scene and without Qt.

    Args:
        scene: the MRML scene.
        predictor_factory: ``(model_file, device, tta) -> Predictor``; default builds
            :class:`~AttentionSegLib.inference.predictor.Predictor`. Predictors are cached per model file,
            device and TTA, so repeated clicks do not reload the model.
    """

    def __init__(self, scene, predictor_factory: Callable[..., Predictor] | None = None) -> None:
        super().__init__(scene)
        self.predictor_factory = predictor_factory or _default_predictor
        self._predictors: dict[tuple, Predictor] = {}

    def predictor(self, model_file: str | Path, device: str = "auto", tta: bool = False) -> Predictor:
        path = Path(model_file)
        if not path.is_file():
            raise AttentionSegError(f"{path}: model file not found")
        key = (str(path.resolve()), path.stat().st_mtime_ns, device, tta)
        if key not in self._predictors:
            self._predictors[key] = self.predictor_factory(path, device, tta)
        return self._predictors[key]

    # ------------------------------------------------------------------------------- segment
    def _predict(self, volume_nodes, predictor: Predictor, progress=None, cancel=None):
        nodes = _volume_nodes(volume_nodes)
        images = [image_from_volume_node(node) for node in nodes]
        inputs = [for_model(image, predictor) for image in images]
        prediction = predictor.predict(inputs, progress=progress, cancel=cancel, names=[n.GetName() for n in nodes])
        return nodes, images, prediction

    def segmentation_node(self, label_image: Image, labels: list[dict], name: str, reference_volume_node):
        """A segmentation node from a label image and ``[{"value", "name", "color"}]``."""
        names = {int(label["value"]): label["name"] for label in labels if int(label["value"]) != 0}
        colors = {int(label["value"]): tuple(label["color"]) for label in labels if label.get("color")}
        return segmentation_node_from_label_image(
            self.scene, label_image, names, colors, name=name, reference_volume_node=reference_volume_node
        )

    def _segmentation_node(self, label_image: Image, predictor: Predictor, name: str, reference_volume_node):
        return self.segmentation_node(label_image, predictor.labels, name, reference_volume_node)

    def segment(
        self,
        volume_nodes,
        model_file: str | Path,
        device: str = "auto",
        tta: bool = False,
        progress: Callable[[float], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        name: str | None = None,
    ):
        """Segment the volume(s) (one per model channel) with ``model_file``.

        Returns a new segmentation node named after the model, one segment per label with the
        model's names and colours, referring to the first volume's geometry. A cancelled run
        (``cancel()`` true) raises :class:`~AttentionSegLib.inference.predictor.PredictionCancelled` and adds
        nothing to the scene.
        """
        predictor = self.predictor(model_file, device, tta)
        nodes, images, prediction = self._predict(volume_nodes, predictor, progress, cancel)
        label_image = on_volume_grid(prediction.label_image.array, images[0])
        return self._segmentation_node(label_image, predictor, name or model_display_name(model_file), nodes[0])

    # ------------------------------------------------------------------------------- metrics
    def compute_metrics(
        self,
        segmentation_node,
        reference_segmentation_node,
        reference_volume_node=None,
        nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
        table_node=None,
    ):
        """As :meth:`SegmentationMetricsLogic.compute_metrics`; without ``reference_volume_node``
        both segmentations are rasterised on the reference segmentation's own geometry."""
        if reference_volume_node is not None:
            return super().compute_metrics(
                segmentation_node, reference_segmentation_node, reference_volume_node, nsd_tolerance_mm, table_node
            )
        if reference_segmentation_node is None:
            raise AttentionSegError("choose a reference segmentation")
        grid = reference_geometry_volume(self.scene, reference_segmentation_node)
        try:
            return super().compute_metrics(
                segmentation_node, reference_segmentation_node, grid, nsd_tolerance_mm, table_node
            )
        finally:
            remove_nodes(self.scene, grid)

    # ------------------------------------------------------------------------------- compare
    def compare(
        self,
        volume_nodes,
        model_files: list[str | Path],
        reference_segmentation_node=None,
        device: str = "auto",
        tta: bool = False,
        progress: Callable[[float], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> dict:
        """Every model on the same volume(s): one segmentation node per model, a table node and a
        bar chart of Dice per label per model. With a reference: Dice, HD95, ASSD against it
        (the numbers of :meth:`compute_metrics`); without: Dice between every pair of models.

        Returns ``{"segmentations", "table", "chart", "chart_table", "reports"}``. A cancelled
        run removes the segmentations it had added, so the scene is as before.
        """
        if len(model_files) < 1:
            raise AttentionSegError("choose at least one model to compare")
        nodes = _volume_nodes(volume_nodes)
        names = model_display_names(model_files)
        added, label_maps, seconds = [], {}, {}
        try:
            for index, (name, path) in enumerate(zip(names, model_files)):
                started = time.perf_counter()

                def step(fraction: float, index=index) -> None:
                    if progress is not None:
                        progress((index + fraction) / len(model_files))

                predictor = self.predictor(path, device, tta)
                _, images, prediction = self._predict(nodes, predictor, step, cancel)
                label_image = on_volume_grid(prediction.label_image.array, images[0])
                added.append(self._segmentation_node(label_image, predictor, name, nodes[0]))
                label_maps[name] = (label_image, predictor)
                seconds[name] = time.perf_counter() - started
        except BaseException:
            for node in added:
                remove_nodes(self.scene, node)
            raise
        if reference_segmentation_node is not None:
            reports = {
                name: self.compute_metrics(segmentation, reference_segmentation_node, nodes[0], table_node=None)
                for name, segmentation in zip(names, added)
            }
            for table, _ in reports.values():  # one combined table below instead
                remove_nodes(self.scene, table)
            reports = {name: report for name, (_, report) in reports.items()}
            table, chart, chart_table = self._comparison_nodes(reports, seconds)
        else:
            first = next(iter(label_maps.values()))[1]
            labels = {int(label["value"]): label["name"] for label in first.labels}
            from AttentionSegLib.evaluation.batch import pairwise_agreement

            rows = pairwise_agreement({name: image.array for name, (image, _) in label_maps.items()}, labels)
            reports = {"agreement": rows}
            table, chart, chart_table = self._agreement_nodes(rows, labels)
        return {"segmentations": added, "table": table, "chart": chart, "chart_table": chart_table, "reports": reports}

    def _comparison_nodes(self, reports: dict[str, dict], seconds: dict[str, float]):
        table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", "Model comparison")
        columns = {
            "Model": vtk.vtkStringArray(),
            "Label": vtk.vtkStringArray(),
            "Name": vtk.vtkStringArray(),
            "Dice": vtk.vtkDoubleArray(),
            "HD95 (mm)": vtk.vtkDoubleArray(),
            "ASSD (mm)": vtk.vtkDoubleArray(),
            "Seconds": vtk.vtkDoubleArray(),
        }
        for title, column in columns.items():
            column.SetName(title)
        for model, report in reports.items():
            for row in report["labels"]:
                columns["Model"].InsertNextValue(model)
                columns["Label"].InsertNextValue(str(row["value"]))
                columns["Name"].InsertNextValue(str(row["name"]))
                for key, title in (("dice", "Dice"), ("hd95_mm", "HD95 (mm)"), ("assd_mm", "ASSD (mm)")):
                    columns[title].InsertNextValue(_number(row[key]))
                columns["Seconds"].InsertNextValue(seconds[model])
        for column in columns.values():
            table_node.GetTable().AddColumn(column)
        labels = [(row["value"], row["name"]) for row in next(iter(reports.values()))["labels"]]
        dice = {
            model: {row["value"]: _number(row["dice"]) for row in report["labels"]} for model, report in reports.items()
        }
        chart, chart_table = self._bar_chart("Dice per label", labels, dice, "Dice")
        return table_node, chart, chart_table

    def _agreement_nodes(self, rows: list[dict], labels: dict[int, str]):
        table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", "Model agreement")
        titles = ("Model A", "Model B", "Label", "Name")
        columns = [vtk.vtkStringArray() for _ in titles] + [vtk.vtkDoubleArray()]
        for column, title in zip(columns, (*titles, "Dice")):
            column.SetName(title)
        series: dict[str, dict[int, float]] = {}
        for row in rows:
            for column, key in zip(columns, ("model_a", "model_b", "value", "name")):
                column.InsertNextValue(str(row[key]))
            columns[-1].InsertNextValue(_number(row["dice"]))
            series.setdefault(f"{row['model_a']} vs {row['model_b']}", {})[row["value"]] = _number(row["dice"])
        for column in columns:
            table_node.GetTable().AddColumn(column)
        chart, chart_table = self._bar_chart("Agreement per label", list(labels.items()), series, "Dice between models")
        return table_node, chart, chart_table

    def _bar_chart(self, title: str, labels: list[tuple[int, str]], values: dict[str, dict[int, float]], y_title: str):
        """A table (label index, label name, one column per series) and a bar chart over it."""
        table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{title} table")
        index, names = vtk.vtkDoubleArray(), vtk.vtkStringArray()
        index.SetName("Label index")
        names.SetName("Label")
        for position, (_, name) in enumerate(labels):
            index.InsertNextValue(position)
            names.InsertNextValue(name)
        table_node.GetTable().AddColumn(index)
        table_node.GetTable().AddColumn(names)
        chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", title)
        chart.SetTitle(title)
        chart.SetXAxisTitle("label")
        chart.SetYAxisTitle(y_title)
        for position, (series_name, by_label) in enumerate(values.items()):
            column = vtk.vtkDoubleArray()
            column.SetName(series_name)
            for value, _ in labels:
                column.InsertNextValue(by_label.get(value, float("nan")))
            table_node.GetTable().AddColumn(column)
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", series_name)
            series.SetAndObserveTableNodeID(table_node.GetID())
            series.SetXColumnName("Label index")
            series.SetYColumnName(series_name)
            series.SetLabelColumnName("Label")
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
            series.SetColor(*DEFAULT_LABEL_COLORS[position % len(DEFAULT_LABEL_COLORS)])
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        return chart, table_node

    # ------------------------------------------------------------------------ click-to-segment
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
        """
        from scipy import ndimage

        predictor = self.predictor(model_file, device)
        nodes = _volume_nodes(volume_nodes)
        images = [image_from_volume_node(node) for node in nodes]
        volume = images[0]
        lps = np.array([-point_ras[0], -point_ras[1], point_ras[2], 1.0])
        ijk = np.linalg.solve(volume.index_to_physical(), lps)[:3]
        center = np.round(ijk[::-1]).astype(int)  # array order
        shape = np.asarray(volume.spatial_shape)
        if np.any(center < 0) or np.any(center >= shape):
            raise AttentionSegError(f"the point {tuple(round(v, 1) for v in point_ras)} (RAS mm) is outside the volume")
        inputs = [for_model(image, predictor) for image in images]
        two_d = inputs[0].spatial_dims == 2
        model_center = center[1:] if two_d else center
        if positive or segment_id is None:
            window_labels, region = predictor.predict_window(inputs, model_center)
        else:  # removing from a known segment needs only the window's extent, not the model
            region = predictor.window_region(predictor.stack_channels(inputs), model_center)
            window_labels = None
        if two_d:
            window_labels = window_labels[None] if window_labels is not None else None
            region = (slice(0, 1), *region)
        local = tuple(int(c - r.start) for c, r in zip(center, region))

        by_name = {label["name"]: int(label["value"]) for label in predictor.labels}
        segmentation = segmentation_node.GetSegmentation()
        value = None
        if segment_id is not None:
            segment = segmentation.GetSegment(segment_id)
            if segment is None:
                raise AttentionSegError(f"segmentation {segmentation_node.GetName()!r} has no segment {segment_id!r}")
            value = by_name.get(segment.GetName()) or int(segment.GetLabelValue()) or None
        if value is None and window_labels is not None:
            value = int(window_labels[local])
            if value == 0 and positive:
                value = _nearest_label(window_labels, local, np.asarray(volume.spacing_array_order))
            if value == 0 and positive:
                raise AttentionSegError("the model finds no structure in the window around this point")
        if segment_id is None:
            name = next((n for n, v in by_name.items() if v == value), f"label {value}")
            segment_id = segmentation.GetSegmentIdBySegmentName(name)
            if not segment_id:
                segment_id = self._add_segment(segmentation_node, name, value, predictor)

        # Only the window's region of the segment is read and rewritten: the cost of a click does
        # not grow with the volume (a 512x512x300 mask would take seconds to export).
        region_node = _region_volume(self.scene, nodes[0], region)
        try:
            logic = slicer.vtkSlicerSegmentationsModuleLogic
            if positive:
                components, _ = ndimage.label(window_labels == value)
                under = components[local]
                if under == 0:  # the point is just outside: take the nearest component
                    nearest = ndimage.distance_transform_edt(components == 0, return_indices=True)[1]
                    under = components[tuple(nearest[(slice(None), *local)])]
                # Merge (maximum) inside the window: the segment outside it is kept as it is. An
                # empty segment has no labelmap extent to merge into: it is set instead.
                empty = _segment_is_empty(segmentation_node, segment_id)
                mode = logic.MODE_REPLACE if empty else logic.MODE_MERGE_MAX
                self._merge_segment(segmentation_node, segment_id, components == under, region_node, nodes[0], mode)
            else:
                components, _ = ndimage.label(self._segment_mask(segmentation_node, segment_id, region_node))
                under = components[local]
                if under == 0:
                    raise AttentionSegError("the point is not inside the segment; nothing to remove")
                # Merge (minimum) with "everything but the clicked part": removes only that part.
                self._merge_segment(
                    segmentation_node, segment_id, components != under, region_node, nodes[0], logic.MODE_MERGE_MIN
                )
        finally:
            remove_nodes(self.scene, region_node)
        return segment_id

    def _add_segment(self, segmentation_node, name: str, value: int, predictor: Predictor) -> str:
        segment = slicer.vtkSegment()
        segment.SetName(name)
        segment.SetLabelValue(value)
        color = next((label.get("color") for label in predictor.labels if int(label["value"]) == value), None)
        if color:
            segment.SetColor(*color)
        segmentation = segmentation_node.GetSegmentation()
        segmentation.AddSegment(segment)
        return segmentation.GetSegmentIdBySegmentName(name)

    def _segment_mask(self, segmentation_node, segment_id: str, grid_node) -> np.ndarray:
        """The segment as a boolean array on the grid of ``grid_node``."""
        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "segment export")
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
            remove_nodes(self.scene, labelmap)

    def _merge_segment(
        self, segmentation_node, segment_id: str, mask: np.ndarray, grid_node, volume_node, mode
    ) -> None:
        """Merge ``mask`` (on the grid of ``grid_node``) into the segment with ``mode`` (MRML's
        MODE_MERGE_MAX adds, MODE_MERGE_MIN keeps only where the mask is set); outside the grid
        the segment is untouched. (MODE_REPLACE would replace the whole segment, not just the
        grid's extent.)"""
        image = _oriented_mask(mask, grid_node)
        geometry_name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
        if not segmentation_node.GetSegmentation().GetConversionParameter(geometry_name):
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            image, segmentation_node, segment_id, mode, image.GetExtent()
        )
        if not ok:
            raise AttentionSegError(f"could not update segment {segment_id!r}")

    # ---------------------------------------------------------------------------- corrections
    def save_correction(
        self,
        volume_nodes,
        corrected_segmentation_node,
        dataset_json: str | Path,
        original_segmentation_node=None,
    ) -> dict:
        """Write the volume(s) and the corrected segmentation as a new case of the dataset
        definition (see :func:`AttentionSegLib.data.corrections.add_training_case`), the original
        segmentation beside it. Segments match the dataset's labels by name, then by label value.

        Returns the result of ``add_training_case``, whose ``dice`` holds Dice(original,
        corrected) per label value.
        """
        from AttentionSegLib.data.corrections import add_training_case
        from AttentionSegLib.data.dataset import load_dataset

        if corrected_segmentation_node is None:
            raise AttentionSegError("choose the corrected segmentation")
        definition = load_dataset(dataset_json)
        nodes = _volume_nodes(volume_nodes)
        images = [image_from_volume_node(node) for node in nodes]
        arrays = [image.array if image.has_channels else image.array[None] for image in images]
        image = images[0].with_array(np.concatenate(arrays, axis=0), has_channels=True)
        if definition.spatial_dims == 2 and image.spatial_shape[0] == 1:
            image = for_model(image, _TwoD())

        def label_image(segmentation_node) -> Image:
            values = _dataset_values(segmentation_node, definition)
            labels = label_image_from_segmentation_node(segmentation_node, nodes[0], values)
            if image.spatial_dims == 2:
                labels = Image(labels.array[0], image.spacing, image.origin, image.direction)
            return labels

        corrected = label_image(corrected_segmentation_node)
        original = label_image(original_segmentation_node) if original_segmentation_node is not None else None
        return add_training_case(dataset_json, image, corrected, original)


class _TwoD:
    image_dims = 2


def _dataset_values(segmentation_node, definition) -> dict[str, int]:
    """Segment name -> the dataset's label value (by name, else the segment's own label value)."""
    by_name = {name: value for value, name in definition.labels.items()}
    values = {}
    for name, value in segment_label_values(segmentation_node).items():
        if name in by_name:
            values[name] = by_name[name]
        elif value in definition.labels and value != 0:
            values[name] = value
        else:
            raise AttentionSegError(
                f"segment {name!r} of {segmentation_node.GetName()!r} matches no label of {definition.path} "
                f"({', '.join(n for v, n in definition.labels.items() if v)}); rename it"
            )
    return values


def _nearest_label(labels: np.ndarray, point: tuple[int, ...], spacing: np.ndarray) -> int:
    """The label of the foreground voxel nearest to ``point`` (mm distance), or 0."""
    from scipy import ndimage

    if not labels.any():
        return 0
    _, indices = ndimage.distance_transform_edt(labels == 0, sampling=spacing, return_indices=True)
    return int(labels[tuple(indices[(slice(None), *point)])])
