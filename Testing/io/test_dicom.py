"""DICOM series in and DICOM SEG in/out, checked against independent readers.

The series are written here from phantoms (pydicom, oblique and anisotropic, slices in scrambled
file order, per-slice rescale); the SEGs we write are read back by highdicom, by dcmqi's
``segimage2itkimage`` and validated by dicom3tools' ``dciodvfy``. CI installs both tools and sets
ATTENTIONSEG_REQUIRE_DICOM_TOOLS=1 so that nothing is skipped there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from AttentionSegLib.data.phantoms import ellipsoid_label_map, phantom_image, write_dicom_series
from AttentionSegLib.errors import AttentionSegError, GeometryMismatchError, ImageReadError, InputWarning
from AttentionSegLib.io.dicom_seg import read_dicom_seg, write_dicom_seg
from AttentionSegLib.io.dicom_series import read_dicom_series
from AttentionSegLib.io.image import Image, read_image
from AttentionSegLib.io.label_map import read_label_image
from AttentionSegLib.io.terminology import (
    PRIVATE_SCHEME,
    Code,
    SegmentTerminology,
    generic_terminology,
    parse_terminology_block,
)
from conftest import LIVER_TERMINOLOGY, oblique_direction

SHARED_DICOM = Path(__file__).resolve().parents[3] / "shared" / "data" / "dicom-dcmqi"
REQUIRE_TOOLS = os.environ.get("ATTENTIONSEG_REQUIRE_DICOM_TOOLS") == "1"
LABELS = [
    {"value": 1, "name": "liver", "color": [0.87, 0.51, 0.4]},
    {"value": 2, "name": "spleen", "color": [0.6, 0.2, 0.8]},
]
LIVER = SegmentTerminology(Code("SCT", "85756007", "Tissue"), Code("SCT", "10200004", "Liver"))


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        if REQUIRE_TOOLS:
            pytest.fail(f"{name} is required (ATTENTIONSEG_REQUIRE_DICOM_TOOLS=1) but not installed")
        pytest.skip(f"{name} not installed")
    return found


def _phantom(shape=(7, 20, 24), spacing=(0.7, 0.8, 2.5), seed=3) -> tuple[Image, np.ndarray]:
    """An oblique, anisotropic CT-like image (HU with fractions) and its label map."""
    label_map = ellipsoid_label_map(shape, 2, seed=seed, spacing_mm=spacing[::-1])
    hu = np.round(phantom_image(label_map, seed=seed) * 400.0 - 200.0, 1)
    image = Image(hu.astype(np.float64), spacing, (12.5, -30.0, 44.0), oblique_direction(25))
    return image, label_map


@pytest.fixture
def ct_series(tmp_path):
    image, label_map = _phantom()
    folder = tmp_path / "series"
    slopes = [(0.1, -1000.0)] * 4 + [(0.05, -1024.0)] * 3  # per-slice rescale, as some scanners write
    write_dicom_series(image, folder, rescale=slopes, description="oblique phantom")
    return folder, image, label_map


def test_a_series_is_read_in_hu_on_its_grid_whatever_the_file_order(ct_series):
    folder, image, _ = ct_series
    read = read_image(folder)
    assert read.spatial_shape == image.spatial_shape
    np.testing.assert_allclose(read.array, image.array, atol=0.026)  # stored at 0.05 HU steps at worst
    np.testing.assert_allclose(read.spacing, image.spacing, rtol=1e-6)
    np.testing.assert_allclose(read.origin, image.origin, atol=1e-5)
    np.testing.assert_allclose(read.direction, image.direction, atol=1e-7)
    # Independently: pydicom's modality LUT per file, slices ordered by position along the normal.
    files = sorted(folder.iterdir())
    datasets = [pydicom.dcmread(f) for f in files]
    normal = np.cross(*np.asarray(datasets[0].ImageOrientationPatient, dtype=float).reshape(2, 3))
    datasets.sort(key=lambda d: float(np.asarray(d.ImagePositionPatient, dtype=float) @ normal))
    expected = np.stack([pydicom.pixels.apply_modality_lut(d.pixel_array, d) for d in datasets])
    np.testing.assert_allclose(read.array, expected, atol=1e-4)


def test_the_series_geometry_places_voxels_where_the_headers_say(ct_series):
    folder, _, _ = ct_series
    read, series = read_dicom_series(folder)
    for k in (0, 3, 6):
        position = np.asarray(series.headers[k].ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(read.index_to_physical() @ [0, 0, k, 1], [*position, 1], atol=1e-4)
    one = series.headers[2]
    row, column = np.asarray(one.ImageOrientationPatient, dtype=float).reshape(2, 3)
    origin = np.asarray(one.ImagePositionPatient, dtype=float)
    # voxel (i=5, j=3) of slice 2: 5 steps along the row direction, 3 along the column direction
    expected = origin + 5 * row * float(one.PixelSpacing[1]) + 3 * column * float(one.PixelSpacing[0])
    np.testing.assert_allclose((read.index_to_physical() @ [5, 3, 2, 1])[:3], expected, atol=1e-4)


def test_two_series_in_one_folder_need_a_choice_and_the_error_lists_them(tmp_path):
    image, _ = _phantom()
    write_dicom_series(image, tmp_path / "mixed" / "a", description="axial 2.5mm", series_uid="1.2.826.0.1.1")
    write_dicom_series(image.with_array(image.array[:3]), tmp_path / "mixed" / "b", description="scout")
    with pytest.raises(ImageReadError) as error:
        read_image(tmp_path / "mixed")
    message = str(error.value)
    assert "\n" not in message and "holds 2 DICOM series" in message and "--series" in message
    assert "1.2.826.0.1.1 (CT, 'axial 2.5mm', 7 slices)" in message and "'scout', 3 slices" in message
    assert read_image(tmp_path / "mixed", series_uid="1.2.826.0.1.1").spatial_shape == (7, 20, 24)
    with pytest.raises(ImageReadError, match="no series with UID 9.9"):
        read_image(tmp_path / "mixed", series_uid="9.9")


def _positions(image: Image) -> np.ndarray:
    matrix = image.index_to_physical()
    return np.asarray([(matrix @ [0, 0, k, 1])[:3] for k in range(image.spatial_shape[0])])


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "1 slice(s) missing (gap of 5 mm"),
        ("irregular", "irregular slice spacing (0.5 to 3.5 mm)"),
        ("tilt", "gantry tilt of 11.3 degrees"),
        ("duplicate", "lie at the same position"),
        ("size", "slices of different sizes: 20x24 (6 files), 10x24 (1 files)"),
        ("orientation", "slices of different orientations"),
    ],
)
def test_series_that_are_not_one_regular_grid_are_refused_in_one_line(tmp_path, damage, message):
    image, _ = _phantom()
    positions = _positions(image)
    normal = image.direction[:, 2]
    folder = tmp_path / damage
    if damage == "missing":
        write_dicom_series(image, folder)
        next(p for p in folder.iterdir() if pydicom.dcmread(p).InstanceNumber == 4).unlink()
    elif damage == "irregular":
        positions[3:] += normal * 1.0
        positions[4:] -= normal * 2.0
        write_dicom_series(image, folder, positions=positions)
    elif damage == "tilt":
        step = image.direction[:, 1] * 0.5  # each slice shifted 0.5 mm along the columns: 0.5/2.5 = tan 11.3
        write_dicom_series(image, folder, positions=positions + np.arange(7)[:, None] * step)
    elif damage == "duplicate":
        positions[4] = positions[3]
        write_dicom_series(image, folder, positions=positions)
    else:
        write_dicom_series(image, folder)
        path = next(p for p in folder.iterdir() if pydicom.dcmread(p).InstanceNumber == 2)
        dataset = pydicom.dcmread(path)
        if damage == "size":
            dataset.Rows = 10
            dataset.PixelData = dataset.PixelData[: 10 * 24 * 2]
        else:
            dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        dataset.save_as(path)
    with pytest.raises(ImageReadError) as error:
        read_image(folder)
    assert message in str(error.value) and "\n" not in str(error.value) and str(folder) in str(error.value)


def test_slightly_irregular_slices_are_read_with_a_warning_that_says_what_was_done(tmp_path):
    image, _ = _phantom()
    positions = _positions(image)
    positions[3] += image.direction[:, 2] * 0.1  # 4 % of a 2.5 mm slice
    write_dicom_series(image, tmp_path / "s", positions=positions)
    with pytest.warns(
        InputWarning, match=r"slice spacing varies from 2\.4 to 2\.6 mm; read on a regular grid of 2\.5 mm"
    ):
        read = read_image(tmp_path / "s")
    np.testing.assert_allclose(read.spacing[2], 2.5, rtol=1e-6)


def test_folders_and_files_that_are_not_a_series_give_one_line(tmp_path, ct_series):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not DICOM")
    with pytest.raises(ImageReadError, match="no DICOM image files in this folder"):
        read_image(tmp_path / "empty")
    folder, _, _ = ct_series
    with pytest.raises(ImageReadError, match="a single DICOM file; give the folder of its series"):
        read_image(next(folder.iterdir()))


def _label_image_on(folder: Path) -> tuple[Image, object]:
    image, series = read_dicom_series(folder)
    labels = ellipsoid_label_map(image.spatial_shape, 2, seed=5, spacing_mm=image.spacing_array_order)
    labels[:, :2] = 0  # some empty frames, which the SEG leaves out
    return image.with_array(labels), series


def test_our_dicom_seg_is_read_back_by_highdicom_and_by_ourselves_onto_the_series(ct_series, tmp_path):
    import highdicom as hd

    folder, image, _ = ct_series
    labels, series = _label_image_on(folder)
    out = write_dicom_seg(
        labels,
        series,
        tmp_path / "seg.dcm",
        LABELS,
        {1: LIVER},
        algorithm_name="AttentionSeg unet",
        algorithm_version="9",
    )
    back, names = read_dicom_seg(out, onto=read_image(folder))
    assert names == {1: "liver", 2: "spleen"}
    np.testing.assert_array_equal(back.array, labels.array)
    seg = hd.seg.segread(out)
    assert seg.SegmentationType == "BINARY" and seg.number_of_frames < 2 * labels.spatial_shape[0]
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {h.SOPInstanceUID for h in series.headers}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    assert seg.FrameOfReferenceUID == series.headers[0].FrameOfReferenceUID
    liver, spleen = seg.SegmentSequence
    assert liver.SegmentLabel == "liver" and liver.SegmentAlgorithmType == "AUTOMATIC"
    assert liver.SegmentAlgorithmName == "AttentionSeg unet"
    assert (
        liver.SegmentedPropertyTypeCodeSequence[0].CodeValue,
        liver.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
    ) == ("10200004", "SCT")
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Tissue"
    # uncoded label: generic category and a private code whose meaning is the name
    assert spleen.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == PRIVATE_SCHEME
    assert spleen.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "spleen"
    assert spleen.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    rgb = hd.color.CIELabColor.from_dicom_value(liver.RecommendedDisplayCIELabValue).to_rgb()
    np.testing.assert_allclose(rgb, np.round(np.array(LABELS[0]["color"]) * 255), atol=2)


def test_dcmqi_reads_our_dicom_seg_to_the_same_labels_and_geometry(ct_series, tmp_path):
    segimage2itkimage = _tool("segimage2itkimage")
    folder, _, _ = ct_series
    labels, series = _label_image_on(folder)
    out = write_dicom_seg(
        labels, series, tmp_path / "seg.dcm", LABELS, {1: LIVER}, algorithm_name="a", algorithm_version="1"
    )
    (tmp_path / "dcmqi").mkdir()
    result = subprocess.run(
        [segimage2itkimage, "--inputDICOM", str(out), "--outputDirectory", str(tmp_path / "dcmqi"), "-t", "nrrd"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "dcmqi" / "meta.json").read_text())
    segments = {s["labelID"]: s for group in meta["segmentAttributes"] for s in group}
    assert (
        segments[1]["SegmentLabel"] == "liver"
        and segments[1]["SegmentedPropertyTypeCodeSequence"]["CodeValue"] == "10200004"
    )
    for number in (1, 2):
        written = sitk.ReadImage(str(tmp_path / "dcmqi" / f"{number}.nrrd"))
        # dcmqi crops to the segment's frames: compare in physical space, voxel by voxel
        mask = sitk.GetArrayFromImage(written) > 0
        np.testing.assert_allclose(written.GetSpacing(), labels.spacing, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(written.GetDirection()).reshape(3, 3), labels.direction, atol=1e-5)
        placed = sitk.Resample(written, labels.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(placed) > 0, labels.array == number)
        assert mask.sum() == (labels.array == number).sum()


def test_dciodvfy_finds_no_error_in_our_dicom_seg(ct_series, tmp_path):
    dciodvfy = _tool("dciodvfy")
    folder, _, _ = ct_series
    labels, series = _label_image_on(folder)
    out = write_dicom_seg(
        labels, series, tmp_path / "seg.dcm", LABELS, {1: LIVER}, algorithm_name="a", algorithm_version="1"
    )
    result = subprocess.run([dciodvfy, str(out)], capture_output=True, text=True, timeout=120)
    report = result.stdout + result.stderr
    assert "Segmentation" in report  # it recognised the IOD
    assert [line for line in report.splitlines() if line.startswith("Error")] == [], report


def test_a_seg_off_the_grid_or_with_overlapping_segments_is_refused(ct_series, tmp_path):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    folder, image, _ = ct_series
    labels, series = _label_image_on(folder)
    out = write_dicom_seg(labels, series, tmp_path / "seg.dcm", LABELS, {}, algorithm_name="a", algorithm_version="1")
    shifted = Image(image.array, image.spacing, tuple(np.asarray(image.origin) + 0.3), image.direction)
    with pytest.raises(GeometryMismatchError, match="do not lie on the image's voxel grid"):
        read_dicom_seg(out, onto=shifted)
    # on the series' grid cut to its first slices: labelled frames would fall outside it
    series_image = read_image(folder)
    first = series_image.with_array(series_image.array[:3])
    assert labels.array[3:].any()
    with pytest.raises(GeometryMismatchError, match="covers voxels outside the image's grid"):
        read_dicom_seg(out, onto=first)
    # on a grid two slices longer on each side: the same voxels, background around them
    matrix = series_image.index_to_physical()
    longer = Image(
        np.zeros((series_image.spatial_shape[0] + 4, *series_image.spatial_shape[1:])),
        series_image.spacing, tuple((matrix @ [0, 0, -2, 1])[:3]), series_image.direction,
    )  # fmt: skip
    placed, _ = read_dicom_seg(out, onto=longer)
    np.testing.assert_array_equal(placed.array[2:-2], labels.array)
    assert not placed.array[:2].any() and not placed.array[-2:].any()
    # two overlapping binary segments, written with highdicom directly
    masks = np.zeros((*labels.spatial_shape, 2), dtype=bool)
    masks[2:4, 5:10, 5:10, 0] = True
    masks[3:5, 8:12, 8:12, 1] = True
    description = [
        hd.seg.SegmentDescription(
            n, f"s{n}", codes.SCT.Tissue, codes.SCT.Organ, hd.seg.SegmentAlgorithmTypeValues.MANUAL
        )
        for n in (1, 2)
    ]
    overlapping = hd.seg.Segmentation(
        series.headers, masks, "BINARY", description, hd.UID(), 5, hd.UID(), 1, "x", "x", "1", "1"
    )
    overlapping.save_as(tmp_path / "overlap.dcm")
    with pytest.raises(ImageReadError, match="segments 1 and 2 overlap in 4 voxels"):
        read_dicom_seg(tmp_path / "overlap.dcm", onto=image)


def test_segments_map_to_label_values_by_name_when_names_are_given(ct_series, tmp_path):
    folder, _, _ = ct_series
    labels, series = _label_image_on(folder)
    out = write_dicom_seg(labels, series, tmp_path / "seg.dcm", LABELS, {}, algorithm_name="a", algorithm_version="1")
    swapped = read_label_image(out, onto=read_image(folder), label_names={1: "Spleen", 2: "LIVER"})
    np.testing.assert_array_equal(swapped.array == 2, labels.array == 1)
    np.testing.assert_array_equal(swapped.array == 1, labels.array == 2)


def test_writing_a_seg_refuses_a_label_image_off_the_series_grid_and_existing_files(ct_series, tmp_path):
    folder, _, _ = ct_series
    labels, series = _label_image_on(folder)
    cropped = labels.with_array(labels.array[:5])
    with pytest.raises(AttentionSegError, match="not on the grid of DICOM series"):
        write_dicom_seg(cropped, series, tmp_path / "a.dcm", LABELS, algorithm_name="a", algorithm_version="1")
    (tmp_path / "b.dcm").write_text("keep me")
    with pytest.raises(AttentionSegError, match="file exists"):
        write_dicom_seg(labels, series, tmp_path / "b.dcm", LABELS, algorithm_name="a", algorithm_version="1")
    assert (tmp_path / "b.dcm").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dcm", "series"]  # no stray temporary file


def test_terminology_blocks_take_dcmqi_and_short_keys_and_refuse_what_is_not_a_code():
    example = LIVER_TERMINOLOGY  # dcmqi key names, as conftest gives the phantom dataset
    short = {"category": ["SCT", "85756007", "Tissue"], "type": ["SCT", "10200004", "Liver"]}
    assert parse_terminology_block({"1": example, "2": short}, {0, 1, 2}, "d.json") == {1: LIVER, 2: LIVER}
    assert SegmentTerminology.from_dict(LIVER.to_dict()) == LIVER
    assert generic_terminology("left kidney", 3).type == Code(PRIVATE_SCHEME, "L3", "left kidney")
    for bad, message in [
        ({"5": short}, "not a declared foreground label"),
        ({"1": {"category": short["category"]}}, "no 'type' code"),
        ({"1": {**short, "type": ["SCT", "", "Liver"]}}, "must be non-empty"),
        ({"1": {**short, "type": "Liver"}}, "a code is"),
        ([short], "must map label values"),
    ]:
        with pytest.raises(AttentionSegError, match=message):
            parse_terminology_block(bad, {0, 1, 2}, "d.json")


@pytest.mark.skipif(not SHARED_DICOM.is_dir(), reason="../shared/data/dicom-dcmqi not present")
def test_the_real_ct_series_and_dcmqis_liver_seg_match_the_nrrd_voxel_for_voxel():
    ct, series = read_dicom_series(SHARED_DICOM / "ct-3slice")
    reference = read_image(SHARED_DICOM / "liver_seg.nrrd")
    assert ct.spatial_shape == reference.spatial_shape == (3, 512, 512) and not series.warnings
    np.testing.assert_allclose(ct.spacing, reference.spacing, rtol=1e-6)
    np.testing.assert_allclose(ct.origin, reference.origin, atol=1e-4)
    np.testing.assert_allclose(ct.direction, reference.direction, atol=1e-7)
    assert ct.array.min() == -3024 and ct.array.max() == 1381  # HU: stored values with intercept -1024
    liver, names = read_dicom_seg(SHARED_DICOM / "liver.dcm", onto=ct)
    assert names == {1: "Liver"}
    np.testing.assert_array_equal(liver.array > 0, reference.array > 0)
    assert int((liver.array > 0).sum()) == 107098


def test_a_damaged_slice_is_named_and_an_unreadable_file_is_reported(tmp_path):
    image, _ = _phantom()
    files = write_dicom_series(image, tmp_path / "s", shuffle_names=False)
    content = files[3].read_bytes()
    files[3].write_bytes(content[: len(content) - 300])  # pixel data cut short
    with pytest.raises(ImageReadError) as error:
        read_image(tmp_path / "s")
    assert str(error.value) == f"{files[3]}: cannot read its pixel data (damaged or truncated)"
    # three slices, the middle one replaced by something that is not DICOM: the two left look
    # regular, so the reader warns twice (the skipped file, the instance numbers' hole)
    small = image.with_array(image.array[:3])
    files = write_dicom_series(small, tmp_path / "three", shuffle_names=False)
    files[1].write_bytes(b"not DICOM")
    with pytest.warns(InputWarning) as warned:
        read = read_image(tmp_path / "three")
    messages = [str(w.message) for w in warned]
    assert any("skipped 1 file(s) that are not readable DICOM (e.g. IM0002.dcm)" in m for m in messages)
    assert any("instance numbers 1..3 skip 1 number(s)" in m for m in messages)
    assert read.spatial_shape[0] == 2
    # a damaged single file given where a reference goes
    (tmp_path / "cut.dcm").write_bytes(content[:200])
    with pytest.raises(AttentionSegError, match="not a readable DICOM file"):
        read_label_image(tmp_path / "cut.dcm")
