"""Qt-free logic behind the AttentionSeg Slicer module: works on an MRML scene, testable with slicer-core."""

from __future__ import annotations

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.metrics import DEFAULT_NSD_TOLERANCE_MM, evaluate_label_maps
from AttentionSegLib.mrml import image_from_volume_node, label_image_from_segmentation_node, table_node_from_metrics

__all__ = ["SegmentationMetricsLogic", "segment_label_values"]


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
