"""Models run over several cases: ``evaluate-dataset`` (one model, per case and per label) and
``compare`` (several models on the same cases, a model x label table and a bar chart).

Metrics are the foundation's (:func:`AttentionSegLib.evaluation.metrics.evaluate_label_maps`) on each
case's own grid and spacing, for the labels the model file names. Means over cases skip values
that cannot be computed (NaN: the label is in neither map; infinite distances: the label is
missing from one map) and say how many cases each mean covers.

Tables and CSV files take their metric columns, titles and number formats from
:data:`AttentionSegLib.evaluation.report.METRIC_COLUMNS`; files are written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from AttentionSegLib.data.dataset import DatasetDefinition
from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
from AttentionSegLib.data.splits import split_case_ids
from AttentionSegLib.errors import AttentionSegError, DatasetError
from AttentionSegLib.evaluation.metrics import dice_per_label, evaluate_label_maps
from AttentionSegLib.evaluation.report import (
    TABLE_METRIC_KEYS,
    fixed_width_table,
    format_value,
    metric_pattern,
    metric_title,
)
from AttentionSegLib.inference.predictor import Predictor
from AttentionSegLib.io.atomic import atomic_path, write_text_atomic
from AttentionSegLib.io.image import Image

__all__ = [
    "EvaluationCase",
    "dataset_cases",
    "evaluate_model",
    "compare_models",
    "pairwise_agreement",
    "format_dataset_table",
    "format_comparison_table",
    "write_dataset_csv",
    "write_comparison_csv",
    "write_case_csv",
    "write_comparison_chart",
    "MEAN_KEYS",
    "predict_and_measure",
    "ordered_images",
    "model_report",
]

# Metrics averaged over cases (mean, standard deviation and count per label).
MEAN_KEYS = ("dice", "hd95_mm", "assd_mm", "nsd")
# The comparison table's metric columns (the CSV has every MEAN_KEYS column).
_COMPARISON_TABLE_KEYS = ("dice", "hd95_mm", "assd_mm")


@dataclass
class EvaluationCase:
    """Images (one per channel, or one holding all), their channel names, and the reference."""

    case_id: str
    images: list[Image]
    channel_names: list[str]
    reference: Image | None


def dataset_cases(definition: DatasetDefinition, split: str, n_folds: int = 5, seed: int = 0) -> list[str]:
    """Case ids of ``split`` (all, test, fold:K or a named split) that have a reference label map."""
    ids = split_case_ids(definition, split, n_folds, seed)
    unlabeled = [case_id for case_id in ids if definition.case(case_id).label is None]
    if unlabeled:
        raise DatasetError(
            f"{definition.path}: split {split!r} has {len(unlabeled)} case(s) without a reference label map "
            f"(e.g. {unlabeled[0]}); metrics need references"
        )
    if not ids:
        raise DatasetError(f"{definition.path}: split {split!r} holds no cases")
    return list(ids)


def load_case(definition: DatasetDefinition, case_id: str) -> EvaluationCase:
    case = definition.case(case_id)
    image = read_case_image(case, definition)
    reference = image.with_array(read_case_label(case, definition, image), has_channels=False)
    return EvaluationCase(case_id, [image], list(definition.channel_names), reference)


def ordered_images(predictor: Predictor, case: EvaluationCase) -> list[Image]:
    """The case's channels in the model's order (matched by name when the names agree as sets)."""
    wanted = predictor.channel_names
    if not case.channel_names or case.channel_names == wanted or len(case.channel_names) != len(wanted):
        return case.images  # same order, or a count mismatch the predictor reports
    if sorted(case.channel_names) != sorted(wanted):
        raise AttentionSegError(f"case {case.case_id}: channels {case.channel_names} do not match the model's {wanted}")
    stacked = predictor.stack_channels(case.images)
    order = [case.channel_names.index(name) for name in wanted]
    return [stacked.with_array(stacked.array[order], has_channels=True)]


def _run_case(predictor: Predictor, case: EvaluationCase, labels: dict[int, str]) -> dict:
    return predict_and_measure(predictor, case, labels)[0]


def predict_and_measure(predictor: Predictor, case: EvaluationCase, labels: dict[int, str]) -> tuple[dict, np.ndarray]:
    """The case's row (metrics per label, seconds) and the predicted label array."""
    started = time.perf_counter()
    prediction = predictor.predict(ordered_images(predictor, case), names=[case.case_id])
    seconds = time.perf_counter() - started
    reference = case.reference
    report = evaluate_label_maps(prediction.label_image.array, reference.array, reference.spacing_array_order, labels)
    return {"case": case.case_id, "seconds": seconds, "labels": report["labels"]}, prediction.label_image.array


