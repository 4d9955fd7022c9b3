"""The annotation campaign on phantoms, in seconds: the robot reader's clicks and corrections, the
updates kept as versions, both orders through the command, and the source dataset untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from AttentionSegLib.data.dataset import load_dataset
from AttentionSegLib.data.phantoms import write_phantom_dataset
from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
from AttentionSegLib.evaluation.campaign import CampaignSettings, campaign_cases, correct_case
from AttentionSegLib.inference.model_versions import list_versions
from AttentionSegLib.inference.predictor import Predictor
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.trainer import train
from conftest import assert_bad_input, attentionseg


@pytest.fixture(scope="module")
def campaign_setup(tmp_path_factory):
    """10 phantoms; an automatic and an interactive model trained briefly on 4 of them."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("campaign")
    dataset = write_phantom_dataset(root / "data", n_cases=10, shape=(16, 20, 16))
    content = json.loads(dataset.read_text())
    definition = load_dataset(dataset)
    first = root / "first"
    first.mkdir()
    entries = [
        {"image": str(case.images[0]), "label": str(case.label)} for case in definition.cases[:4]
    ]  # an MSD subset: the same case ids
    subset = {"name": "first", "modality": {"0": "MRI"}, "labels": content["labels"], "training": entries}
    (first / "dataset.json").write_text(json.dumps(subset))
    models = {}
    for kind, flags in (("automatic", {}), ("interactive", {"interactive": True})):
        config = TrainingConfig(
            str(first / "dataset.json"), "unet", str(root / kind), compact=True, patch_size=[16, 16, 16],
            epochs=3, iterations_per_epoch=4, batch_size=2, learning_rate=1e-2, **flags,
        )  # fmt: skip
        models[kind] = train(config)["model_file"]
    return dataset, models


def test_the_reader_corrects_label_by_label_until_the_target_or_the_click_limit(campaign_setup):
    dataset, models = campaign_setup
    definition = load_dataset(dataset)
    case = definition.cases[7]
    image = read_case_image(case, definition)
    reference = read_case_label(case, definition, image.channel(0))
    automatic = Predictor(models["automatic"], device="cpu")
    interactive = Predictor(models["interactive"], device="cpu")
    clicks, corrected = correct_case(automatic, interactive, image, reference, CampaignSettings(max_clicks=3))
    assert 0 <= clicks <= 3 * 2 and corrected.shape == reference.shape and set(np.unique(corrected)) <= {0, 1, 2}
    # A reader content with anything clicks nowhere: the automatic segmentation is the correction.
    zero, kept = correct_case(automatic, interactive, image, reference, CampaignSettings(target_dice=0.0))
    assert zero == 0
    np.testing.assert_array_equal(kept, automatic.predict(image).label_image.array)
    pool, test = campaign_cases(definition, models["automatic"], test=2, seed=0)
    assert (
        len(pool) == 4
        and len(test) == 2
        and not {c.case_id for c in pool + test} & {c.case_id for c in definition.cases[:4]}
    )


def test_both_orders_through_the_command_keep_versions_and_leave_the_dataset_untouched(campaign_setup, tmp_path):
    dataset, models = campaign_setup
    before = {path: path.read_bytes() for path in dataset.parent.rglob("*") if path.is_file()}
    result = attentionseg(
        "campaign", models["automatic"], models["interactive"], dataset, "--out", tmp_path / "work", "--cases", "2",
        "--test", "2", "--update-every", "2", "--update-minutes", "0.05", "--max-clicks", "2", "--json",
        tmp_path / "campaign.json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "campaign.json").read_text())
    for order in ("random", "ranked"):
        points = document[order]
        assert [p["cases"] for p in points] == [0, 2]  # an update after every second case
        assert [p["clicks"] for p in points] == sorted(p["clicks"] for p in points) and points[0]["clicks"] == 0
        assert all(0.0 <= p["test_dice"] <= 1.0 for p in points)
        work = tmp_path / "work" / order
        assert len(load_dataset(work / "dataset" / "dataset.json").cases) == 4 + 2  # the start's and two corrections
        assert [v.version for v in list_versions(work / "models" / "automatic.pt")] == [1, 2]
    assert "| random | 2 |" in result.stdout and "clicks to reach test Dice 0.85" in result.stdout
    assert {path: path.read_bytes() for path in dataset.parent.rglob("*") if path.is_file()} == before
    again = attentionseg("campaign", models["automatic"], models["interactive"], dataset, "--out", tmp_path / "work")
    assert_bad_input(again, "the work folder is not empty")
