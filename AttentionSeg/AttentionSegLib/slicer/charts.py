"""Table and bar-chart nodes for comparing models: metrics per model and label against a reference,
or Dice agreement between pairs of models."""

from __future__ import annotations

import math
from typing import Any

import slicer
import vtk

from AttentionSegLib.data.dataset import DEFAULT_LABEL_COLORS

__all__ = ["agreement_nodes", "bar_chart", "comparison_nodes", "number_or_nan", "pairwise_nodes"]


def number_or_nan(value: Any) -> float:
    """A table cell: None (undefined) becomes NaN; infinity stays."""
    return math.nan if value is None else float(value)


def comparison_nodes(scene, reports: dict[str, dict], seconds: dict[str, float]):
    """A "Model comparison" table (one row per model and label: Dice, HD95, ASSD, seconds) and a bar
    chart of Dice per label per model. ``reports``: model name -> metrics report against the same
    reference. Returns ``(table_node, chart_node, chart_table_node)``."""
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", "Model comparison")
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
                columns[title].InsertNextValue(number_or_nan(row[key]))
            columns["Seconds"].InsertNextValue(seconds[model])
    for column in columns.values():
        table_node.GetTable().AddColumn(column)
    labels = [(row["value"], row["name"]) for row in next(iter(reports.values()))["labels"]]
    dice = {
        model: {row["value"]: number_or_nan(row["dice"]) for row in report["labels"]}
        for model, report in reports.items()
    }
    chart, chart_table = bar_chart(scene, "Dice per label", labels, dice, "Dice")
    return table_node, chart, chart_table


def agreement_nodes(scene, rows: list[dict], labels: dict[int, str]):
    """A "Model agreement" table (Dice between two models per label, rows of
    :func:`~AttentionSegLib.evaluation.batch.pairwise_agreement`) and its bar chart. Returns
    ``(table_node, chart_node, chart_table_node)``."""
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", "Model agreement")
    titles = ("Model A", "Model B", "Label", "Name")
    columns = [vtk.vtkStringArray() for _ in titles] + [vtk.vtkDoubleArray()]
    for column, title in zip(columns, (*titles, "Dice")):
        column.SetName(title)
    series: dict[str, dict[int, float]] = {}
    for row in rows:
        for column, key in zip(columns, ("model_a", "model_b", "value", "name")):
            column.InsertNextValue(str(row[key]))
        columns[-1].InsertNextValue(number_or_nan(row["dice"]))
        series.setdefault(f"{row['model_a']} vs {row['model_b']}", {})[row["value"]] = number_or_nan(row["dice"])
    for column in columns:
        table_node.GetTable().AddColumn(column)
    chart, chart_table = bar_chart(scene, "Agreement per label", list(labels.items()), series, "Dice between models")
    return table_node, chart, chart_table


def bar_chart(scene, title: str, labels: list[tuple[int, str]], values: dict[str, dict[int, float]], y_title: str):
    """A table (label index, label name, one column per series) and a bar chart over it, one bar
    series per entry of ``values`` (series name -> label value -> number). Returns
    ``(chart_node, table_node)``."""
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{title} table")
    index, names = vtk.vtkDoubleArray(), vtk.vtkStringArray()
    index.SetName("Label index")
    names.SetName("Label")
    for position, (_, name) in enumerate(labels):
        index.InsertNextValue(position)
        names.InsertNextValue(name)
    table_node.GetTable().AddColumn(index)
    table_node.GetTable().AddColumn(names)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", title)
    chart.SetTitle(title)
    chart.SetXAxisTitle("label")
    chart.SetYAxisTitle(y_title)
    for position, (series_name, by_label) in enumerate(values.items()):
        column = vtk.vtkDoubleArray()
        column.SetName(series_name)
        for value, _ in labels:
            column.InsertNextValue(by_label.get(value, float("nan")))
        table_node.GetTable().AddColumn(column)
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", series_name)
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("Label index")
        series.SetYColumnName(series_name)
        series.SetLabelColumnName("Label")
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
        series.SetColor(*DEFAULT_LABEL_COLORS[position % len(DEFAULT_LABEL_COLORS)])
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart, table_node


def pairwise_nodes(scene, reports: dict[str, dict], case: str):
    """A "Pairwise differences" table: for every pair of models and label, the difference (first
    minus second) of Dice and HD95 against the reference on this case, and which model wins
    (:func:`~AttentionSegLib.evaluation.statistics.pairwise_statistics` over one case: intervals
    and p-values need several cases, ``attentionseg compare --dataset``)."""
    from AttentionSegLib.evaluation.statistics import pairwise_statistics

    per_case = {
        model: {int(row["value"]): {case: {"dice": row["dice"], "hd95_mm": row["hd95_mm"]}} for row in report["labels"]}
        for model, report in reports.items()
    }
    names = {int(row["value"]): row["name"] for report in reports.values() for row in report["labels"]}
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", "Pairwise differences")
    strings = {title: vtk.vtkStringArray() for title in ("First", "Second", "Label", "Metric", "Better")}
    difference = vtk.vtkDoubleArray()
    difference.SetName("Difference")
    for title, column in strings.items():
        column.SetName(title)
    for row in pairwise_statistics(per_case, n_bootstrap=1) if len(reports) > 1 else []:
        strings["First"].InsertNextValue(row["first"])
        strings["Second"].InsertNextValue(row["second"])
        strings["Label"].InsertNextValue(f"{row['label']} {names.get(row['label'], '')}")
        strings["Metric"].InsertNextValue("HD95 (mm)" if row["metric"] == "hd95_mm" else "Dice")
        better = row["first"] if row["wins_first"] else row["second"] if row["wins_second"] else "tie"
        strings["Better"].InsertNextValue(better if row["n"] else "n/a")
        difference.InsertNextValue(number_or_nan(row["mean_difference"]))
    for column in (*strings.values(), difference):
        table_node.GetTable().AddColumn(column)
    return table_node
