"""The web page's workspace on real MRML (slicer-core), without a browser: uploads are checked and
confined, loading keeps geometry, Segment / metrics / clicks / undo / export / corrections give
the numbers the engine gives on the same files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from AttentionSegLib.data.dataset import load_dataset  # noqa: E402
from AttentionSegLib.data.validation import validate_dataset  # noqa: E402
from AttentionSegLib.errors import AttentionSegError  # noqa: E402
from AttentionSegLib.evaluation.metrics import evaluate_label_maps  # noqa: E402
from AttentionSegLib.inference.model_file import load_model_file  # noqa: E402
from AttentionSegLib.interactive.robot import interior_point  # noqa: E402
from AttentionSegLib.io.image import read_image  # noqa: E402
from AttentionSegLib.slicer.mrml import StandaloneScene  # noqa: E402
from AttentionSegLib.web.workspace import Workspace, sanitised_name  # noqa: E402


def ras_of(image, index) -> tuple[float, float, float]:
    k, j, i = index
    lps = image.index_to_physical() @ np.array([i, j, k, 1.0])
    return (-lps[0], -lps[1], lps[2])


@pytest.fixture
def workspace(tmp_path, trained_models, interactive_model):
    """A workspace whose models folder holds the automatic ("good") and the interactive model."""
    _, (good, _) = trained_models
    _, summary = interactive_model
    models = tmp_path / "models"
    models.mkdir()
    (models / "automatic.pt").write_bytes(good.read_bytes())
    (models / "clicks.pt").write_bytes(open(summary["model_file"], "rb").read())
    wiring = StandaloneScene()
    return Workspace(wiring.scene, tmp_path / "work", models, max_upload_mb=0.5), wiring


def held_out_case(dataset, model_file):
    definition = load_dataset(dataset)
    case = definition.case(load_model_file(model_file).training["val_cases"][0])
    return case.images[0], case.label


def test_names_are_sanitised_and_uploads_confined_limited_and_never_overwritten(workspace):
    space, _ = workspace
    assert sanitised_name("../../etc/passwd") == "passwd"
    assert sanitised_name("C:\\Users\\me\\scan one.nii.gz") == "scan_one.nii.gz"
    assert sanitised_name(".hidden.nrrd") == "hidden.nrrd"
    with pytest.raises(AttentionSegError, match="not a usable file name"):
        sanitised_name("../..")
    first = space.save_upload("../../case.nii.gz", b"abc")
    second = space.save_upload("case.nii.gz", b"def")
    assert first.parent == second.parent == space.uploads and first != second
    assert first.read_bytes() == b"abc" and second.name == "case-2.nii.gz"
    with pytest.raises(AttentionSegError, match="over the upload limit of 0.5 MB"):
        space.save_upload("big.nii.gz", bytes(600 * 1024))
    with pytest.raises(AttentionSegError, match="notes.txt: not an image"):
        space.save_upload("notes.txt", b"x")
    assert sorted(p.name for p in space.uploads.iterdir()) == ["case-2.nii.gz", "case.nii.gz"]


def test_a_corrupt_file_is_one_line_and_leaves_the_loaded_case(workspace, trained_models):
    space, _ = workspace
    dataset, (good, _) = trained_models
    image_path, _ = held_out_case(dataset, good)
    volume = space.load_volume(image_path)
    corrupt = space.save_upload("broken.nii.gz", b"\x1f\x8b not really gzip")
    with pytest.raises(AttentionSegError) as error:
        space.load_volume(corrupt)
    assert "broken.nii.gz" in str(error.value) and "\n" not in str(error.value)
    assert space.volume is volume and volume.GetScene() is space.scene


def test_segment_metrics_and_export_match_the_engine(workspace, trained_models, tmp_path):
    space, _ = workspace
    dataset, (good, _) = trained_models
    image_path, label_path = held_out_case(dataset, good)
    space.load_volume(image_path)
    space.load_reference(label_path)
    space.start_segmentation("automatic", "cpu")
    state = space.background.wait(timeout_s=120)
    assert space.poll_segmentation()[0] == "done", (state, space.background.message)
    counts = space.segment_voxels()
    assert set(counts) >= {"liver", "spleen"} and counts["liver"] > 0
    exported = space.export("nifti")
    assert exported.parent == space.exports
    labels, image = read_image(exported), read_image(image_path)
    assert labels.spatial_shape == image.spatial_shape
    np.testing.assert_allclose(labels.direction, image.direction, atol=1e-6)
    np.testing.assert_allclose(labels.origin, image.origin, atol=1e-4)
    reference = read_image(label_path)
    expected = evaluate_label_maps(labels.array, reference.array, spacing_mm=image.spacing_array_order)
    report = space.metrics()
    for row in report["labels"]:
        match = next(e for e in expected["labels"] if e["value"] == row["value"])
        assert row["dice"] == pytest.approx(match["dice"], abs=1e-6)
    seg = read_image(space.export("seg.nrrd"))
    np.testing.assert_array_equal(seg.array.reshape(labels.array.shape) > 0, labels.array > 0)


def test_clicks_refine_an_object_and_undo_restores_it(workspace, interactive_model):
    space, _ = workspace
    dataset, summary = interactive_model
    image_path, label_path = held_out_case(dataset, summary["model_file"])
    space.load_volume(image_path)
    image, reference = read_image(image_path), read_image(label_path).array
    liver = reference == 1
    first = interior_point(liver, image.spacing_array_order)
    segment_id = space.click(ras_of(image, first), True, "clicks", "cpu")
    after_one = space.segment_voxels()["object 1"]
    assert after_one > 0
    space.click(ras_of(image, first), False, "clicks", "cpu")  # a negative click on the object
    assert space.segment_voxels()["object 1"] < after_one
    assert space.undo_click() and space.segment_voxels()["object 1"] == after_one
    assert space.click_segment_id == segment_id
    space.new_object()
    assert space.click(ras_of(image, first), True, "clicks", "cpu") != segment_id
    # A box prompt (two opposite corners in RAS) makes a new object around the structure.
    space.new_object()
    corners = np.argwhere(liver)
    boxed = space.box(ras_of(image, corners.min(axis=0)), ras_of(image, corners.max(axis=0)), "clicks", "cpu")
    assert boxed not in (segment_id, None) and space.segment_voxels()["object 3"] > 0
    assert space.is_interactive("clicks") and not space.is_interactive("automatic")
    with pytest.raises(AttentionSegError, match="clicks.pt: an interactive model segments from clicks"):
        space.start_segmentation("clicks", "cpu")
    with pytest.raises(AttentionSegError, match="no such model"):
        space.click(ras_of(image, first), True, "missing", "cpu")


def test_a_correction_becomes_a_training_case(workspace, trained_models, tmp_path):
    space, _ = workspace
    dataset, (good, _) = trained_models
    copy = tmp_path / "dataset"
    shutil.copytree(dataset.parent, copy)
    image_path, label_path = held_out_case(dataset, good)
    space.load_volume(image_path)
    with pytest.raises(AttentionSegError, match="no segmentation"):
        space.save_correction(copy / "dataset.json")
    space.load_reference(label_path)
    space.segmentation = space.reference  # the reference as the "corrected" segmentation
    result = space.save_correction(copy / "dataset.json")
    definition = load_dataset(copy / "dataset.json")
    assert result["case_id"] in {case.case_id for case in definition.cases}
    assert validate_dataset(definition) == []
    np.testing.assert_array_equal(read_image(result["label_file"]).array, read_image(label_path).array)


def test_a_saved_correction_updates_the_model_rollback_and_next_case(workspace, trained_models, tmp_path):
    from AttentionSegLib.inference.model_versions import list_versions

    space, _ = workspace
    dataset, (good, _) = trained_models
    copy = tmp_path / "dataset"
    shutil.copytree(dataset.parent, copy)
    image_path, label_path = held_out_case(dataset, good)
    space.load_volume(image_path)
    space.load_reference(label_path)
    space.segmentation = space.reference
    space.save_correction(copy / "dataset.json")
    before = space.model_file("automatic").read_bytes()
    space.start_model_update("automatic", str(copy / "dataset.json"), device="cpu", minutes=0.1)
    assert space.updater.wait(timeout_s=300, poll_interval_s=0.2) == "finished", space.updater.message
    assert "version 2 is current" in space.updater.message
    assert [v.current for v in list_versions(space.model_file("automatic"))] == [False, True]
    assert space.rollback_model("automatic") == 1 and space.model_file("automatic").read_bytes() == before
    with pytest.raises(AttentionSegError, match="no case without labels"):
        space.next_case("automatic", str(copy / "dataset.json"))
    (copy / "imagesTs").mkdir()
    shutil.copy(image_path, copy / "imagesTs" / "waiting_0000.nii.gz")
    top, path = space.next_case("automatic", str(copy / "dataset.json"), "cpu")
    assert top.case_id == "waiting" and path == copy / "imagesTs" / "waiting_0000.nii.gz"


def _zipped(files: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_a_zipped_dicom_series_and_a_dicom_seg_load_and_a_correction_keeps_the_datasets_format(
    workspace, trained_models, tmp_path
):
    from AttentionSegLib.data.phantoms import write_dicom_series
    from AttentionSegLib.io.dicom_seg import write_dicom_seg
    from AttentionSegLib.io.dicom_series import read_dicom_series

    space, _ = workspace
    dataset, (good, _) = trained_models
    image_path, label_path = held_out_case(dataset, good)
    image = read_image(image_path)
    files = write_dicom_series(image, tmp_path / "series", modality="MR", rescale=(0.01, 0.0))
    # member paths that try to leave the uploads folder are flattened into it
    zipped = {
        f"../../escape/{path.name}" if n == 0 else f"DICOM/S1/{path.name}": path.read_bytes()
        for n, path in enumerate(files)
    }
    folder = space.save_upload("scan 1.zip", _zipped(zipped))
    assert folder.parent == space.uploads and len(list(folder.iterdir())) == len(files)
    assert not (tmp_path / "escape").exists() and not (space.folder / "escape").exists()
    series_image, series = read_dicom_series(folder)
    with pytest.raises(AttentionSegError, match="no series with UID 1.2.3"):
        space.load_volume(folder, "1.2.3")
    volume = space.load_volume(folder, series.series_uid)
    from AttentionSegLib.slicer.mrml import image_from_volume_node

    shown = image_from_volume_node(volume)
    np.testing.assert_allclose(shown.origin, image.origin, atol=1e-4)
    np.testing.assert_allclose(shown.direction, image.direction, atol=1e-6)
    np.testing.assert_allclose(shown.array, image.array, atol=0.006)
    # the reference as a DICOM SEG, uploaded as one .dcm
    label = read_image(label_path)
    seg = write_dicom_seg(
        series_image.with_array(label.array), series, tmp_path / "ref.dcm",
        [{"value": 1, "name": "liver"}, {"value": 2, "name": "spleen"}], algorithm_name="ref", algorithm_version="1",
    )  # fmt: skip
    space.load_reference(space.save_upload("ref.dcm", seg.read_bytes()))
    # saved as a training case of an nnU-Net dataset: NIfTI files on the series' grid
    copy = tmp_path / "dataset"
    shutil.copytree(dataset.parent, copy)
    space.segmentation = space.reference
    result = space.save_correction(copy / "dataset.json")
    assert str(result["label_file"]).endswith(".nii.gz")
    saved = read_image(result["label_file"])
    np.testing.assert_array_equal(saved.array, label.array)
    np.testing.assert_allclose(saved.origin, image.origin, atol=1e-4)
    assert validate_dataset(load_dataset(copy / "dataset.json")) == []


def test_bad_zips_are_refused_in_one_line(workspace):
    space, _ = workspace
    with pytest.raises(AttentionSegError, match="not a readable zip file"):
        space.save_upload("scan.zip", b"PK not really")
    bomb = _zipped({"a.dcm": b"\0" * (3 * 1024 * 1024)})  # 3 MB of zeros compress to a few KB
    with pytest.raises(AttentionSegError, match="expands to 3 MB, over the limit"):
        space.save_upload("bomb.zip", bomb)
    with pytest.raises(AttentionSegError, match="no DICOM image files"):
        space.load_volume(space.save_upload("notes.zip", _zipped({"readme.txt": b"hello"})))
    assert not any(path.name.endswith(".partial") for path in space.uploads.iterdir())
