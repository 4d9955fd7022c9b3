"""The dataset fingerprint against independent numpy computations; its cache and its command."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from AttentionSegLib.data import fingerprint as fingerprint_module
from AttentionSegLib.data.dataset import load_dataset
from AttentionSegLib.data.fingerprint import (
    FOREGROUND_SAMPLES_PER_CASE,
    DatasetFingerprint,
    compute_fingerprint,
    default_cache_folder,
    load_or_compute_fingerprint,
    source_key,
)
from AttentionSegLib.data.phantoms import write_phantom_dataset
from AttentionSegLib.errors import DatasetError
from AttentionSegLib.io.image import Image, read_image, write_image
from conftest import assert_bad_input, attentionseg

ROOT = Path(__file__).resolve().parents[2]
SPACING = (2.5, 0.9, 0.7)  # mm, array order (k, j, i)


def write_dataset(folder: Path, cases: dict, spacing=SPACING, channel_names=("MRI",), ending=".nii.gz") -> Path:
    """An nnU-Net v2 dataset of ``{case_id: (image (C, *spatial), label)}`` written as given."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    one_file = ending == ".png"  # a photograph holds its channels in one file
    for case_id, (image, label) in cases.items():
        geometry = {"spacing": tuple(reversed(spacing))}
        if one_file:
            write_image(Image(image, has_channels=True, **geometry), folder / "imagesTr" / f"{case_id}{ending}")
        else:
            for channel, array in enumerate(image):
                write_image(Image(array, **geometry), folder / "imagesTr" / f"{case_id}_{channel:04d}{ending}")
        write_image(Image(label.astype(np.uint8), **geometry), folder / "labelsTr" / f"{case_id}{ending}")
    definition = {
        "name": "Handmade",
        "channel_names": {str(i): name for i, name in enumerate(channel_names)},
        "labels": {"background": 0, "first": 1, "second": 2},
        "file_ending": ending,
    }
    path = folder / "dataset.json"
    path.write_text(json.dumps(definition))
    return path


def read_arrays(definition):
    """Each case's (image (C, *spatial) float64, label) read straight from its files."""
    arrays = []
    for case in definition.cases:
        parts = [read_image(path) for path in case.images]
        image = np.concatenate([p.array if p.has_channels else p.array[None] for p in parts]).astype(np.float64)
        arrays.append((image, read_image(case.label).array.astype(np.int64)))
    return arrays


@pytest.fixture
def phantoms(tmp_path):
    path = write_phantom_dataset(tmp_path / "phantoms", n_cases=4, shape=(12, 20, 16), n_labels=3, spacing_mm=SPACING)
    return load_dataset(path)


def test_geometry_and_volumes_equal_numpy(phantoms):
    fingerprint = compute_fingerprint(phantoms, workers=2)
    assert [case.case_id for case in fingerprint.cases] == [case.case_id for case in phantoms.cases]
    assert fingerprint.spatial_dims == 3 and fingerprint.image_kind == "mri"
    assert fingerprint.channel_names == ("MRI",) and fingerprint.foreground_labels == [1, 2, 3]
    for case, (_, label) in zip(fingerprint.cases, read_arrays(phantoms)):
        assert case.shape == label.shape
        assert case.spacing == pytest.approx(SPACING, rel=1e-6)
        for value in (1, 2, 3):
            mask = label == value
            assert case.label_voxels[value] == mask.sum()
            if not mask.any():
                assert value not in case.label_bbox and value not in case.label_centroid_mm
                continue
            where = np.argwhere(mask)
            assert case.label_bbox[value] == tuple(zip(where.min(0).tolist(), (where.max(0) + 1).tolist()))
            assert case.label_centroid_mm[value] == pytest.approx(where.mean(0) * np.asarray(SPACING), rel=1e-6)
    for value in (1, 2, 3):
        expected_ml = [(label == value).sum() * np.prod(SPACING) / 1000 for _, label in read_arrays(phantoms)]
        assert fingerprint.label_volumes_ml(value) == pytest.approx(expected_ml, rel=1e-5)
    assert fingerprint.median_spacing == pytest.approx(SPACING, rel=1e-6)
    assert fingerprint.median_shape == (12, 20, 16)


