"""Metric reports: the printed table, JSON and CSV, written atomically (:mod:`AttentionSegLib.io.atomic`).

:data:`METRIC_COLUMNS` is the one table of per-label metric columns (report key, title, unit):
the printed tables here and in :mod:`AttentionSegLib.evaluation.batch`, the CSV files and the
Slicer module's table take their columns, titles and number formats from it.

JSON and CSV write NaN and infinity as ``null`` / empty cells; the ``present_in`` column of each
label says why a value is missing (see :mod:`AttentionSegLib.evaluation.metrics`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from AttentionSegLib.evaluation.metrics import AVERAGED_KEYS, LABEL_METRIC_KEYS
from AttentionSegLib.io.atomic import write_text_atomic

__all__ = [
    "METRIC_COLUMNS",
    "TABLE_METRIC_KEYS",
    "metric_title",
    "metric_pattern",
    "format_value",
    "fixed_width_table",
    "metrics_table_cells",
    "format_metrics_table",
    "format_models_table",
    "metrics_to_json",
    "metrics_csv_text",
    "write_metrics_csv",
    "json_safe",
]

# (report key, table column title, unit)
METRIC_COLUMNS = (
    ("dice", "Dice", ""),
    ("iou", "IoU", ""),
    ("precision", "Precision", ""),
    ("sensitivity", "Sensitivity", ""),
    ("hd95_mm", "HD95", "mm"),
    ("hd_max_mm", "HD max", "mm"),
    ("assd_mm", "ASSD", "mm"),
    ("nsd", "NSD", ""),
    ("ref_ml", "Reference volume", "mL"),
    ("pred_ml", "Predicted volume", "mL"),
)
assert tuple(key for key, _, _ in METRIC_COLUMNS) == LABEL_METRIC_KEYS

# The columns a terminal table has room for (and the per-case dataset CSV keeps).
TABLE_METRIC_KEYS = ("dice", "iou", "hd95_mm", "assd_mm", "nsd", "ref_ml", "pred_ml")
# Narrow titles for the terminal, where the full ones would double a column's width.
_SHORT_TITLES = {"ref_ml": "Ref", "pred_ml": "Pred"}
_COLUMNS = {key: (title, unit) for key, title, unit in METRIC_COLUMNS}


def metric_title(key: str) -> str:
    """A metric's terminal column title with its unit: ``"Dice"``, ``"HD95 mm"``, ``"Ref mL"``."""
    title, unit = _COLUMNS[key]
    title = _SHORT_TITLES.get(key, title)
    return f"{title} {unit}" if unit else title


def metric_pattern(key: str) -> str:
    """A metric's number format: 2 decimals for millimetres and millilitres, 4 for fractions."""
    return "{:.2f}" if _COLUMNS[key][1] else "{:.4f}"


def format_value(value, pattern: str) -> str:
    """One table cell: ``-`` for a missing (None or NaN) value, ``inf`` for an infinite one."""
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return pattern.format(value)


