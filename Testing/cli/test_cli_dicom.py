"""The commands on DICOM: a series folder in, a DICOM SEG out (and as reference), through
``segment``, ``evaluate``, ``compare`` and a dataset definition; bad DICOM input gives one line."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from AttentionSegLib.data.phantoms import write_dicom_series
from AttentionSegLib.io.dicom_seg import read_dicom_seg
from AttentionSegLib.io.image import read_image
from AttentionSegLib.io.terminology import PRIVATE_SCHEME
from conftest import assert_bad_input, attentionseg

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dicom_case(trained_models, tmp_path_factory):
    """A held-out phantom case (oblique, anisotropic) as a DICOM series, with its NIfTI files."""
    from AttentionSegLib.inference.model_file import load_model_file

    dataset, (model, short) = trained_models
    case_id = load_model_file(model).training["val_cases"][0]
    image_path = dataset.parent / "imagesTr" / f"{case_id}_0000.nii.gz"
    label_path = dataset.parent / "labelsTr" / f"{case_id}.nii.gz"
    folder = tmp_path_factory.mktemp("dicom") / case_id
    # MR-like values (about -30..130) stored as integers of 0.01: the series holds the image to 0.005
    write_dicom_series(read_image(image_path), folder, modality="MR", rescale=(0.01, 0.0))
    return {
        "dataset": dataset,
        "model": model,
        "short": short,
        "image": image_path,
        "label": label_path,
        "series": folder,
    }


def test_a_series_in_gives_a_dicom_seg_out_with_the_labels_of_the_nifti_run(dicom_case, tmp_path):
    seg_path, nifti_out = tmp_path / "seg.dcm", tmp_path / "from_nifti.nii.gz"
    result = attentionseg("segment", dicom_case["series"], "--model", dicom_case["model"], "--out", seg_path)
    assert result.returncode == 0, result.stderr
    assert "wrote DICOM SEG" in result.stderr
    assert (
        attentionseg("segment", dicom_case["image"], "--model", dicom_case["model"], "--out", nifti_out).returncode == 0
    )
    series_image = read_image(dicom_case["series"])
    labels, names = read_dicom_seg(seg_path, onto=series_image)
    assert names == {1: "liver", 2: "spleen"}
    from_nifti = read_image(nifti_out)
    assert np.mean(labels.array == from_nifti.array) > 0.999  # the same image up to 0.005 per voxel
    assert set(np.unique(labels.array)) == {0, 1, 2}
    seg = hd.seg.segread(seg_path)
    liver, spleen = seg.SegmentSequence
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # from dataset.json's terminology
    assert spleen.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == PRIVATE_SCHEME
    assert liver.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = liver.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName.startswith("AttentionSeg unet") and "sha256:" in algorithm.AlgorithmVersion
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == read_dicom_uid(dicom_case["series"])


def read_dicom_uid(folder: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID)


def test_dicom_seg_beside_a_label_image_and_as_reference_to_evaluate_and_segment(dicom_case, tmp_path):
    out, seg_path = tmp_path / "pred.seg.nrrd", tmp_path / "pred.dcm"
    result = attentionseg(
        "segment", dicom_case["series"], "--model", dicom_case["model"], "--out", out, "--dicom-seg", seg_path
    )
    assert result.returncode == 0, result.stderr
    prediction, series_image = read_image(out), read_image(dicom_case["series"])
    assert prediction.spatial_shape == series_image.spatial_shape
    np.testing.assert_allclose(prediction.origin, series_image.origin, atol=1e-4)
    np.testing.assert_allclose(prediction.direction, series_image.direction, atol=1e-6)
    # the .seg.nrrd carries the same codes for Slicer
    from AttentionSegLib.io.image import open_image_header

    header = open_image_header(out)
    assert "TerminologyEntry:" in header.GetMetaData("Segment0_Tags")
    assert "SCT^10200004^Liver" in header.GetMetaData("Segment0_Tags")
    # the SEG as a reference: the same labels, Dice 1 for both
    report = tmp_path / "r.json"
    result = attentionseg("evaluate", out, seg_path, "--labels", dicom_case["dataset"], "--json", report)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(report.read_text())["labels"]}
    assert rows["liver"]["dice"] == 1.0 and rows["spleen"]["dice"] == 1.0
    result = attentionseg(
        "segment",
        dicom_case["series"],
        "--model",
        dicom_case["model"],
        "--out",
        tmp_path / "again.nii.gz",
        "--ref",
        seg_path,
    )
    assert result.returncode == 0, result.stderr
    assert "1.0000" in result.stdout and "liver" in result.stdout


def test_compare_takes_a_series_and_a_seg_reference(dicom_case, tmp_path):
    seg_path = tmp_path / "ref.dcm"
    assert (
        attentionseg("segment", dicom_case["series"], "--model", dicom_case["model"], "--out", seg_path).returncode == 0
    )
    result = attentionseg(
        "compare",
        "--models",
        dicom_case["model"],
        dicom_case["short"],
        "--image",
        dicom_case["series"],
        "--ref",
        seg_path,
        "--report",
        tmp_path / "report",
    )
    assert result.returncode == 0, result.stderr
    comparison = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert comparison["models"]["good"]["mean_dice"] == pytest.approx(1.0)  # the model that wrote the reference
    assert comparison["models"]["short"]["mean_dice"] < 1.0


def test_a_dataset_of_series_folders_and_seg_labels_evaluates_like_its_nifti_twin(dicom_case, tmp_path):
    seg_path = tmp_path / "label.dcm"
    # the reference as a SEG: written from the NIfTI label map, on the series
    from AttentionSegLib.io.dicom_seg import write_dicom_seg
    from AttentionSegLib.io.dicom_series import read_dicom_series

    image, series = read_dicom_series(dicom_case["series"])
    label = read_image(dicom_case["label"])
    names = [{"value": 1, "name": "liver"}, {"value": 2, "name": "spleen"}]
    write_dicom_seg(image.with_array(label.array), series, seg_path, names, algorithm_name="ref", algorithm_version="1")
    for name, (image_entry, label_entry) in {
        "dicom": (str(dicom_case["series"]), str(seg_path)),
        "nifti": (str(dicom_case["image"]), str(dicom_case["label"])),
    }.items():
        definition = {
            "name": name,
            "modality": {"0": "MRI"},
            "labels": {"0": "background", "1": "liver", "2": "spleen"},
            "tensorImageSize": "3D",
            "training": [{"image": image_entry, "label": label_entry, "case_id": "case"}],
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(definition))
        assert attentionseg("dataset", "validate", tmp_path / f"{name}.json").returncode == 0
        result = attentionseg(
            "evaluate-dataset",
            dicom_case["model"],
            tmp_path / f"{name}.json",
            "--split",
            "all",
            "--json",
            tmp_path / f"{name}_r.json",
        )
        assert result.returncode == 0, result.stderr
    dicom, nifti = (json.loads((tmp_path / f"{n}_r.json").read_text()) for n in ("dicom", "nifti"))
    for label in ("liver", "spleen"):
        a = next(r for r in dicom["cases"][0]["labels"] if r["name"] == label)
        b = next(r for r in nifti["cases"][0]["labels"] if r["name"] == label)
        assert a["dice"] == pytest.approx(b["dice"], abs=2e-3)
        assert a["ref_ml"] == pytest.approx(b["ref_ml"], rel=1e-6)


def test_bad_dicom_input_gives_one_line(dicom_case, tmp_path):
    model, series = dicom_case["model"], dicom_case["series"]
    assert_bad_input(
        attentionseg("segment", dicom_case["image"], "--model", model, "--out", tmp_path / "x.dcm"),
        "a DICOM SEG references a DICOM series",
        "is a file, not a series folder",
    )
    assert_bad_input(
        attentionseg(
            "segment", series, "--model", model, "--out", tmp_path / "a.dcm", "--dicom-seg", tmp_path / "b.dcm"
        ),
        "--out is already a DICOM SEG",
    )
    assert_bad_input(
        attentionseg("segment", series, "--model", model, "--dicom-seg", tmp_path / "b.nii.gz"),
        "a DICOM SEG file ends in .dcm",
    )
    two = tmp_path / "two"
    write_dicom_series(read_image(series), two / "a", description="first", modality="MR", rescale=(0.01, 0.0))
    write_dicom_series(read_image(series), two / "b", description="second", modality="MR", rescale=(0.01, 0.0))
    assert_bad_input(
        attentionseg("segment", two, "--model", model, "--out", tmp_path / "y.nii.gz"),
        "holds 2 DICOM series",
        "'first'",
        "'second'",
    )
    uid = read_dicom_uid(two / "a")
    assert (
        attentionseg("segment", two, "--series", uid, "--model", model, "--out", tmp_path / "y.nii.gz").returncode == 0
    )
    (tmp_path / "empty").mkdir()
    assert_bad_input(
        attentionseg("segment", tmp_path / "empty", "--model", model, "--out", tmp_path / "z.nii.gz"),
        "no DICOM image files",
    )
    assert_bad_input(
        attentionseg("evaluate", dicom_case["label"], next(series.iterdir())),
        "a single DICOM file; give the folder of its series",
    )
    assert not (tmp_path / "z.nii.gz").exists() and not (tmp_path / "x.dcm").exists()