def test_class_frequencies_are_voxel_fractions_summing_to_one(phantoms):
    fingerprint = compute_fingerprint(phantoms)
    labels = np.concatenate([label.ravel() for _, label in read_arrays(phantoms)])
    frequencies = fingerprint.class_frequencies
    assert sum(frequencies.values()) == pytest.approx(1.0)
    for value in (0, 1, 2, 3):
        assert frequencies[value] == pytest.approx(np.mean(labels == value))


def test_intensities_exact_when_every_foreground_voxel_fits_the_sample(phantoms):
    cases = read_arrays(phantoms)
    assert all((label > 0).sum() <= FOREGROUND_SAMPLES_PER_CASE for _, label in cases)
    pooled = np.concatenate([image[0][label > 0] for image, label in cases])
    (channel,) = compute_fingerprint(phantoms).intensities
    assert channel.name == "MRI"
    assert channel.mean == pytest.approx(pooled.mean()) and channel.std == pytest.approx(pooled.std())
    assert (channel.minimum, channel.maximum) == (pooled.min(), pooled.max())
    expected = np.percentile(pooled, [0.5, 50, 99.5])
    assert [channel.percentile_00_5, channel.percentile_50_0, channel.percentile_99_5] == pytest.approx(expected)


def test_intensities_sampled_from_large_foregrounds_and_only_from_foreground(tmp_path):
    rng = np.random.default_rng(3)
    shape = (20, 40, 40)  # 32,000 voxels
    cases = {}
    for index in range(3):
        label = np.zeros(shape, np.uint8)
        label[2:18, 3:37, 3:37] = 1  # 18,496 foreground voxels: more than the sample
        label[5:9, 5:9, 5:9] = 2
        image = np.where(label > 0, rng.normal(100.0, 15.0, shape), 5000.0).astype(np.float32)
        cases[f"case_{index}"] = (np.stack([image, 2 * image]), label)
    empty = np.zeros(shape, np.uint8)  # no foreground: contributes no intensities
    cases["case_empty"] = (np.full((2, *shape), -9000.0, np.float32), empty)
    definition = load_dataset(write_dataset(tmp_path / "large", cases, channel_names=("T1", "T2")))
    fingerprint = compute_fingerprint(definition)
    assert fingerprint == compute_fingerprint(definition, workers=1)  # seeded: the same on every run
    for channel, scale in zip(fingerprint.intensities, (1, 2)):
        pooled = np.concatenate([image[0][label > 0] for image, label in cases.values()]).astype(np.float64) * scale
        assert pooled.min() <= channel.minimum < channel.percentile_00_5 < channel.percentile_99_5 <= pooled.max()
        assert channel.mean == pytest.approx(pooled.mean(), abs=0.02 * pooled.std())
        assert channel.std == pytest.approx(pooled.std(), rel=0.03)
        assert channel.percentile_50_0 == pytest.approx(np.median(pooled), abs=0.05 * pooled.std())
    empty_case = fingerprint.cases[-1]
    assert empty_case.label_voxels == {1: 0, 2: 0} and empty_case.label_bbox == {}
    assert fingerprint.label_case_count(2) == 3


def test_rgb_photographs_take_channels_from_the_colour_axis(tmp_path):
    rng = np.random.default_rng(5)
    cases = {}
    for index in range(2):
        rgb = rng.integers(0, 256, (3, 30, 40)).astype(np.uint8)
        label = np.zeros((30, 40), np.uint8)
        label[4 + index : 20, 10:31] = 1
        cases[f"IMD{index:03d}"] = (rgb, label)
    path = write_dataset(tmp_path / "photos", cases, spacing=(1.0, 1.0), channel_names=("R", "G", "B"), ending=".png")
    fingerprint = compute_fingerprint(load_dataset(path))
    assert fingerprint.spatial_dims == 2 and fingerprint.image_kind == "rgb"
    assert [case.shape for case in fingerprint.cases] == [(30, 40), (30, 40)]
    assert fingerprint.cases[1].label_bbox == {1: ((5, 20), (10, 31))}
    assert fingerprint.cases[1].label_centroid_mm[1] == pytest.approx((12.0, 20.0))
    for c, channel in enumerate(fingerprint.intensities):
        pooled = np.concatenate([rgb[c][label > 0] for rgb, label in cases.values()]).astype(np.float64)
        assert channel.name == "RGB"[c] and channel.mean == pytest.approx(pooled.mean())
        assert channel.maximum == pooled.max()


