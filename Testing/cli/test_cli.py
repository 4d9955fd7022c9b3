"""The command line end to end: outputs equal the Python API; bad input is one line and exit code 2."""

import json
from pathlib import Path

import numpy as np
import pytest

from AttentionSegLib import __version__
from AttentionSegLib.evaluation.metrics import compute_label_metrics
from AttentionSegLib.io.image import Image, write_image
from conftest import assert_bad_input, attentionseg, oblique_direction

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def label_files(tmp_path, anisotropic_pair):
    prediction, reference, spacing = anisotropic_pair
    geometry = dict(spacing=tuple(reversed(spacing)), origin=(10.0, -5.0, 3.0), direction=oblique_direction())
    return (
        write_image(Image(prediction, **geometry), tmp_path / "pred.nrrd"),
        write_image(Image(reference, **geometry), tmp_path / "ref.nrrd"),
        (prediction, reference, spacing),
    )


def test_help_and_version():
    result = attentionseg("--help")
    assert result.returncode == 0 and "evaluate" in result.stdout and "dataset" in result.stdout
    assert attentionseg("--version").stdout.strip() == f"attentionseg {__version__}"
    assert attentionseg("evaluate", "--help").returncode == 0


def test_evaluate_json_and_csv_equal_python_api(tmp_path, label_files):
    prediction_path, reference_path, (prediction, reference, spacing) = label_files
    result = attentionseg(
        "evaluate", prediction_path, reference_path, "--json", tmp_path / "m.json", "--csv", tmp_path / "m.csv"
    )
    assert result.returncode == 0, result.stderr
    assert "HD95 mm" in result.stdout and "mean" in result.stdout
    report = json.loads((tmp_path / "m.json").read_text())
    expected = compute_label_metrics(prediction, reference, spacing)
    assert [row["value"] for row in report["labels"]] == [row["value"] for row in expected]
    for got, want in zip(report["labels"], expected):
        for key in ("dice", "iou", "hd95_mm", "hd_max_mm", "assd_mm", "nsd", "ref_ml", "pred_ml"):
            assert got[key] == pytest.approx(want[key], rel=1e-12), key
    assert set(report) >= {"labels", "mean", "n_labels_averaged"}
    csv_lines = (tmp_path / "m.csv").read_text().splitlines()
    assert csv_lines[0].startswith("value,name,present_in,dice") and len(csv_lines) == len(expected) + 2


def test_evaluate_names_labels_from_dataset(tmp_path, label_files):
    prediction_path, reference_path, _ = label_files
    labels = {"background": 0, **{f"organ{v}": v for v in range(1, 6)}}
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels}))
    result = attentionseg("evaluate", prediction_path, reference_path, "--labels", tmp_path / "dataset.json")
    assert result.returncode == 0, result.stderr
    assert "organ3" in result.stdout


def test_bad_inputs_exit_2_with_one_line_and_change_no_file(tmp_path, label_files):
    prediction_path, reference_path, (prediction, reference, _) = label_files
    report = tmp_path / "report.json"
    report.write_text("keep me")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8bnot really gzip")
    other_grid = write_image(Image(prediction, spacing=(1.0, 1.0, 1.0)), tmp_path / "other.nrrd")
    flat = write_image(Image(prediction[3]), tmp_path / "flat.nrrd")
    labels_json = tmp_path / "dataset.json"
    labels_json.write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}}))
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}

    assert_bad_input(
        attentionseg("evaluate", tmp_path / "nope.nii.gz", reference_path, "--json", report, "--overwrite"),
        "nope.nii.gz",
        "not found",
    )
    assert_bad_input(
        attentionseg("evaluate", corrupt, reference_path, "--json", report, "--overwrite"), "corrupt.nii.gz"
    )
    assert_bad_input(
        attentionseg("evaluate", other_grid, reference_path, "--json", report, "--overwrite"), "different voxel grids"
    )
    assert_bad_input(attentionseg("evaluate", flat, reference_path, "--json", report, "--overwrite"), "2D", "3D")
    assert_bad_input(
        attentionseg(
            "evaluate", prediction_path, reference_path, "--labels", labels_json, "--json", report, "--overwrite"
        ),
        "not declared",
    )
    assert_bad_input(
        attentionseg("evaluate", prediction_path, reference_path, "--json", reference_path), "overwrite an input"
    )
    assert_bad_input(
        attentionseg("evaluate", prediction_path, reference_path, "--json", report), "file exists", "--overwrite"
    )
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_resample_puts_prediction_on_reference_grid(tmp_path):
    reference = np.zeros((10, 20, 20), np.uint8)
    reference[2:8, 5:15, 5:15] = 1
    fine = np.repeat(reference, 2, axis=0)  # same field of view, half the slice thickness
    reference_path = write_image(Image(reference, spacing=(1.0, 1.0, 2.0), origin=(0, 0, 0.5)), tmp_path / "ref.nii.gz")
    prediction_path = write_image(Image(fine, spacing=(1.0, 1.0, 1.0)), tmp_path / "pred.nii.gz")
    assert attentionseg("evaluate", prediction_path, reference_path).returncode == 2
    result = attentionseg("evaluate", prediction_path, reference_path, "--resample", "--json", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "m.json").read_text())["labels"][0]["dice"] == pytest.approx(1.0)


def test_dataset_validate_exit_codes(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    write_image(Image(np.zeros((4, 4, 4), np.float32)), tmp_path / "imagesTr" / "a_0000.nii.gz")
    write_image(Image(np.full((4, 4, 4), 3, np.uint8)), tmp_path / "labelsTr" / "a.nii.gz")
    (tmp_path / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1}})
    )
    result = attentionseg("dataset", "validate", tmp_path / "dataset.json")
    assert result.returncode == 1 and "label values 3" in result.stdout
    assert_bad_input(attentionseg("dataset", "validate", tmp_path / "missing.json"), "missing.json")


def test_models_lists_every_network_with_its_figures():
    result = attentionseg("models", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    names = [entry["name"] for entry in listing["models"]]
    assert sorted(names) == sorted(
        [
            "axunet",
            "iacnn",
            "danie",
            "swinnext",
            "unetrpp",
            "unet",
            "attention_unet",
            "unetr",
            "swin_unetr",
            "segresnet",
            "dynunet",
            "mednext",
        ]
    )
    unetrpp = next(entry for entry in listing["models"] if entry["name"] == "unetrpp")
    assert unetrpp["patch_multiple"]["3"] == [16, 32, 32] and unetrpp["deep_supervision"] is True
    assert abs(unetrpp["parameters"] - 42.96e6) / 42.96e6 < 0.01
    assert unetrpp["recipe"]["optimizer"] == "sgd"
    assert "unetrpp_synapse" in [preset["name"] for preset in listing["presets"]]


def test_models_table_names_networks_constraints_and_presets(capsys):
    from AttentionSegLib.cli import main

    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "unetrpp_synapse" in table and "swin_unetr" in table
    unetrpp_row = next(line for line in table.splitlines() if line.startswith("unetrpp "))
    assert "64x128x128" in unetrpp_row and "3D:16x32x32" in unetrpp_row and "42.95M" in unetrpp_row
