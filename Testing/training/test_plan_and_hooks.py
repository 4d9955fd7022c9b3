"""The seams of the trainer: the plan (frozen, made once), the clinical z-score shared with the
predictor, the validation hook against the rule it has always followed, and the per-step
progress callback."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from AttentionSegLib.data.dataset import load_dataset
from AttentionSegLib.data.phantoms import write_phantom_dataset
from AttentionSegLib.data.preprocessing import ClinicalNormalization
from AttentionSegLib.inference.window import WindowSegmenter
from AttentionSegLib.progress import read_events
from AttentionSegLib.training.cases import PreparedCase
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.run_plan import plan_training
from AttentionSegLib.training.trainer import Trainer, train

TINY = {"model": "unet", "compact": True, "patch_size": [16, 16, 16], "batch_size": 2, "iterations_per_epoch": 4}


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms"), n_cases=6, shape=(20, 24, 20))


def config_for(dataset, run_dir, **overrides) -> TrainingConfig:
    return TrainingConfig(dataset=str(dataset), run_dir=str(run_dir), **{**TINY, "epochs": 1, **overrides})


def test_the_plan_is_frozen_and_holds_the_run_decisions(phantom_dataset, tmp_path):
    config = config_for(phantom_dataset, tmp_path / "run").resolved()
    plan, train_cases, val_cases = plan_training(config, load_dataset(config.dataset))
    assert plan.label_values == (0, 1, 2) and plan.label_names == {0: "background", 1: "structure_1", 2: "structure_2"}
    assert plan.patch_size == (16, 16, 16) and plan.mirror_axes == (0, 1, 2) and not plan.binary_sigmoid
    assert [case.case_id for case in train_cases] == list(plan.train_cases)
    assert [case.case_id for case in val_cases] == list(plan.val_cases)
    assert plan.network["out_channels"] == 3 and plan.network["patch_size"] == [16, 16, 16]
    assert plan.labels[0] == {"value": 0, "name": "background", "color": [0, 0, 0]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.patch_size = (8, 8, 8)
    assert not (tmp_path / "run").exists()  # planning writes nothing


def test_clinical_z_score_fits_on_training_values_and_is_stored_as_before():
    z = ClinicalNormalization.fit(["age", "sex", "dose"], [[50.0, 1.0, np.nan], [70.0, 1.0, 2.0], [60.0, 1.0, 4.0]])
    assert z.as_dict() == {"variables": ["age", "sex", "dose"], "mean": [60.0, 1.0, 3.0], "std": [z.std[0], 1.0, 1.0]}
    assert z.std[0] == pytest.approx(np.std([50.0, 70.0, 60.0]))  # a constant variable keeps std 1
    np.testing.assert_allclose(z.apply([70.0, 1.0, np.nan]), [10.0 / z.std[0], 0.0, 0.0])  # missing: the mean
    again = ClinicalNormalization.from_dict(z.as_dict())
    np.testing.assert_array_equal(again.apply([42.0, 3.0, 5.0]), z.apply([42.0, 3.0, 5.0]))


class NearestClass(torch.nn.Module):
    """Logits whose argmax is the class nearest the voxel's value: predictions made to order."""

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(3, dtype=window.dtype).view(1, 3, 1, 1, 1)
        return -((window - classes) ** 2)


def replaced_validation_rule(predictions, references, label_values) -> dict[int, float]:
    """The trainer's Dice rule before ``dice_per_label``: a label absent from both maps of a case
    does not count for that case."""
    scores = {value: [] for value in label_values[1:]}
    for prediction, reference in zip(predictions, references):
        for index, value in enumerate(label_values[1:], start=1):
            predicted, expected = prediction == index, reference == index
            total = int(predicted.sum() + expected.sum())
            if total:
                scores[value].append(2.0 * int((predicted & expected).sum()) / total)
    return {value: float(np.mean(values)) if values else float("nan") for value, values in scores.items()}


def test_validation_dice_skips_labels_absent_from_both_maps_of_a_case(phantom_dataset, tmp_path):
    trainer = Trainer(config_for(phantom_dataset, tmp_path / "run"))
    trainer.log = None
    trainer.setup()
    network_dice = trainer.validate()
    predictions = [
        trainer.segmenter.classes(trainer.segmenter.logits(torch.from_numpy(c.image)[None])) for c in trainer.val_cases
    ]
    assert network_dice == replaced_validation_rule(predictions, [c.label[0] for c in trainer.val_cases], (0, 1, 2))

    shape = (12, 12, 12)
    half = np.zeros((1, *shape), np.int64)
    half[0, :6], half[0, 6:] = 1, 2
    trainer.val_cases = [
        PreparedCase("mixed", np.ones((1, *shape), np.float32), half, None),  # 1 predicted: Dice 2/3 and 0
        PreparedCase("empty", np.zeros((1, *shape), np.float32), np.zeros((1, *shape), np.int64), None),
        PreparedCase("one", np.ones((1, *shape), np.float32), np.ones((1, *shape), np.int64), None),  # 1, -
    ]
    trainer.segmenter = WindowSegmenter(NearestClass(), (8, 8, 8))
    dice = trainer.validate()
    assert dice == {1: pytest.approx((2 / 3 + 1) / 2), 2: 0.0}
    predictions = [
        trainer.segmenter.classes(trainer.segmenter.logits(torch.from_numpy(c.image)[None])) for c in trainer.val_cases
    ]
    expected = replaced_validation_rule(predictions, [c.label[0] for c in trainer.val_cases], (0, 1, 2))
    assert dice == expected and not math.isnan(dice[2])


def test_step_progress_reports_every_step_with_the_running_mean_loss(phantom_dataset, tmp_path):
    calls = []
    train(config_for(phantom_dataset, tmp_path / "run"), step_progress=lambda *call: calls.append(call))
    assert [call[:3] for call in calls] == [(1, step, 4) for step in range(1, 5)]
    epoch = next(e for e in read_events(tmp_path / "run" / "progress.jsonl")[0] if e["event"] == "epoch")
    assert calls[-1][3] == epoch["loss"]
