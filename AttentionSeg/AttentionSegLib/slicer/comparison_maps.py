"""The voxel maps of a model comparison as MRML nodes: consensus segmentations (majority vote and
STAPLE), the agreement map, error segmentations against the reference, and the table of the
largest errors with their centres in RAS; grouped in a subject hierarchy folder.

The maps are the engine's (:mod:`AttentionSegLib.evaluation.consensus`); this module only turns
them into nodes on the first volume's grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk

from AttentionSegLib.evaluation.consensus import (
    ERROR_KINDS,
    agreement_level,
    connected_regions,
    disagreement_regions,
    error_map,
    majority_vote,
    ras_of_index,
    staple,
)
from AttentionSegLib.io.image import Image
from AttentionSegLib.slicer.mrml import remove_nodes, segmentation_node_from_label_image, volume_node_from_image
from AttentionSegLib.slicer.segments import add_segment, merge_into_segment

REPLACE = slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE

__all__ = ["ComparisonMaps", "add_comparison_maps", "ERRORS_LISTED"]

ERRORS_LISTED = 20  # rows of the worst-errors table


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
    maps = ComparisonMaps()
    made: list = []
    try:
        arrays = list(label_maps.values())
        if len(arrays) > 1:
            majority = majority_vote(arrays)
            for name, consensus in (("majority", majority), ("staple", staple(arrays))):
                node = segmentation_node_from_label_image(
                    scene, grid.with_array(consensus, has_channels=False), labels, colors,
                    name=f"consensus ({name})", reference_volume_node=volume_node,
                )  # fmt: skip
                maps.consensus[name] = node
                made.append(node)
            for region in disagreement_regions(arrays, grid.spacing_array_order):
                maps.disagreements.append({**region, "ras": ras_of_index(grid, region["index"])})
            agreement = agreement_level(arrays, majority)
            node = volume_node_from_image(
                scene, grid.with_array(agreement, has_channels=False), "model agreement", labelmap=True
            )
            colours = _agreement_colors(scene, len(arrays))
            node.GetDisplayNode().SetAndObserveColorNodeID(colours.GetID())
            maps.agreement = node
            made += [node, colours]
        if reference is not None:
            rows = []
            for model, array in label_maps.items():
                node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{model} errors")
                made.append(node)
                node.CreateDefaultDisplayNodes()
                node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
                for value, label in labels.items():
                    if not value:
                        continue
                    codes = error_map(array, reference, value)
                    for code, (kind, color) in ERROR_KINDS.items():
                        # One segment each: a voxel can be one label's leak and another's miss.
                        segment_id = add_segment(node, f"{label} {kind}", len(ERROR_KINDS) * (value - 1) + code, color)
                        mask = codes == code
                        if mask.any():
                            merge_into_segment(node, segment_id, mask, volume_node, volume_node, REPLACE)
                        for region in connected_regions(mask, grid.spacing_array_order, limit=3):
                            rows.append(
                                {
                                    "model": model,
                                    "label": label,
                                    "kind": kind,
                                    "volume_ml": region["volume_ml"],
                                    "voxels": region["voxels"],
                                    "ras": ras_of_index(grid, region["index"]),
                                }
                            )
                maps.errors[model] = node
            rows.sort(key=lambda row: -row["volume_ml"])
            maps.worst_errors = rows[:ERRORS_LISTED]
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
