"""`segment`, `evaluate-dataset`, `compare` and `demo` end to end with model files the trainer
wrote: outputs on the input grid, numbers that agree across commands, and bad input as one line
with exit code 2 and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from AttentionSegLib.evaluation.metrics import evaluate_label_maps
from AttentionSegLib.io.image import Image, read_image, write_image
from AttentionSegLib.io.label_map import read_label_image
from conftest import assert_bad_input, attentionseg

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(trained_models):
    return trained_models


def case_files(dataset: Path, case_id: str) -> tuple[Path, Path]:
    return dataset.parent / "imagesTr" / f"{case_id}_0000.nii.gz", dataset.parent / "labelsTr" / f"{case_id}.nii.gz"


def held_out(model: Path) -> list[str]:
    from AttentionSegLib.inference.model_file import load_model_file

    return load_model_file(model).training["val_cases"]


def test_segment_writes_labels_on_the_input_grid_and_metrics_agree_with_evaluate(trained, tmp_path):
    dataset, (model, _) = trained
    image_path, reference_path = case_files(dataset, held_out(model)[0])
    out = tmp_path / "pred.nii.gz"
    result = attentionseg(
        "segment", image_path, "--model", model, "--out", out, "--ref", reference_path, "--json", tmp_path / "r.json"
    )
    assert result.returncode == 0, result.stderr
    assert "liver" in result.stdout and "HD95 mm" in result.stdout
    prediction, image = read_image(out), read_image(image_path)
    assert prediction.spatial_shape == image.spatial_shape
    np.testing.assert_allclose(prediction.spacing, image.spacing, rtol=1e-6)
    np.testing.assert_allclose(prediction.origin, image.origin, atol=1e-4)
    np.testing.assert_allclose(prediction.direction, image.direction, atol=1e-6)
    report = json.loads((tmp_path / "r.json").read_text())
    reference = read_label_image(reference_path)
    expected = evaluate_label_maps(
        prediction.array, reference.array, reference.spacing_array_order, {1: "liver", 2: "spleen"}
    )
    for got, want in zip(report["metrics"]["labels"], expected["labels"]):
        assert got["dice"] == pytest.approx(want["dice"], abs=1e-12)
    # Twenty short epochs learn the small, blurred phantoms only partly (about 0.45); a broken
    # pipeline (a flipped axis, lost geometry, wrong labels) gives about 0.
    assert report["metrics"]["mean"]["dice"] > 0.3
    evaluated = attentionseg("evaluate", out, reference_path, "--json", tmp_path / "e.json")
    assert evaluated.returncode == 0, evaluated.stderr
    dice = [row["dice"] for row in json.loads((tmp_path / "e.json").read_text())["labels"]]
    assert dice == pytest.approx([row["dice"] for row in report["metrics"]["labels"]], abs=1e-12)

    slicer_file = tmp_path / "pred.seg.nrrd"
    assert attentionseg("segment", image_path, "--model", model, "--out", slicer_file, "--tta").returncode == 0
    from AttentionSegLib.io.segmentation_file import read_segment_names

    assert read_segment_names(slicer_file) == {1: "liver", 2: "spleen"}


def test_segment_refuses_bad_input_with_one_line_and_writes_nothing(trained, tmp_path):
    dataset, (model, _) = trained
    image_path, _ = case_files(dataset, "phantom_000")
    out = tmp_path / "pred.nii.gz"
    assert_bad_input(attentionseg("segment", image_path, "--model", tmp_path / "none.pt", "--out", out), "not found")
    foreign = tmp_path / "foreign.pt"
    foreign.write_text("not a model")
    assert_bad_input(attentionseg("segment", image_path, "--model", foreign, "--out", out), "foreign.pt")
    assert_bad_input(
        attentionseg("segment", image_path, image_path, "--model", model, "--out", out),
        "2 channel(s), the model takes 1 (MRI)",
    )
    flat = write_image(Image(np.zeros((24, 24), np.float32)), tmp_path / "flat.nrrd")
    assert_bad_input(attentionseg("segment", flat, "--model", model, "--out", out), "2D image", "3D")
    assert_bad_input(attentionseg("segment", image_path, "--model", model, "--out", tmp_path / "x.txt"), "ending")
    assert not out.exists()
    out.write_bytes(b"precious")
    assert_bad_input(attentionseg("segment", image_path, "--model", model, "--out", out), "exists", "--overwrite")
    assert out.read_bytes() == b"precious"


def test_evaluate_dataset_runs_the_held_out_cases_and_agrees_with_segment(trained, tmp_path):
    dataset, (model, _) = trained
    result = attentionseg(
        "evaluate-dataset", model, dataset, "--json", tmp_path / "d.json", "--csv", tmp_path / "d.csv"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "d.json").read_text())
    cases = held_out(model)
    assert [row["case"] for row in report["cases"]] == cases and report["split"] == "heldout"
    assert [entry["name"] for entry in report["per_label"]] == ["liver", "spleen"]
    first = report["cases"][0]
    image_path, reference_path = case_files(dataset, first["case"])
    segmented = attentionseg(
        "segment", image_path, "--model", model, "--out", tmp_path / "p.nrrd", "--ref", reference_path,
        "--json", tmp_path / "s.json",
    )  # fmt: skip
    assert segmented.returncode == 0, segmented.stderr
    single = json.loads((tmp_path / "s.json").read_text())["metrics"]["labels"]
    assert [row["dice"] for row in first["labels"]] == pytest.approx([row["dice"] for row in single], abs=1e-12)
    mean_dice = np.mean([[row["dice"] for row in case["labels"]] for case in report["cases"]], axis=0)
    assert [entry["dice_mean"] for entry in report["per_label"]] == pytest.approx(mean_dice.tolist())
    csv_lines = (tmp_path / "d.csv").read_text().splitlines()
    assert csv_lines[0].startswith("case,label,name,dice") and len(csv_lines) == 1 + 2 * len(cases) + 2

    everything = attentionseg("evaluate-dataset", model, dataset, "--split", "all")
    assert everything.returncode == 0 and "trained on" in everything.stderr  # optimistic cases are flagged
    assert_bad_input(attentionseg("evaluate-dataset", model, dataset, "--split", "fold:9"), "fold")


def test_compare_writes_table_csv_json_and_chart(trained, tmp_path):
    dataset, (good, short) = trained
    report_dir = tmp_path / "report"
    result = attentionseg(
        "compare", "--models", good, short, "--dataset", dataset, "--split", "fold:0", "--report", report_dir
    )
    assert result.returncode == 0, result.stderr
    assert "good" in result.stdout and "short" in result.stdout and "Dice" in result.stdout
    comparison = json.loads((report_dir / "comparison.json").read_text())
    assert list(comparison["models"]) == ["good", "short"] and comparison["cases"] == held_out(good)
    csv_lines = (report_dir / "comparison.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 2 * 2
    assert (report_dir / "dice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same numbers as evaluate-dataset for each model.
    single = attentionseg("evaluate-dataset", good, dataset, "--split", "fold:0", "--json", tmp_path / "g.json")
    assert single.returncode == 0, single.stderr
    expected = [entry["dice_mean"] for entry in json.loads((tmp_path / "g.json").read_text())["per_label"]]
    assert [entry["dice_mean"] for entry in comparison["models"]["good"]["per_label"]] == pytest.approx(expected)
    # Paired statistics: one pair x 2 labels x (Dice, HD95), Holm over the report; the per-case table.
    pairwise = comparison["statistics"]["pairwise"]
    assert len(pairwise) == 4 and {row["metric"] for row in pairwise} == {"dice", "hd95_mm"}
    assert all(row["n"] == len(held_out(good)) for row in pairwise if row["metric"] == "dice")
    ranking = comparison["statistics"]["ranking"]["dice"]["overall"]["mean_rank"]
    assert set(ranking) == {"good", "short"} and sum(ranking.values()) == pytest.approx(3.0)
    case_lines = (report_dir / "cases.csv").read_text().splitlines()
    assert case_lines[0].startswith("case,label,name,model,dice") and len(case_lines) == 1 + 2 * 2 * len(held_out(good))
    page = (report_dir / "report.html").read_text()
    for text in ("good", "short", "liver", "spleen", "Pairwise differences", "Ranking by dice", "Worst cases"):
        assert text in page, text
    assert page.count("data:image/png;base64,") >= 2 + 2  # box plots and thumbnails, embedded
    assert "time: inference and metrics" in result.stderr
    rerun = attentionseg(
        "compare", "--models", good, short, "--dataset", dataset, "--split", "fold:0", "--report", report_dir,
        "--overwrite",
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((report_dir / "comparison.json").read_text())["statistics"] == comparison["statistics"]

    image_path, reference_path = case_files(dataset, "phantom_001")
    one = attentionseg(
        "compare", "--models", good, short, "--image", image_path, "--ref", reference_path, "--report", tmp_path / "one"
    )
    assert one.returncode == 0, one.stderr
    # One case: its maps too, on the case's grid.
    reference = read_image(reference_path)
    errors = read_image(tmp_path / "one" / "errors_good_liver.seg.nrrd")
    assert errors.spatial_shape == reference.spatial_shape
    np.testing.assert_allclose(errors.direction, reference.direction, atol=1e-6)
    for name in ("consensus_majority.seg.nrrd", "consensus_staple.seg.nrrd", "agreement.seg.nrrd"):
        assert read_image(tmp_path / "one" / name).spatial_shape == reference.spatial_shape
    consensus = json.loads((tmp_path / "one" / "consensus_metrics.json").read_text())
    assert set(consensus) == {"majority", "staple"} and [r["name"] for r in consensus["majority"]["labels"]] == [
        "liver",
        "spleen",
    ]
    regions = json.loads((tmp_path / "one" / "disagreement.json").read_text())["regions"]
    assert all(len(region["ras"]) == 3 for region in regions)
    sizes = [region["voxels"] for region in regions]
    assert sizes == sorted(sizes, reverse=True)
    again = attentionseg("compare", "--models", good, "--dataset", dataset, "--report", report_dir)
    assert_bad_input(again, "exists", "--overwrite")
    assert_bad_input(
        attentionseg("compare", "--models", good, "--image", image_path, "--report", tmp_path / "x"), "--ref"
    )


def test_demo_trains_segments_and_evaluates_a_held_out_case(tmp_path):
    out = tmp_path / "demo"
    # A fixed number of epochs (not a time budget): a busy machine trains as much as an idle one.
    result = attentionseg("demo", "--out", out, "--minutes", "5", "--epochs", "12", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "liver" in result.stdout and "4/4" in result.stdout
    report = json.loads((out / "metrics.json").read_text())
    # 12 epochs gave mean Dice 0.29, 0.34 and 0.37 in three runs (CPU threads make training vary a
    # little); one epoch gives 0.14. 0.22 tells a trained model from an untrained one.
    assert report["n_labels_averaged"] == 3 and report["mean"]["dice"] > 0.22
    segmentation = next(out.glob("*_segmentation.nii.gz"))
    case_id = segmentation.name.replace("_segmentation.nii.gz", "")
    image = read_image(out / "dataset" / "imagesTr" / f"{case_id}_0000.nii.gz")
    labels = read_image(segmentation)
    assert labels.spatial_shape == image.spatial_shape
    np.testing.assert_allclose(labels.direction, image.direction, atol=1e-6)
    assert abs(np.linalg.det(image.direction[:2, :2]) - 1) < 1e-6 and image.direction[0, 1] != 0  # oblique
    assert (out / "run" / "model.pt").is_file() and (out / "metrics.csv").is_file()
    again = attentionseg("demo", "--out", out, "--minutes", "5", "--epochs", "1", "--device", "cpu")
    assert again.returncode == 0  # its own folder: the earlier outputs are replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    assert_bad_input(attentionseg("demo", "--out", foreign), "not made by the demo")
    assert [p.name for p in foreign.iterdir()] == ["thesis.docx"]
