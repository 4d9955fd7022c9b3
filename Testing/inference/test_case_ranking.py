"""Which case next (``attentionseg dataset rank``): the cases without labels ranked by expected
wrong volume, a degraded copy of a case first, the same order for the same seed, and refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from AttentionSegLib.data.dataset import load_dataset
from AttentionSegLib.inference.case_ranking import cases_to_rank, expected_wrong_volume, rank_cases
from AttentionSegLib.inference.predictor import Predictor
from AttentionSegLib.io.image import read_image, write_image
from conftest import assert_bad_input, attentionseg


@pytest.fixture(scope="module")
def with_test_cases(trained_models, tmp_path_factory):
    """The trained phantoms' dataset with three cases without labels: two copies of annotated
    images and a noisy, blurred copy of the first (the model's doubt is there)."""
    from scipy import ndimage

    dataset, (good, _) = trained_models
    folder = tmp_path_factory.mktemp("ranked") / "data"
    shutil.copytree(dataset.parent, folder)
    (folder / "imagesTs").mkdir()
    images = sorted((folder / "imagesTr").glob("*_0000.nii.gz"))[:2]
    for index, path in enumerate(images):
        shutil.copy(path, folder / "imagesTs" / f"clear_{index}_0000.nii.gz")
    image = read_image(images[0])
    rng = np.random.default_rng(0)
    degraded = ndimage.gaussian_filter(image.array, 1.5) + rng.normal(0, image.array.std(), image.array.shape)
    write_image(image.with_array(degraded.astype(np.float32)), folder / "imagesTs" / "degraded_0000.nii.gz")
    return folder / "dataset.json", good


def test_the_degraded_case_ranks_first_and_a_seed_fixes_the_order(with_test_cases):
    dataset, model = with_test_cases
    definition = load_dataset(dataset)
    cases = cases_to_rank(definition, include_annotated=False)
    assert sorted(c.case_id for c in cases) == ["clear_0", "clear_1", "degraded"]
    predictor = Predictor(model, device="cpu")
    ranked = rank_cases(predictor, definition, cases, seed=3)
    assert ranked[0].case_id == "degraded"
    assert [r.expected_wrong_ml for r in ranked] == sorted((r.expected_wrong_ml for r in ranked), reverse=True)
    assert rank_cases(predictor, definition, cases, seed=3) == ranked
    assert len(cases_to_rank(definition, include_annotated=True)) == 3 + len(definition.cases)


def test_expected_wrong_volume_counts_near_the_structure_in_ml():
    labels = np.zeros((10, 10, 30), np.uint8)
    labels[4:6, 4:6, 4:6] = 1
    uncertainty = np.full(labels.shape, 0.5, np.float32)
    spacing = (2.0, 1.0, 1.0)
    wrong_ml, mean = expected_wrong_volume(uncertainty, labels, spacing)
    near = 0
    for index in np.ndindex(labels.shape):  # brute force: within 5 mm of a structure voxel
        offsets = (np.argwhere(labels) - np.array(index)) * np.array(spacing)
        near += bool((np.sqrt((offsets**2).sum(axis=1)) <= 5.0).any())
    assert wrong_ml == pytest.approx(0.5 * near * 2.0 / 1000) and mean == pytest.approx(0.5)
    assert expected_wrong_volume(uncertainty, np.zeros_like(labels), spacing)[0] == pytest.approx(0.5 * 3000 * 2 / 1000)


def test_the_command_prints_and_writes_the_ranking_and_refuses_a_dataset_without_unlabelled_cases(
    with_test_cases, trained_models, tmp_path
):
    dataset, model = with_test_cases
    result = attentionseg("dataset", "rank", model, dataset, "--json", tmp_path / "rank.json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "expected wrong (mL)" in lines[0] and lines[1].split()[1] == "degraded" and len(lines) == 4
    ranking = json.loads((tmp_path / "rank.json").read_text())["ranking"]
    assert [row["case_id"] for row in ranking][0] == "degraded"
    plain, _ = trained_models
    assert_bad_input(attentionseg("dataset", "rank", model, plain), "no case without labels to rank", "--all")


def test_next_case_loads_the_top_case_into_the_scene_with_its_geometry(with_test_cases):
    pytest.importorskip("slicer")
    from AttentionSegLib.slicer.mrml import StandaloneScene, image_from_volume_node
    from AttentionSegLib.slicer.next_case import load_next_case

    dataset, model = with_test_cases
    wiring = StandaloneScene()
    top, nodes = load_next_case(wiring.scene, Predictor(model, device="cpu"), dataset)
    assert top.case_id == "degraded" and len(nodes) == 1 and nodes[0].GetName() == "degraded_0000"
    loaded, source = image_from_volume_node(nodes[0]), read_image(dataset.parent / "imagesTs" / "degraded_0000.nii.gz")
    np.testing.assert_allclose(loaded.array, source.array)
    for attribute in ("spacing", "origin", "direction"):
        assert np.allclose(getattr(loaded, attribute), getattr(source, attribute))
