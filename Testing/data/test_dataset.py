"""Dataset definitions: both conventions, 2D and 3D, clinical features, validation
(:mod:`AttentionSegLib.data.validation`), splits (:mod:`AttentionSegLib.data.splits`)."""

import hashlib
import json

import numpy as np
import pytest

from AttentionSegLib.data.dataset import load_dataset
from AttentionSegLib.data.splits import k_fold_split, resolve_split
from AttentionSegLib.data.validation import validate_dataset
from AttentionSegLib.errors import DatasetError
from AttentionSegLib.io.image import Image, write_image


def label_volume(value: int = 1, shape=(6, 8, 8)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[2:4, 2:6, 2:6] = value
    return labels


def make_msd(root, n_cases=4, channels=2):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for index in range(n_cases):
        labels = label_volume()
        image = np.stack([labels.astype(np.float32) * (c + 1) for c in range(channels)])
        write_image(Image(image, has_channels=True, spacing=(1, 1, 2)), root / "imagesTr" / f"case_{index:03d}.nii.gz")
        write_image(Image(labels, spacing=(1, 1, 2)), root / "labelsTr" / f"case_{index:03d}.nii.gz")
        training.append(
            {"image": f"./imagesTr/case_{index:03d}.nii.gz", "label": f"./labelsTr/case_{index:03d}.nii.gz"}
        )
    definition = {
        "name": "msd-test",
        "tensorImageSize": "4D",
        "modality": {str(c): f"MR{c}" for c in range(channels)},
        "labels": {"0": "background", "1": "tumour"},
        "numTraining": n_cases,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(definition))
    return root / "dataset.json", definition


def make_nnunet(root, n_cases=4, channel_names=("FLAIR", "T1c")):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for index in range(n_cases):
        labels = label_volume()
        for channel in range(len(channel_names)):
            write_image(Image(labels.astype(np.float32)), root / "imagesTr" / f"pat{index}_{channel:04d}.nii.gz")
        write_image(Image(labels), root / "labelsTr" / f"pat{index}.nii.gz")
    definition = {
        "channel_names": {str(i): n for i, n in enumerate(channel_names)},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(definition))
    return root / "dataset.json", definition


def test_msd_with_4d_multichannel_images(tmp_path):
    path, _ = make_msd(tmp_path)
    definition = load_dataset(path)
    assert definition.convention == "msd" and definition.spatial_dims == 3
    assert definition.channel_names == ["MR0", "MR1"] and definition.labels == {0: "background", 1: "tumour"}
    assert [c.case_id for c in definition.cases] == ["case_000", "case_001", "case_002", "case_003"]
    assert validate_dataset(definition) == []


def test_nnunet_with_one_file_per_channel(tmp_path):
    path, _ = make_nnunet(tmp_path)
    definition = load_dataset(path)
    assert definition.convention == "nnunet" and definition.n_channels == 2
    assert [p.name for p in definition.cases[0].images] == ["pat0_0000.nii.gz", "pat0_0001.nii.gz"]
    assert definition.cases[0].label.name == "pat0.nii.gz"
    assert validate_dataset(definition) == []


def test_nnunet_2d_rgb_photographs_in_one_file(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for name in ("IMD001", "IMD002"):
        rgb = np.zeros((3, 12, 16), np.uint8)
        rgb[0, 3:8, 4:9] = 200
        write_image(Image(rgb, has_channels=True), tmp_path / "imagesTr" / f"{name}.png")
        write_image(Image((rgb[0] > 0).astype(np.uint8)), tmp_path / "labelsTr" / f"{name}.png")
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "R", "1": "G", "2": "B"},
                "labels": {"background": 0, "lesion": 1},
                "file_ending": ".png",
            }
        )
    )
    definition = load_dataset(tmp_path / "dataset.json")
    assert definition.spatial_dims == 2 and len(definition.cases) == 2
    assert validate_dataset(definition) == []