def model_report(rows: list[dict], labels: dict[int, str]) -> dict:
    """Per case rows, per-label means, the mean Dice over labels and seconds per case."""
    per_label = _summarise(rows, labels)
    dice = [entry["dice_mean"] for entry in per_label if math.isfinite(entry["dice_mean"])]
    return {
        "cases": rows,
        "per_label": per_label,
        "mean_dice": float(np.mean(dice)) if dice else math.nan,
        "seconds_per_case": float(np.mean([row["seconds"] for row in rows])),
    }


def _summarise(case_rows: list[dict], labels: dict[int, str]) -> list[dict]:
    """Per label: mean and standard deviation of each metric over the cases where it is finite."""
    summary = []
    for value, name in labels.items():
        rows = [row for case in case_rows for row in case["labels"] if row["value"] == value]
        entry: dict = {"value": value, "name": name, "n_cases": len(rows)}
        for key in MEAN_KEYS:
            values = np.asarray([row[key] for row in rows], dtype=np.float64)
            finite = values[np.isfinite(values)]
            entry[f"{key}_mean"] = float(finite.mean()) if finite.size else math.nan
            entry[f"{key}_std"] = float(finite.std()) if finite.size else math.nan
            entry[f"{key}_n"] = int(finite.size)
        summary.append(entry)
    return summary