def test_round_trip_through_json(phantoms):
    fingerprint = compute_fingerprint(phantoms)
    again = DatasetFingerprint.from_dict(json.loads(json.dumps(fingerprint.to_dict())))
    assert again == fingerprint
    assert again.class_frequencies == fingerprint.class_frequencies


def test_progress_reports_every_case(phantoms):
    calls = []
    compute_fingerprint(phantoms, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(done, 4) for done in range(1, 5)]


def test_no_annotated_case_is_an_error(tmp_path):
    definition = load_dataset(write_dataset(tmp_path / "empty", {}))
    with pytest.raises(DatasetError, match="no annotated cases"):
        compute_fingerprint(definition)


def test_a_bad_case_is_an_error_naming_its_file(tmp_path):
    label = np.zeros((4, 6, 6), np.uint8)
    label[1, 1, 1] = 7
    definition = load_dataset(write_dataset(tmp_path / "bad", {"case_0": (np.zeros((1, 4, 6, 6), np.float32), label)}))
    with pytest.raises(DatasetError, match=r"case_0\.nii\.gz: label values 7 are not declared"):
        compute_fingerprint(definition)


def test_cache_is_reused_until_a_label_file_changes(phantoms, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_or_compute_fingerprint(phantoms, cache_dir=cache)
    cache_file = cache / f"Phantoms-{source_key(phantoms)[:16]}.json"
    assert [p.name for p in cache.iterdir()] == [cache_file.name]

    def no_reading(*args):
        raise AssertionError("a cached fingerprint must not read images")

    with monkeypatch.context() as patch:
        patch.setattr(fingerprint_module, "read_case_image", no_reading)
        assert load_or_compute_fingerprint(phantoms, cache_dir=cache) == first

    label_file = phantoms.cases[0].label
    label = read_image(label_file)
    changed = label.array.copy()
    changed[0, 0, 0] = 3 if changed[0, 0, 0] != 3 else 1
    write_image(label.with_array(changed), label_file)
    stamp = os.stat(label_file).st_mtime_ns + 10**9
    os.utime(label_file, ns=(stamp, stamp))  # a new time even on a coarse clock
    second = load_or_compute_fingerprint(phantoms, cache_dir=cache)
    assert second.source_key != first.source_key
    assert second.cases[0].label_voxels != first.cases[0].label_voxels
    assert len(list(cache.iterdir())) == 2


def test_damaged_cache_is_recomputed_and_overwritten(phantoms, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache_file = cache / f"Phantoms-{source_key(phantoms)[:16]}.json"
    cache_file.write_text('{"format": "attentionseg-fingerprint", "cases": [')
    fingerprint = load_or_compute_fingerprint(phantoms, cache_dir=cache)
    assert DatasetFingerprint.from_dict(json.loads(cache_file.read_text())) == fingerprint


def test_default_cache_folder_follows_the_environment(phantoms, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTENTIONSEG_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_folder() == tmp_path / "mine" / "fingerprints"
    load_or_compute_fingerprint(phantoms)
    assert len(list((tmp_path / "mine" / "fingerprints").glob("Phantoms-*.json"))) == 1
    monkeypatch.delenv("ATTENTIONSEG_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_folder() == tmp_path / ".attentionseg" / "fingerprints"


def test_command_prints_the_fingerprint_as_json_and_as_a_summary(phantoms, tmp_path):
    env = {"ATTENTIONSEG_CACHE_DIR": str(tmp_path / "cache")}
    result = attentionseg("dataset", "fingerprint", phantoms.path, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert DatasetFingerprint.from_dict(json.loads(result.stdout)) == compute_fingerprint(phantoms)
    assert len(list((tmp_path / "cache" / "fingerprints").iterdir())) == 1
    unused = tmp_path / "unused"
    result = attentionseg(
        "dataset", "fingerprint", phantoms.path, "--no-cache", env={"ATTENTIONSEG_CACHE_DIR": str(unused)}
    )
    assert result.returncode == 0, result.stderr
    assert not unused.exists()
    assert "4 annotated cases" in result.stdout and "Median mL" in result.stdout
    assert all(f"structure_{value}" in result.stdout for value in (1, 2, 3))


def test_command_refuses_a_missing_dataset(tmp_path):
    assert_bad_input(attentionseg("dataset", "fingerprint", tmp_path / "nothing.json"), "nothing.json", "not found")