def fixed_width_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], n_left: int, footer: Sequence[Sequence[str]] = ()
) -> str:
    """Columns padded to their widest cell, the first ``n_left`` left-aligned and the rest
    right-aligned; a rule under the header, and another above the ``footer`` rows when given."""
    widths = [max(len(row[i]) for row in [header, *rows, *footer]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < n_left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(header))
    lines = [line(header), rule, *[line(row) for row in rows]]
    if footer:
        lines += [rule, *[line(row) for row in footer]]
    return "\n".join(lines)


def json_safe(value):
    """NaN and infinities become ``None``; containers are converted recursively."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return json_safe(value.item())
    return value


def metrics_table_cells(report: dict) -> tuple[list[str], list[str], list[list[str]], list[str], list[str]]:
    """The cells of a metrics table, one implementation for every front end that shows one (the
    terminal's :func:`format_metrics_table`, the web page): ``(keys, titles, rows, mean_row, notes)``.
    ``keys`` name the columns (``value``, ``name``, ``present_in`` then :data:`TABLE_METRIC_KEYS`),
    ``titles`` are their headers with units; ``rows`` one list of cells per label, ``mean_row`` the
    means (with ``(n)`` where a mean covers fewer labels), ``notes`` what those marks mean."""
    keys = ["value", "name", "present_in", *TABLE_METRIC_KEYS]
    titles = ["Label", "Name", "In", *[metric_title(key) for key in TABLE_METRIC_KEYS]]
    rows = [
        [str(row["value"]), row["name"], row["present_in"]]
        + [format_value(row[key], metric_pattern(key)) for key in TABLE_METRIC_KEYS]
        for row in report["labels"]
    ]
    n_total = report["n_labels_averaged"]
    mean_row = ["mean", f"{n_total} labels", ""]
    for key in TABLE_METRIC_KEYS:
        if key in AVERAGED_KEYS:
            n = report["n_averaged"][key]
            mean_row.append(
                format_value(report["mean"][key], metric_pattern(key)) + ("" if n == n_total else f" ({n})")
            )
        else:
            mean_row.append("")
    notes = []
    if any(report["n_averaged"][k] != n_total for k in AVERAGED_KEYS):
        notes.append("(n): the mean covers n labels; distances need the label in both maps.")
    for key, n in report.get("n_infinite", {}).items():
        notes.append(f"{key}: {n} label(s) infinite (missing from one map), left out of the mean.")
    return keys, titles, rows, mean_row, notes


def format_metrics_table(report: dict) -> str:
    """A fixed-width table: one row per label, then the means with the number of labels each covers."""
    _, titles, rows, mean_row, notes = metrics_table_cells(report)
    return "\n".join([fixed_width_table(titles, rows, 3, footer=[mean_row]), *notes])


def format_models_table(models: list[dict], presets: list) -> str:
    """The ``attentionseg models`` listing: one line per network, its recipe, then the presets."""

    def patch(entry: dict, dims: str) -> str:
        size = entry["default_patch_size"].get(dims)
        return "x".join(map(str, size)) if size else "-"

    def multiple(entry: dict) -> str:
        return " ".join(f"{dims}D:" + "x".join(map(str, m)) for dims, m in entry["patch_multiple"].items())

    header = f"{'name':<15} {'dims':<5} {'patch 3D':<12} {'patch 2D':<9} {'multiple of':<20} {'params':>8}  DS  clin"
    lines = [header, "-" * len(header)]
    for entry in models:
        dims = ",".join(map(str, entry["spatial_dims"]))
        lines.append(
            f"{entry['name']:<15} {dims:<5} {patch(entry, '3'):<12} {patch(entry, '2'):<9} {multiple(entry):<20} "
            f"{entry['parameters'] / 1e6:>7.2f}M  {'yes' if entry['deep_supervision'] else 'no ':<3} "
            f"{'yes' if entry['clinical_input'] else 'no'}"
        )
    lines += ["", "Descriptions and default recipes (parameters at the default configuration, see --json):"]
    for entry in models:
        recipe = entry["recipe"]
        lines.append(f"  {entry['name']}: {entry['description']}")
        if entry["paper"]:
            lines.append(f"      paper: {entry['paper']}")
        lines.append(
            f"      recipe ({recipe['source']}): {recipe['loss']}, {recipe['optimizer']} "
            f"lr {recipe['learning_rate']:g}, {recipe['schedule']} schedule, {recipe['epochs']} epochs, "
            f"batch {recipe['batch_size']}"
        )
    lines += ["", "Presets (published configurations):"]
    for preset in presets:
        size = "x".join(map(str, preset.patch_size))
        lines.append(
            f"  {preset.name}: {preset.model}, {preset.in_channels} -> {preset.out_channels} classes, "
            f"patch {size}; {preset.description}"
        )
    return "\n".join(lines)


def metrics_to_json(report: dict) -> str:
    """The report as indented JSON (NaN and infinity as ``null``), ending in a newline."""
    return json.dumps(json_safe(report), indent=2) + "\n"


def metrics_csv_text(report: dict) -> str:
    """One row per label with every metric of :data:`METRIC_COLUMNS`, then the ``mean`` row;
    NaN and infinity are empty cells."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ["value", "name", "present_in", *LABEL_METRIC_KEYS]
    writer.writerow(columns)
    for row in report["labels"]:
        writer.writerow(["" if json_safe(row[c]) is None else json_safe(row[c]) for c in columns])
    mean = report["mean"]
    writer.writerow(
        ["mean", f"{report['n_labels_averaged']} labels", ""]
        + ["" if json_safe(mean.get(k)) is None else json_safe(mean.get(k)) for k in LABEL_METRIC_KEYS]
    )
    return buffer.getvalue()


def write_metrics_csv(report: dict, path: str | os.PathLike) -> Path:
    """Write :func:`metrics_csv_text` to ``path`` atomically."""
    return write_text_atomic(path, metrics_csv_text(report))