def evaluate_model(
    predictor: Predictor,
    cases: Sequence[str],
    load: Callable[[str], EvaluationCase],
    on_case: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Run one model over ``cases`` (ids, read by ``load``); per case and per label metrics plus
    per-label means. ``on_case(done, total, row)`` is called after every case."""
    labels = predictor.model_file.label_names
    rows = []
    for index, case_id in enumerate(cases, start=1):
        rows.append(_run_case(predictor, load(case_id), labels))
        if on_case is not None:
            on_case(index, len(cases), rows[-1])
    return model_report(rows, labels)


def compare_models(
    predictors: dict[str, Predictor],
    cases: Sequence[str],
    load: Callable[[str], EvaluationCase],
    on_case: Callable[[str, int, int], None] | None = None,
    keep_worst: int = 0,
    on_prediction: Callable[[str, EvaluationCase, np.ndarray], None] | None = None,
) -> dict:
    """Every model on the same cases (each read once). Returns ``{"models": {name: {"per_label",
    "mean_dice", "seconds_per_case", "cases"}}, "cases": [...], "seconds": {...}}``; labels are
    matched by value. Each case row also holds its largest error region (``largest_error``:
    voxels, mL, an interior voxel). With ``keep_worst`` each model also keeps its ``keep_worst``
    lowest-Dice cases with the slice through their largest error (``"worst"``, for the report's
    thumbnails); ``seconds`` splits the time into inference and the error maps.
    ``on_prediction(model, case, label array)`` sees every prediction (the single-case maps)."""
    labels = {name: predictor.model_file.label_names for name, predictor in predictors.items()}
    results: dict[str, list[dict]] = {name: [] for name in predictors}
    worst: dict[str, list[dict]] = {name: [] for name in predictors}
    inference_s = maps_s = 0.0
    for index, case_id in enumerate(cases, start=1):
        case = load(case_id)
        for name, predictor in predictors.items():
            started = time.perf_counter()
            row, prediction = predict_and_measure(predictor, case, labels[name])
            measured = time.perf_counter()
            row["largest_error"] = largest_error(prediction, case.reference)
            if keep_worst:
                _keep_worst(worst[name], row, case, prediction, keep_worst)
            if on_prediction is not None:
                on_prediction(name, case, prediction)
            maps_s += time.perf_counter() - measured
            inference_s += measured - started
            results[name].append(row)
            if on_case is not None:
                on_case(name, index, len(cases))
    models = {name: model_report(results[name], labels[name]) for name in predictors}
    comparison = {"cases": list(cases), "models": models, "seconds": {"inference": inference_s, "error_maps": maps_s}}
    if keep_worst:
        comparison["worst"] = worst
    return comparison


def largest_error(prediction: np.ndarray, reference: Image) -> dict | None:
    """The largest connected region where the prediction differs from the reference
    (:func:`~AttentionSegLib.regions.connected_regions`), None when they agree."""
    from AttentionSegLib.regions import connected_regions

    regions = connected_regions(prediction != reference.array, reference.spacing_array_order, limit=1)
    return regions[0] if regions else None


def _case_dice(row: dict) -> float:
    values = [entry["dice"] for entry in row["labels"] if entry["dice"] is not None and math.isfinite(entry["dice"])]
    return float(np.mean(values)) if values else math.nan


def _keep_worst(kept: list[dict], row: dict, case: EvaluationCase, prediction: np.ndarray, limit: int) -> None:
    """Keep the ``limit`` lowest mean-Dice cases, each with the slice (the first array axis of a
    3D case) through its largest error: image, reference and prediction, and the slice's spacing."""
    dice = _case_dice(row)
    if math.isnan(dice) or (len(kept) >= limit and dice >= kept[-1]["dice"]):
        return
    image = case.images[0]
    pixels = image.array.mean(axis=0) if image.has_channels else image.array  # a grey thumbnail
    reference, error = case.reference, row["largest_error"]
    spacing = reference.spacing_array_order
    entry = {"case": row["case"], "dice": dice, "largest_error": error}
    if reference.spatial_dims == 3:
        k = error["index"][0] if error else reference.spatial_shape[0] // 2
        entry.update(slice=int(k), image=pixels[k], reference=reference.array[k], prediction=prediction[k])
        entry["spacing"] = tuple(spacing[1:])
    else:
        entry.update(slice=None, image=pixels, reference=reference.array, prediction=prediction, spacing=tuple(spacing))
    kept.append(entry)
    kept.sort(key=lambda each: each["dice"])
    del kept[limit:]


def pairwise_agreement(label_maps: dict[str, np.ndarray], labels: dict[int, str]) -> list[dict]:
    """Dice between every pair of models' label maps, per label (no reference needed).
    A label absent from both maps of a pair gives NaN."""
    names = list(label_maps)
    rows = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            dice = dice_per_label(label_maps[first], label_maps[second], labels)
            for value, name in labels.items():
                rows.append({"model_a": first, "model_b": second, "value": value, "name": name, "dice": dice[value]})
    return rows


# ------------------------------------------------------------------------------- reporting
def _mean_cell(entry: dict, key: str, with_std: bool = False) -> str:
    """A per-label mean over cases (``± std`` if asked); ``(n)`` when it covers fewer than all the cases."""
    pattern, n = metric_pattern(key), entry[f"{key}_n"]
    cell = format_value(entry[f"{key}_mean"], pattern)
    if with_std:
        cell += " ± " + format_value(entry[f"{key}_std"], pattern)
    return cell + ("" if n == entry["n_cases"] else f" ({n})")


def format_dataset_table(report: dict) -> str:
    """Per-label means (± standard deviation for Dice) over the cases; (n): cases the mean covers."""
    header = ["Label", "Name", "Cases", *[metric_title(key) for key in MEAN_KEYS]]
    rows = [
        [str(entry["value"]), entry["name"], str(entry["n_cases"])]
        + [_mean_cell(entry, key, with_std=key == "dice") for key in MEAN_KEYS]
        for entry in report["per_label"]
    ]
    text = fixed_width_table(header, rows, 2)
    text += f"\nmean Dice over labels: {format_value(report['mean_dice'], '{:.4f}')}; "
    text += f"{len(report['cases'])} cases, {report['seconds_per_case']:.2f} s per case"
    if any(entry[f"{key}_n"] != entry["n_cases"] for entry in report["per_label"] for key in MEAN_KEYS):
        text += "\n(n): the mean covers n cases (the label is missing from one map in the others)"
    return text


def format_comparison_table(comparison: dict) -> str:
    """One row per model and label: means over the cases and seconds per case."""
    header = ["Model", "Label", *[metric_title(key) for key in _COMPARISON_TABLE_KEYS], "s/case"]
    rows = [
        [model, f"{entry['value']} {entry['name']}"]
        + [_mean_cell(entry, key) for key in _COMPARISON_TABLE_KEYS]
        + [f"{result['seconds_per_case']:.2f}"]
        for model, result in comparison["models"].items()
        for entry in result["per_label"]
    ]
    return fixed_width_table(header, rows, 2) + f"\n{len(comparison['cases'])} case(s); means over cases"


def _csv_value(value) -> str:
    """A CSV cell of the batch reports: empty for NaN, ``inf`` for infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return "" if math.isnan(value) else "inf"
    return str(value)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_csv_value(v) for v in row] for row in rows])
    write_text_atomic(path, buffer.getvalue())


def write_dataset_csv(report: dict, path: Path) -> None:
    """One row per case and label, then one ``mean`` row per label."""
    keys = TABLE_METRIC_KEYS
    rows = []
    for case in report["cases"]:
        for row in case["labels"]:
            rows.append([case["case"], row["value"], row["name"], *[row[k] for k in keys], f"{case['seconds']:.3f}"])
    for entry in report["per_label"]:
        means = [entry.get(f"{k}_mean", math.nan) for k in keys]
        rows.append(["mean", entry["value"], entry["name"], *means, f"{report['seconds_per_case']:.3f}"])
    _write_csv(path, ["case", "label", "name", *keys, "seconds"], rows)


def write_case_csv(comparison: dict, path: Path) -> None:
    """One row per case, label and model: every metric of the case (the rows behind every mean)."""
    keys = TABLE_METRIC_KEYS
    rows = [
        [case["case"], row["value"], row["name"], model, *[row[k] for k in keys]]
        for model, result in comparison["models"].items()
        for case in result["cases"]
        for row in case["labels"]
    ]
    _write_csv(path, ["case", "label", "name", "model", *keys], rows)


def write_comparison_csv(comparison: dict, path: Path) -> None:
    """One row per model and label: cases, mean and standard deviation of each of MEAN_KEYS, seconds per case."""
    rows = []
    for model, result in comparison["models"].items():
        for entry in result["per_label"]:
            rows.append(
                [model, entry["value"], entry["name"], entry["n_cases"]]
                + [entry[f"{key}_{stat}"] for key in MEAN_KEYS for stat in ("mean", "std")]
                + [result["seconds_per_case"]]
            )
    header = ["model", "label", "name", "cases"] + [f"{key}_{stat}" for key in MEAN_KEYS for stat in ("mean", "std")]
    _write_csv(path, header + ["seconds_per_case"], rows)


def write_comparison_chart(comparison: dict, path: Path) -> None:
    """Grouped bars: mean Dice per label (x), one bar per model, error bars one standard deviation
    (:func:`~AttentionSegLib.evaluation.charts.dice_bar_chart_png`)."""
    from AttentionSegLib.evaluation.charts import dice_bar_chart_png

    dice, spread = {}, {}
    for model, result in comparison["models"].items():
        entries = {f"{e['value']} {e['name']}": e for e in result["per_label"]}
        dice[model] = {label: e["dice_mean"] for label, e in entries.items()}
        spread[model] = {label: e["dice_std"] for label, e in entries.items()}
    png = dice_bar_chart_png(dice, spread, y_label="Dice (mean over cases)")
    with atomic_path(path, suffix=".png") as temporary:
        temporary.write_bytes(png)
