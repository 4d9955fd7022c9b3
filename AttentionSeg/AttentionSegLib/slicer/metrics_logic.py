"""Per-label metrics of a segmentation node against a reference segmentation node."""

from __future__ import annotations

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM, evaluate_label_maps
from AttentionSegLib.slicer.mrml import (
    image_from_volume_node,
    label_image_from_segmentation_node,
    reference_geometry_volume,
    remove_nodes,
    table_node_from_metrics,
)
from AttentionSegLib.slicer.segments import segment_label_values

__all__ = ["MetricsLogic"]


class MetricsLogic:
    """Dice, HD95, ASSD, NSD, volumes ... of a segmentation against a reference, as a table node.

    Example:
        >>> table, report = MetricsLogic(scene).compute_metrics(prediction_node, reference_node)  # doctest: +SKIP
    """

    def __init__(self, scene) -> None:
        self.scene = scene

    def compute_metrics(
        self,
        segmentation_node,
        reference_segmentation_node,
        reference_volume_node=None,
        nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
        table_node=None,
    ):
        """Fill a table node (one row per label, then the mean) and return ``(table_node, report)``.

        Both segmentations are rasterised on the grid of ``reference_volume_node``, or without it
        on the reference segmentation's own geometry. Labels are the reference's segments; a
        predicted segment matches by name, then by label value. A predicted segment matching none
        is reported as a label of its own (a false positive). The values equal
        ``attentionseg evaluate`` on the same two label maps.

        Raises:
            AttentionSegError: a node is missing, or the reference has no geometry and no volume is given.
        """
        if reference_volume_node is not None:
            return self._metrics_on_grid(
                segmentation_node, reference_segmentation_node, reference_volume_node, nsd_tolerance_mm, table_node
            )
        if reference_segmentation_node is None:
            raise AttentionSegError("choose a reference segmentation")
        grid = reference_geometry_volume(self.scene, reference_segmentation_node)
        try:
            return self._metrics_on_grid(
                segmentation_node, reference_segmentation_node, grid, nsd_tolerance_mm, table_node
            )
        finally:
            remove_nodes(self.scene, grid)

    def _metrics_on_grid(self, segmentation_node, reference_segmentation_node, grid_node, nsd_tolerance_mm, table_node):
        if segmentation_node is None or reference_segmentation_node is None or grid_node is None:
            raise AttentionSegError("choose a segmentation, a reference segmentation and a reference volume")
        reference_values, predicted_values, names = _matched_label_values(
            segmentation_node, reference_segmentation_node
        )
        reference = label_image_from_segmentation_node(reference_segmentation_node, grid_node, reference_values)
        prediction = label_image_from_segmentation_node(segmentation_node, grid_node, predicted_values)
        spacing = image_from_volume_node(grid_node).spacing_array_order
        report = evaluate_label_maps(prediction.array, reference.array, spacing, names, nsd_tolerance_mm)
        title = f"{segmentation_node.GetName()} vs {reference_segmentation_node.GetName()}"
        return table_node_from_metrics(self.scene, report, title, table_node), report


def _matched_label_values(segmentation_node, reference_segmentation_node):
    """``(reference name -> value, predicted name -> value, value -> name)``: a predicted segment
    takes the value of the reference segment of its name, else its own value when free, else a new one."""
    reference_values = segment_label_values(reference_segmentation_node)
    names = {value: name for name, value in reference_values.items()}
    predicted_values: dict[str, int] = {}
    for name, value in segment_label_values(segmentation_node).items():
        if name in reference_values:
            predicted_values[name] = reference_values[name]
        elif value not in names and value not in predicted_values.values():
            predicted_values[name] = value
        else:
            predicted_values[name] = max([*names, *predicted_values.values(), 0]) + 1
        names.setdefault(predicted_values[name], name)
    return reference_values, predicted_values, names
