"""Several models on the same volume(s), side by side: their segmentations, a table and a chart."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import slicer

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_store import model_display_names
from AttentionSegLib.slicer.charts import agreement_nodes, comparison_nodes, pairwise_nodes
from AttentionSegLib.slicer.comparison_maps import add_comparison_maps
from AttentionSegLib.slicer.metrics_logic import MetricsLogic
from AttentionSegLib.slicer.mrml import image_from_volume_node, label_image_from_segmentation_node, remove_nodes
from AttentionSegLib.slicer.predictor_cache import PredictorCache
from AttentionSegLib.slicer.segment_logic import SegmentLogic
from AttentionSegLib.slicer.segments import segmentation_node_for_model
from AttentionSegLib.slicer.volumes import volume_nodes as listed_volume_nodes

__all__ = ["CompareLogic"]


class CompareLogic:
    """Compares models on the same volume(s), against a reference segmentation or with each other.

    Args:
        scene: the MRML scene.
        predictors: the predictor cache (shared with the other logics of the module); default a new one.
    """

    def __init__(self, scene, predictors: PredictorCache | None = None) -> None:
        self.scene = scene
        self.segmenting = SegmentLogic(scene, predictors)
        self.metrics = MetricsLogic(scene)
        self._comparisons = 0  # numbers the subject hierarchy folders

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
        (the numbers of :meth:`MetricsLogic.compute_metrics`); without: Dice between every pair of models.

        It also adds the comparison's voxel maps (:func:`~AttentionSegLib.slicer.comparison_maps.add_comparison_maps`):
        with two models or more the majority-vote and STAPLE consensus segmentations and the
        agreement map; with a reference each model's error segmentation (false positive / false
        negative per label) and the table of the largest errors with their centres in RAS; every
        node of the comparison in one subject hierarchy folder.

        With a reference and two models or more, a "Pairwise differences" table too (Dice and HD95
        of every pair and label on this case: :func:`~AttentionSegLib.slicer.charts.pairwise_nodes`).

        Returns ``{"segmentations", "table", "chart", "chart_table", "reports", "pairwise", "maps"}``. A
        cancelled run removes the segmentations it had added, so the scene is as before.
        """
        if len(model_files) < 1:
            raise AttentionSegError("choose at least one model to compare")
        nodes = listed_volume_nodes(volume_nodes)
        segmentations, label_maps, seconds = self._segment_with_each(nodes, model_files, device, tta, progress, cancel)
        if reference_segmentation_node is not None:
            reports = {}
            for name, segmentation in zip(label_maps, segmentations):
                table, reports[name] = self.metrics.compute_metrics(segmentation, reference_segmentation_node, nodes[0])
                remove_nodes(self.scene, table)  # one combined table instead
            table, chart, chart_table = comparison_nodes(self.scene, reports, seconds)
            pairwise = pairwise_nodes(self.scene, reports, nodes[0].GetName())
        else:
            from AttentionSegLib.evaluation.batch import pairwise_agreement

            labels = next(iter(label_maps.values()))[1].label_names
            rows = pairwise_agreement({name: image.array for name, (image, _) in label_maps.items()}, labels)
            reports = {"agreement": rows}
            table, chart, chart_table = agreement_nodes(self.scene, rows, labels)
            pairwise = None
        made = [*segmentations, table, chart, chart_table, *([pairwise] if pairwise is not None else [])]
        maps = self._maps(nodes[0], label_maps, reference_segmentation_node, made)
        return {
            "segmentations": segmentations,
            "table": table,
            "chart": chart,
            "chart_table": chart_table,
            "reports": reports,
            "pairwise": pairwise,
            "maps": maps,
        }

    def _maps(self, volume_node, label_maps: dict, reference_segmentation_node, grouped_nodes: list):
        """The comparison's voxel maps on the first volume's grid, labels as the first model's."""
        model_file = next(iter(label_maps.values()))[1]
        labels, colors = model_file.label_names, model_file.label_colors
        grid = image_from_volume_node(volume_node)
        reference = None
        if reference_segmentation_node is not None:  # on the models' label values, matched by name
            values_by_name = {name: value for value, name in labels.items()}
            reference = label_image_from_segmentation_node(reference_segmentation_node, volume_node, values_by_name)
            reference = reference.array
        arrays = {name: image.array for name, (image, _) in label_maps.items()}
        self._comparisons += 1
        maps = add_comparison_maps(
            self.scene, volume_node, grid, arrays, labels, colors, reference,
            folder_name=f"Model comparison {self._comparisons}", grouped_nodes=grouped_nodes,
        )  # fmt: skip
        if reference_segmentation_node is not None:  # the consensus's own metrics
            hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
            for name, node in maps.consensus.items():
                table, maps.consensus_reports[name] = self.metrics.compute_metrics(
                    node, reference_segmentation_node, volume_node
                )
                table.SetName(f"consensus ({name}) vs reference")
                maps.consensus_tables[name] = table
                item = hierarchy.GetItemByDataNode(table) or hierarchy.CreateItem(maps.folder_item, table)
                hierarchy.SetItemParent(item, maps.folder_item)
        return maps

    def _segment_with_each(self, nodes, model_files, device, tta, progress, cancel):
        """``(segmentation nodes, model name -> (label image, model file), model name -> seconds)``;
        on any error (a cancel included) the nodes added so far are removed."""
        names = model_display_names(model_files)
        added, label_maps, seconds = [], {}, {}
        try:
            for index, (name, path) in enumerate(zip(names, model_files)):
                started = time.perf_counter()

                def step(fraction: float, index=index) -> None:
                    if progress is not None:
                        progress((index + fraction) / len(model_files))

                predictor = self.segmenting.predictors.get(path, device, tta)
                _, label_image = self.segmenting.predict(nodes, predictor, step, cancel)
                added.append(segmentation_node_for_model(self.scene, label_image, predictor.model_file, name, nodes[0]))
                label_maps[name] = (label_image, predictor.model_file)
                seconds[name] = time.perf_counter() - started
        except BaseException:
            for node in added:
                remove_nodes(self.scene, node)
            raise
        return added, label_maps, seconds