def test_validation_reports_every_problem_at_once(tmp_path):
    path, content = make_msd(tmp_path, n_cases=6)
    # case 0: its label file is missing
    (tmp_path / "labelsTr" / "case_000.nii.gz").unlink()
    # case 1: an undeclared label value 7
    write_image(Image(label_volume(7), spacing=(1, 1, 2)), tmp_path / "labelsTr" / "case_001.nii.gz")
    # case 2: one channel instead of two
    write_image(Image(label_volume().astype(np.float32), spacing=(1, 1, 2)), tmp_path / "imagesTr" / "case_002.nii.gz")
    # case 3: label on another grid
    write_image(Image(label_volume(), spacing=(1, 1, 3)), tmp_path / "labelsTr" / "case_003.nii.gz")
    # case 4: a 2D label in a 3D dataset
    write_image(Image(label_volume()[3]), tmp_path / "labelsTr" / "case_004.nrrd")
    content["training"][4]["label"] = "./labelsTr/case_004.nrrd"
    # a duplicated case id
    content["training"].append(dict(content["training"][5]))
    path.write_text(json.dumps(content))

    problems = validate_dataset(load_dataset(path))
    text = [str(p) for p in problems]
    by_case = {p.case_id for p in problems}
    assert by_case == {"case_000", "case_001", "case_002", "case_003", "case_004", "case_005"}, text
    assert any("case_000" in t and "file not found" in t and "labelsTr/case_000.nii.gz" in t for t in text)
    assert any("case_001" in t and "label values 7" in t for t in text)
    assert any("case_002" in t and "1 image channel(s)" in t and "declares 2" in t for t in text)
    assert any("case_003" in t and "spacing" in t for t in text)
    assert any("case_004" in t and "2D file in a 3D dataset" in t for t in text)
    assert any("case_005" in t and "appears 2 times" in t for t in text)


def test_clinical_features_from_csv_and_from_case_entries(tmp_path):
    path, content = make_msd(tmp_path, n_cases=3, channels=1)
    content["clinical_features"] = {"variables": ["age", "afp"], "file": "clinical.csv", "id_column": "case"}
    content["training"][0]["clinical"] = {"age": 61, "afp": 12.5}
    (tmp_path / "clinical.csv").write_text("case,age,afp\ncase_001,47,3.25\ncase_002,seventy,1\n")
    path.write_text(json.dumps(content))
    definition = load_dataset(path)
    assert definition.clinical_variables == ["age", "afp"]
    np.testing.assert_array_equal(definition.cases[0].clinical, [61.0, 12.5])
    np.testing.assert_array_equal(definition.cases[1].clinical, [47.0, 3.25])
    problems = [str(p) for p in validate_dataset(definition)]
    assert problems == ["case case_002: clinical.csv: clinical variable 'age' is 'seventy', not a number"]


def test_k_folds_are_deterministic_disjoint_and_complete():
    ids = [f"case_{i:03d}" for i in range(23)]
    folds = k_fold_split(ids, 5, seed=3)
    assert folds == k_fold_split(list(reversed(ids)), 5, seed=3)  # input order does not matter
    validation = [set(f["val"]) for f in folds]
    assert set().union(*validation) == set(ids) and sum(len(v) for v in validation) == 23
    assert all(set(f["train"]) | set(f["val"]) == set(ids) for f in folds)
    assert k_fold_split(ids, 5, seed=4) != folds
    # Independent restatement of the documented rule: order by SHA-256 of "seed:id", deal round-robin.
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"3:{i}".encode()).hexdigest())
    assert folds[2]["val"] == sorted(ranked[2::5])


def test_named_and_fold_splits(tmp_path):
    path, content = make_nnunet(tmp_path, n_cases=5, channel_names=("CT",))
    content["splits"] = {"paper": {"train": ["pat0", "pat1", "pat2"], "val": ["pat3"], "test": ["pat4"]}}
    path.write_text(json.dumps(content))
    definition = load_dataset(path)
    assert resolve_split(definition, "paper")["test"] == ["pat4"]
    assert resolve_split(definition, "all")["val"] == ["pat0", "pat1", "pat2", "pat3", "pat4"]
    assert len(resolve_split(definition, "fold:1", n_folds=5)["val"]) == 1
    with pytest.raises(DatasetError, match="unknown split"):
        resolve_split(definition, "nope")
    with pytest.raises(DatasetError, match="fold must be"):
        resolve_split(definition, "fold:9")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"channel_names": {"0": "CT"}}), "no 'labels'"),
        (json.dumps({"labels": {"background": 0}}), "neither MSD"),
        (json.dumps({"channel_names": {"0": "CT"}, "labels": {"a": 1, "b": 1}}), "declared twice"),
        (json.dumps({"channel_names": {"1": "CT"}, "labels": {"a": 1}}), "keys must be 0"),
    ],
)
def test_bad_definitions_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "dataset.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message) as error:
        load_dataset(path)
    assert str(path) in str(error.value)
