"""The voxel maps of a model comparison as MRML nodes: consensus segmentations (majority vote and
STAPLE), the agreement map, error segmentations against the reference, and the table of the
largest errors with their centres in RAS; grouped in a subject hierarchy folder.

The maps are the engine's (:func:`AttentionSegLib.evaluation.comparison_maps.compute_comparison_maps`);
this module only turns them into nodes on the first volume's grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk

from AttentionSegLib.evaluation.comparison_maps import ERRORS_LISTED, compute_comparison_maps
from AttentionSegLib.evaluation.consensus import ERROR_KINDS
from AttentionSegLib.io.image import Image
from AttentionSegLib.slicer.mrml import remove_nodes, segmentation_node_from_label_image, volume_node_from_image
from AttentionSegLib.slicer.segments import add_segment, merge_into_segment

REPLACE = slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE

__all__ = ["ComparisonMaps", "add_comparison_maps", "ERRORS_LISTED"]


@dataclass
class ComparisonMaps:
    """The nodes :func:`add_comparison_maps` made, and the worst errors as rows."""

    folder_item: int = 0
    consensus: dict = field(default_factory=dict)  # "majority" / "staple" -> segmentation node
    agreement: object = None  # labelmap volume node: models agreeing with the majority, per voxel
    errors: dict = field(default_factory=dict)  # model -> segmentation node of its FP / FN segments
    worst_errors: list[dict] = field(default_factory=list)  # model, label, kind, volume_ml, voxels, ras
    worst_table: object = None
    disagreements: list[dict] = field(default_factory=list)  # regions where models differ: voxels, mL, ras
    consensus_reports: dict = field(default_factory=dict)  # "majority" / "staple" -> metrics vs reference
    consensus_tables: dict = field(default_factory=dict)

    def nodes(self) -> list:
        made = [*self.consensus.values(), self.agreement, *self.errors.values(), self.worst_table]
        return [node for node in [*made, *self.consensus_tables.values()] if node is not None]


def _agreement_colors(scene, n_models: int):
    """A colour table: 0 transparent, 1..N from red (one model) to green (all of them)."""
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "model agreement colours")
    table.SetTypeToUser()
    table.SetNumberOfColors(n_models + 1)
    table.SetColor(0, "none", 0, 0, 0, 0)
    for count in range(1, n_models + 1):
        level = (count - 1) / max(n_models - 1, 1)
        table.SetColor(count, f"{count} of {n_models} models", 1 - level, level, 0.1, 1)
    return table


def add_comparison_maps(
    scene,
    volume_node,
    grid: Image,
    label_maps: dict[str, np.ndarray],
    labels: dict[int, str],
    colors: dict[int, tuple],
    reference: np.ndarray | None = None,
    folder_name: str = "Model comparison",
    grouped_nodes: list | None = None,
) -> ComparisonMaps:
    """Add the maps of ``label_maps`` (model name -> label array on ``grid``) to the scene.

    Consensus segmentations need two models or more; error segmentations and the worst-errors
    table need ``reference`` (an array on ``grid`` with the models' label values). Nodes go into a
    new subject hierarchy folder ``folder_name`` with ``grouped_nodes`` (the comparison's other
    nodes); on any failure the nodes made here are removed.
    """
    arrays = compute_comparison_maps(grid, label_maps, labels, reference, worst_errors=ERRORS_LISTED)
    maps = ComparisonMaps(disagreements=arrays.disagreements)
    made: list = []
    try:
        for name, consensus in arrays.consensus.items():
            node = segmentation_node_from_label_image(
                scene, grid.with_array(consensus, has_channels=False), labels, colors,
                name=f"consensus ({name})", reference_volume_node=volume_node,
            )  # fmt: skip
            maps.consensus[name] = node
            made.append(node)
        if arrays.agreement is not None:
            node = volume_node_from_image(
                scene, grid.with_array(arrays.agreement, has_channels=False), "model agreement", labelmap=True
            )
            colours = _agreement_colors(scene, len(label_maps))
            node.GetDisplayNode().SetAndObserveColorNodeID(colours.GetID())
            maps.agreement = node
            made += [node, colours]
        if reference is not None:
            for model in label_maps:
                node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{model} errors")
                made.append(node)
                node.CreateDefaultDisplayNodes()
                node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
                for value, label, codes in arrays.error_maps(model):
                    for code, (kind, color) in ERROR_KINDS.items():
                        # One segment each: a voxel can be one label's leak and another's miss.
                        segment_id = add_segment(node, f"{label} {kind}", len(ERROR_KINDS) * (value - 1) + code, color)
                        mask = codes == code
                        if mask.any():
                            merge_into_segment(node, segment_id, mask, volume_node, volume_node, REPLACE)
                maps.errors[model] = node
            maps.worst_errors = arrays.worst_errors
            maps.worst_table = _worst_errors_table(scene, maps.worst_errors)
            made.append(maps.worst_table)
        maps.folder_item = _group(scene, folder_name, [*(grouped_nodes or []), *made])
    except BaseException:
        remove_nodes(scene, *made)
        raise
    return maps


def _worst_errors_table(scene, rows: list[dict]):
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", "Largest errors")
    strings = {title: vtk.vtkStringArray() for title in ("Model", "Label", "Kind")}
    numbers = {title: vtk.vtkDoubleArray() for title in ("Volume (mL)", "Voxels", "R (mm)", "A (mm)", "S (mm)")}
    for title, column in {**strings, **numbers}.items():
        column.SetName(title)
    for row in rows:
        strings["Model"].InsertNextValue(row["model"])
        strings["Label"].InsertNextValue(row["label"])
        strings["Kind"].InsertNextValue(row["kind"])
        for title, value in zip(numbers, (row["volume_ml"], row["voxels"], *row["ras"])):
            numbers[title].InsertNextValue(float(value))
    for column in (*strings.values(), *numbers.values()):
        table_node.GetTable().AddColumn(column)
    table_node.SetColumnUnitLabel("Volume (mL)", "mL")
    return table_node


def _group(scene, name: str, nodes: list) -> int:
    """A subject hierarchy folder holding ``nodes``; returns its item id."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), name)
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item:  # the application's subject hierarchy logic made one already
            hierarchy.SetItemParent(item, folder)
        else:
            hierarchy.CreateItem(folder, node)
    return folder
