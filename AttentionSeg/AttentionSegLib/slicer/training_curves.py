"""Training curves in MRML: loss and validation Dice per epoch, as a table node, plot series and a
chart node, filled from the trainer's progress events (:mod:`AttentionSegLib.progress`)."""

from __future__ import annotations

import math
import sys

import vtk

from AttentionSegLib.slicer.charts import number_or_nan

__all__ = ["TrainingCurves"]


# Series colours (RGB 0-1): loss in black, mean Dice in red, labels from a qualitative palette.
_LOSS_COLOR = (0.1, 0.1, 0.1)
_MEAN_DICE_COLOR = (0.84, 0.15, 0.16)
_LABEL_COLORS = (
    (0.12, 0.47, 0.71),
    (0.17, 0.63, 0.17),
    (1.0, 0.5, 0.05),
    (0.58, 0.4, 0.74),
    (0.55, 0.34, 0.29),
    (0.89, 0.47, 0.76),
    (0.5, 0.5, 0.5),
    (0.74, 0.74, 0.13),
    (0.09, 0.75, 0.81),
)


class TrainingCurves:
    """Loss and validation Dice per epoch in MRML: one table node (columns ``epoch``, ``loss``,
    ``lr``, then ``Dice <label>`` per label and ``mean Dice``), one plot series node per curve
    (loss, each Dice) and one chart node holding them. Epochs without validation have NaN Dice.

    An epoch reported again (a resumed run repeats the epochs after its last checkpoint) replaces
    that epoch and every later one.
    """

    EPOCH, LOSS, LEARNING_RATE, MEAN_DICE = "epoch", "loss", "lr", "mean Dice"

    def __init__(self, scene, name: str) -> None:
        self.scene = scene
        self.table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} curves")
        self.chart_node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} chart")
        self.chart_node.SetTitle(f"Training: {name}")
        self.chart_node.SetXAxisTitle("epoch")
        self.chart_node.SetYAxisTitle("loss / Dice")
        self.series_nodes: dict[str, object] = {}
        self._columns: dict[str, vtk.vtkDoubleArray] = {}
        self._dice_columns: dict[str, str] = {}  # label value -> column name
        self._rows: dict[int, dict[str, float]] = {}
        for column in (self.EPOCH, self.LOSS, self.LEARNING_RATE):
            self._add_column(column)
        self._add_series(self.LOSS, _LOSS_COLOR, with_markers=False)

    @property
    def column_names(self) -> list[str]:
        return list(self._columns)

    @property
    def epochs(self) -> list[int]:
        return sorted(self._rows)

    def column(self, name: str) -> list[float]:
        """The column's values, one per epoch in order."""
        return [self._rows[epoch].get(name, math.nan) for epoch in self.epochs]

    def set_labels(self, labels: dict[str, str]) -> None:
        """Add a Dice column and curve per foreground label (value -> name), then the mean."""
        for value, name in sorted(labels.items(), key=lambda item: _label_order(item[0])):
            if str(value) != "0":
                self._dice_column(str(value), name)
        self._mean_dice_column()

    def add_epoch(self, event: dict) -> None:
        epoch = int(event["epoch"])
        for later in [e for e in self._rows if e >= epoch]:
            del self._rows[later]
        self._rows[epoch] = {self.EPOCH: float(epoch), self.LOSS: number_or_nan(event.get("loss"))}
        self._rows[epoch][self.LEARNING_RATE] = number_or_nan(event.get("lr"))
        self._refresh()

    def add_validation(self, event: dict) -> None:
        epoch = int(event["epoch"])
        row = self._rows.setdefault(epoch, {self.EPOCH: float(epoch)})
        for value, dice in sorted((event.get("dice") or {}).items(), key=lambda item: _label_order(item[0])):
            row[self._dice_column(str(value), f"label {value}")] = number_or_nan(dice)
        row[self._mean_dice_column()] = number_or_nan(event.get("mean_dice"))
        self._refresh()

    def _dice_column(self, value: str, name: str) -> str:
        if value not in self._dice_columns:
            title = f"Dice {name}"
            if title in self._columns:
                title = f"Dice {name} ({value})"
            self._dice_columns[value] = title
            self._add_column(title)
            self._add_series(title, _LABEL_COLORS[(len(self._dice_columns) - 1) % len(_LABEL_COLORS)])
        return self._dice_columns[value]

    def _mean_dice_column(self) -> str:
        if self.MEAN_DICE not in self._columns:
            self._add_column(self.MEAN_DICE)
            self._add_series(self.MEAN_DICE, _MEAN_DICE_COLOR)
        return self.MEAN_DICE

    def _add_column(self, name: str) -> None:
        column = vtk.vtkDoubleArray()
        column.SetName(name)
        column.SetNumberOfValues(len(self._rows))
        column.Fill(math.nan)
        self.table_node.AddColumn(column)
        self._columns[name] = column

    def _add_series(self, column: str, color: tuple[float, float, float], with_markers: bool = True) -> None:
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{self.table_node.GetName()} {column}")
        series.SetAndObserveTableNodeID(self.table_node.GetID())
        series.SetXColumnName(self.EPOCH)
        series.SetYColumnName(column)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetLineStyle(series.LineStyleSolid)
        # Markers keep validation points visible when validation skips epochs (NaN between them).
        series.SetMarkerStyle(series.MarkerStyleCircle if with_markers else series.MarkerStyleNone)
        series.SetColor(*color)
        self.chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
        self.series_nodes[column] = series

    def _refresh(self) -> None:
        epochs = self.epochs
        for name, column in self._columns.items():
            column.SetNumberOfValues(len(epochs))
            for row, epoch in enumerate(epochs):
                column.SetValue(row, self._rows[epoch].get(name, math.nan))
            column.Modified()
        self.table_node.GetTable().Modified()
        self.table_node.Modified()


def _label_order(value: str) -> tuple[int, str]:
    return (int(value), "") if str(value).isdigit() else (sys.maxsize, str(value))
