"""A segmentation's uncertainty map as MRML nodes: a scalar volume on the segmented volume's grid,
coloured from clear (sure) to yellow and red (likely wrong) to lay over the slices, and the "Likely
wrong" table of its largest doubtful regions with their centres in RAS (the module jumps the views
to a row, as with the comparison's largest-errors table).

The map is the engine's (:mod:`AttentionSegLib.inference.uncertainty`); this module only makes
the nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import vtk

from AttentionSegLib.inference.uncertainty import LIKELY_WRONG_THRESHOLD, likely_wrong_regions
from AttentionSegLib.io.image import Image
from AttentionSegLib.slicer.mrml import remove_nodes, volume_node_from_image

__all__ = ["UncertaintyNodes", "add_uncertainty_map", "COLOURS"]

COLOURS = 64  # entries of the colour table over 0..1


@dataclass
class UncertaintyNodes:
    """The nodes :func:`add_uncertainty_map` made and the table's rows."""

    volume: object
    colors: object
    table: object
    regions: list[dict] = field(default_factory=list)  # voxels, volume_ml, mean, index, ras

    def nodes(self) -> list:
        return [self.volume, self.colors, self.table]


def _colors(scene, name: str):
    """Clear below the likely-wrong threshold's half, then yellow to red, more opaque as it rises."""
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", f"{name} colours")
    table.SetTypeToUser()
    table.SetNumberOfColors(COLOURS)
    for index in range(COLOURS):
        level = index / (COLOURS - 1)
        if level < LIKELY_WRONG_THRESHOLD / 2:
            table.SetColor(index, "sure", 0, 0, 0, 0)
        else:
            table.SetColor(index, f"{level:.2f}", 1.0, 1.0 - level, 0.0, min(1.0, 0.3 + level))
    return table


def _regions_table(scene, regions: list[dict], name: str):
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    titles = ("Volume (mL)", "Voxels", "Mean uncertainty", "R (mm)", "A (mm)", "S (mm)")
    columns = {title: vtk.vtkDoubleArray() for title in titles}
    for title, column in columns.items():
        column.SetName(title)
    for region in regions:
        for title, value in zip(titles, (region["volume_ml"], region["voxels"], region["mean"], *region["ras"])):
            columns[title].InsertNextValue(float(value))
    for column in columns.values():
        table_node.GetTable().AddColumn(column)
    table_node.SetColumnUnitLabel("Volume (mL)", "mL")
    return table_node


def add_uncertainty_map(scene, uncertainty: Image, name: str) -> UncertaintyNodes:
    """Add ``uncertainty`` (0-1 on the segmented volume's grid) as ``"<name> uncertainty"`` with its
    colours, and the ``"<name> likely wrong"`` table; on failure nothing stays in the scene."""
    made: list = []
    try:
        volume = volume_node_from_image(scene, uncertainty, f"{name} uncertainty")
        made.append(volume)
        colors = _colors(scene, f"{name} uncertainty")
        made.append(colors)
        display = volume.GetDisplayNode()
        display.SetAndObserveColorNodeID(colors.GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        regions = likely_wrong_regions(uncertainty)
        table = _regions_table(scene, regions, f"{name} likely wrong")
        made.append(table)
    except BaseException:
        remove_nodes(scene, *made)
        raise
    return UncertaintyNodes(volume, colors, table, regions)
