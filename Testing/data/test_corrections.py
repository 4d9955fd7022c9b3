"""Corrections as training cases, without MRML: conventions, fresh ids, refusals, and what a
failure part-way leaves behind (nothing visible, dataset.json unchanged and valid)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from AttentionSegLib.data import corrections
from AttentionSegLib.data.corrections import add_training_case
from AttentionSegLib.data.dataset import load_dataset
from AttentionSegLib.data.phantoms import write_phantom_dataset
from AttentionSegLib.data.validation import validate_dataset
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.io.image import Image, read_image, write_image


@pytest.fixture
def dataset(tmp_path):
    return write_phantom_dataset(tmp_path / "nnunet", n_cases=3, shape=(8, 10, 12), spacing_mm=(2.0, 1.0, 0.5))


def case_of(dataset_json):
    definition = load_dataset(dataset_json)
    image = read_image(definition.cases[0].images[0])
    labels = read_image(definition.cases[0].label)
    return image, labels


def test_nnunet_case_is_added_with_its_original_and_dice(dataset):
    image, labels = case_of(dataset)
    original = labels.with_array(np.where(labels.array == 2, 0, labels.array).astype(np.uint8))
    result = add_training_case(dataset, image, labels, original)
    assert result["case_id"] == "correction_001"
    assert [p.name for p in result["image_files"]] == ["correction_001_0000.nii.gz"]
    assert result["original_file"].parent.name == "originalsTr"
    assert result["dice"][1] == pytest.approx(1.0) and result["dice"][2] == pytest.approx(0.0)
    definition = load_dataset(dataset)
    assert "correction_001" in {case.case_id for case in definition.cases}
    assert validate_dataset(definition) == []
    second = add_training_case(dataset, image, labels)
    assert second["case_id"] == "correction_002" and second["dice"] == {}


def test_msd_case_is_listed_in_training(tmp_path):
    root = tmp_path / "msd"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    image = Image(np.random.default_rng(0).normal(size=(2, 6, 7, 8)).astype(np.float32), has_channels=True)
    labels = Image(np.zeros((6, 7, 8), np.uint8))
    write_image(image, root / "imagesTr" / "a.nii.gz")
    write_image(labels, root / "labelsTr" / "a.nii.gz")
    content = {
        "name": "msd",
        "modality": {"0": "FLAIR", "1": "T1c"},
        "labels": {"0": "background", "1": "tumour"},
        "numTraining": 1,
        "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(content))
    labels.array[2:4, 2:4, 2:4] = 1
    result = add_training_case(root / "dataset.json", image, labels)
    saved = json.loads((root / "dataset.json").read_text())
    assert saved["numTraining"] == 2 and saved["training"][-1]["image"] == "./imagesTr/correction_001.nii.gz"
    assert read_image(result["image_files"][0]).n_channels == 2
    with pytest.raises(AttentionSegError, match="2 channel"):
        add_training_case(root / "dataset.json", image.channel(0), labels)


def test_refusals_name_the_problem(dataset):
    image, labels = case_of(dataset)
    with pytest.raises(AttentionSegError, match="label values"):
        add_training_case(dataset, image, labels.with_array(np.full(labels.array.shape, 9, np.uint8)))
    moved = Image(labels.array, labels.spacing, (5.0, 5.0, 5.0))
    with pytest.raises(AttentionSegError, match="different voxel grids"):
        add_training_case(dataset, image, moved)
    with pytest.raises(AttentionSegError, match="case prefix"):
        add_training_case(dataset, image, labels, prefix="../x")


@pytest.mark.parametrize("failing", ["label", "json"])
def test_a_failure_part_way_leaves_no_case_and_an_unchanged_dataset_json(dataset, monkeypatch, failing):
    image, labels = case_of(dataset)
    before = dataset.read_bytes()
    files_before = sorted(p.relative_to(dataset.parent) for p in dataset.parent.rglob("*"))
    if failing == "label":
        real_write = corrections.write_image

        def write_image_failing_on_labels(part, path, overwrite=True):
            if "labelsTr" in str(path):
                raise OSError("disk full")
            return real_write(part, path, overwrite=overwrite)

        monkeypatch.setattr(corrections, "write_image", write_image_failing_on_labels)
    else:

        def dump_failing(content, stream, **kwargs):
            stream.write('{"name": "half')
            raise OSError("killed")

        monkeypatch.setattr(corrections.json, "dump", dump_failing)
    with pytest.raises(AttentionSegError, match="disk full|killed"):  # one line, the reason kept
        add_training_case(dataset, image, labels)
    assert dataset.read_bytes() == before
    visible = sorted(p.relative_to(dataset.parent) for p in dataset.parent.rglob("*") if not p.name.startswith("."))
    if failing == "label":
        assert visible == [p for p in files_before if not p.name.startswith(".")]
        assert not list(dataset.parent.rglob(".*"))  # no hidden leftovers either
    assert validate_dataset(load_dataset(dataset)) == []
