"""Reports of metrics: tables and CSV files take their columns from the one table of metric
columns, and their text stays as users and programs parse it."""

import numpy as np
import pytest

from AttentionSegLib.evaluation import batch
from AttentionSegLib.evaluation.metrics import LABEL_METRIC_KEYS, evaluate_label_maps
from AttentionSegLib.evaluation.report import (
    METRIC_COLUMNS,
    format_metrics_table,
    format_value,
    metric_pattern,
    metric_title,
    metrics_csv_text,
)

LABELS = {1: "liver", 2: "spleen", 3: "kidney"}


@pytest.fixture
def report():
    """liver found exactly, spleen missed, kidney a one-voxel false positive."""
    reference = np.zeros((4, 6, 6), np.uint8)
    reference[1:3, 1:4, 1:4] = 1
    reference[1:3, 4:6, 4:6] = 2
    prediction = reference.copy()
    prediction[prediction == 2] = 0
    prediction[0, 0, 0] = 3
    return evaluate_label_maps(prediction, reference, (2.0, 1.0, 1.0), LABELS)


@pytest.fixture
def model_report(report):
    """Two cases: ``report``'s, and one where liver and spleen are exact and kidney is absent."""
    exact = np.asarray([[[1, 2]]])
    rows = [
        {"case": "a", "seconds": 1.0, "labels": report["labels"]},
        {"case": "b", "seconds": 2.0, "labels": evaluate_label_maps(exact, exact, (1.0, 1.0, 1.0), LABELS)["labels"]},
    ]
    return batch.model_report(rows, LABELS)


def test_metric_columns_are_the_report_keys_with_titles_units_and_formats():
    assert tuple(key for key, _, _ in METRIC_COLUMNS) == LABEL_METRIC_KEYS
    assert [metric_title(key) for key in ("dice", "hd95_mm", "assd_mm", "nsd", "ref_ml", "pred_ml")] == [
        "Dice",
        "HD95 mm",
        "ASSD mm",
        "NSD",
        "Ref mL",
        "Pred mL",
    ]
    assert metric_pattern("dice") == "{:.4f}" and metric_pattern("hd95_mm") == "{:.2f}"
    assert [format_value(v, "{:.2f}") for v in (None, float("nan"), float("inf"), 1.234)] == ["-", "-", "inf", "1.23"]


def test_metrics_table_text(report):
    assert format_metrics_table(report).splitlines() == [
        "Label  Name      In            Dice     IoU   HD95 mm   ASSD mm     NSD  Ref mL  Pred mL",
        "----------------------------------------------------------------------------------------",
        "1      liver     both        1.0000  1.0000      0.00      0.00  1.0000    0.04     0.04",
        "2      spleen    reference   0.0000  0.0000       inf       inf  0.0000    0.02     0.00",
        "3      kidney    prediction  0.0000  0.0000       inf       inf  0.0000    0.00     0.00",
        "----------------------------------------------------------------------------------------",
        "mean   3 labels              0.3333  0.3333  0.00 (1)  0.00 (1)  0.3333                 ",
        "(n): the mean covers n labels; distances need the label in both maps.",
        "hd95_mm: 2 label(s) infinite (missing from one map), left out of the mean.",
        "hd_max_mm: 2 label(s) infinite (missing from one map), left out of the mean.",
        "assd_mm: 2 label(s) infinite (missing from one map), left out of the mean.",
    ]


def test_metrics_csv_has_every_metric_column_and_empty_cells_for_nan_and_inf(report):
    lines = metrics_csv_text(report).splitlines()
    assert lines[0] == "value,name,present_in," + ",".join(key for key, _, _ in METRIC_COLUMNS)
    assert lines[2] == "2,spleen,reference,0.0,0.0,,0.0,,,,0.0,0.016,0.0"
    assert lines[-1].startswith("mean,3 labels,,0.3333333333333333,")


def test_dataset_and_comparison_tables_text(model_report):
    assert batch.format_dataset_table(model_report).splitlines() == [
        "Label  Name    Cases                 Dice   HD95 mm   ASSD mm         NSD",
        "-------------------------------------------------------------------------",
        "1      liver       2      1.0000 ± 0.0000      0.00      0.00      1.0000",
        "2      spleen      2      0.5000 ± 0.5000  0.00 (1)  0.00 (1)      0.5000",
        "3      kidney      2  0.0000 ± 0.0000 (1)     - (0)     - (0)  0.0000 (1)",
        "mean Dice over labels: 0.5000; 2 cases, 1.50 s per case",
        "(n): the mean covers n cases (the label is missing from one map in the others)",
    ]
    comparison = {"cases": ["a", "b"], "models": {"unet": model_report}}
    assert batch.format_comparison_table(comparison).splitlines() == [
        "Model  Label           Dice   HD95 mm   ASSD mm  s/case",
        "-------------------------------------------------------",
        "unet   1 liver       1.0000      0.00      0.00    1.50",
        "unet   2 spleen      0.5000  0.00 (1)  0.00 (1)    1.50",
        "unet   3 kidney  0.0000 (1)     - (0)     - (0)    1.50",
        "2 case(s); means over cases",
    ]


def test_batch_csv_headers_and_the_chart_appear_whole(model_report, tmp_path):
    batch.write_dataset_csv(model_report, tmp_path / "dataset.csv")
    assert (tmp_path / "dataset.csv").read_text().splitlines()[0] == (
        "case,label,name,dice,iou,hd95_mm,assd_mm,nsd,ref_ml,pred_ml,seconds"
    )
    comparison = {"cases": ["a", "b"], "models": {"unet": model_report, "other": model_report}}
    batch.write_comparison_csv(comparison, tmp_path / "comparison.csv")
    assert (tmp_path / "comparison.csv").read_text().splitlines()[0] == (
        "model,label,name,cases,dice_mean,dice_std,hd95_mm_mean,hd95_mm_std,assd_mm_mean,assd_mm_std,"
        "nsd_mean,nsd_std,seconds_per_case"
    )
    batch.write_comparison_chart(comparison, tmp_path / "dice.png")
    assert (tmp_path / "dice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison.csv", "dataset.csv", "dice.png"]
