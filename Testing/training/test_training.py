"""The trainer: losses and schedules against their formulas, a run folder's contents and events,
reproducibility, resume (also after SIGKILL), distributed training with two CPU processes, the
model file's refusals, and the command line's exit codes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from AttentionSegLib.data.phantoms import write_phantom_dataset
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_file import ModelFileError, load_model_file
from AttentionSegLib.progress import read_events
from AttentionSegLib.training.budget import RunBudget
from AttentionSegLib.training.checkpoint import TrainingState
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.losses import BCEDiceLoss, DiceFocalCELoss, build_loss
from AttentionSegLib.training.schedules import learning_rate_factor
from AttentionSegLib.training.trainer import Trainer, train

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "model": "unet",
    "compact": True,
    "patch_size": [16, 16, 16],
    "batch_size": 2,
    "learning_rate": 1e-2,
    "iterations_per_epoch": 4,
}


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms"), n_cases=6, shape=(20, 24, 20))


def config_for(dataset: Path, run_dir: Path, **overrides) -> TrainingConfig:
    return TrainingConfig(dataset=str(dataset), run_dir=str(run_dir), **{**TINY, "epochs": 2, **overrides})


def events_of(run_dir: Path) -> list[dict]:
    return read_events(run_dir / "progress.jsonl")[0]


def cli(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "AttentionSeg")}
    return subprocess.run(
        [sys.executable, "-m", "AttentionSegLib", *map(str, args)], capture_output=True, text=True, env=env, **kwargs
    )


# ------------------------------------------------------------------------------ losses, schedule
def test_schedules_follow_their_formulas():
    assert learning_rate_factor("poly", 0.5) == pytest.approx(0.5**0.9)
    assert learning_rate_factor("cosine", 0.25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert learning_rate_factor("warmup_cosine", 0.025) == pytest.approx(0.5)
    assert learning_rate_factor("warmup_cosine", 0.05) == pytest.approx(1.0)
    assert learning_rate_factor("constant", 0.9) == 1.0
    assert learning_rate_factor("poly", 1.5) == 0.0


def test_bce_dice_loss_is_binary_cross_entropy_plus_soft_dice():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 5, 6)
    target = (torch.rand(2, 1, 5, 6) > 0.5).long()
    probability, truth = torch.sigmoid(logits), target.float()
    intersection = (probability * truth).sum(dim=(2, 3))
    dice = 1 - (2 * intersection + 1e-5) / (probability.sum(dim=(2, 3)) + truth.sum(dim=(2, 3)) + 1e-5)
    bce = -(truth * torch.log(probability) + (1 - truth) * torch.log(1 - probability)).mean()
    torch.testing.assert_close(BCEDiceLoss()(logits, target), dice.mean() + bce)


def test_dice_focal_ce_adds_cross_entropy_to_dice_focal():
    from monai.losses import DiceFocalLoss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 6)
    target = torch.randint(0, 3, (2, 1, 4, 5, 6))
    probabilities = torch.softmax(logits, dim=1)
    one_hot = F.one_hot(target[:, 0], 3).movedim(-1, 1).float()
    # Soft Dice over the foreground classes only, per sample and class (MONAI's smoothing 1e-5).
    p, t = probabilities[:, 1:], one_hot[:, 1:]
    dice = 1 - (2 * (p * t).sum(dim=(2, 3, 4)) + 1e-5) / (p.sum(dim=(2, 3, 4)) + t.sum(dim=(2, 3, 4)) + 1e-5)
    focal = DiceFocalLoss(to_onehot_y=True, softmax=True, include_background=False, lambda_dice=0.0)(logits, target)
    expected = dice.mean() + focal + F.cross_entropy(logits, target[:, 0])
    torch.testing.assert_close(DiceFocalCELoss()(logits, target), expected)


def test_dice_ce_is_foreground_soft_dice_plus_cross_entropy():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, 6)
    target = torch.randint(0, 3, (2, 1, 4, 5, 6))
    p = torch.softmax(logits, dim=1)[:, 1:]
    t = F.one_hot(target[:, 0], 3).movedim(-1, 1).float()[:, 1:]
    dice = 1 - (2 * (p * t).sum(dim=(2, 3, 4)) + 1e-5) / (p.sum(dim=(2, 3, 4)) + t.sum(dim=(2, 3, 4)) + 1e-5)
    expected = dice.mean() + F.cross_entropy(logits, target[:, 0])
    torch.testing.assert_close(build_loss("dice_ce", deep_supervision=False)(logits, target), expected)


def test_deep_supervision_loss_weights_every_output():
    loss = build_loss("dice_ce", deep_supervision=True)
    target = torch.randint(0, 2, (1, 1, 8, 8))
    full = torch.randn(1, 2, 8, 8)
    with_auxiliary = loss([full, torch.randn(1, 2, 4, 4)], target)
    assert with_auxiliary != loss([full], target)


def test_budget_progress_is_the_larger_of_epochs_and_time_used_less_the_validation_reserve():
    state = TrainingState(elapsed_s=30.0)
    budget = RunBudget(TrainingConfig(dataset="d", model="unet", run_dir="r", epochs=10, time_limit_min=1.0), state)
    assert budget.progress(epochs_done=2, epoch_seconds=0) == pytest.approx(0.5)  # 30 s of 60 s
    assert budget.progress(epochs_done=8, epoch_seconds=0) == pytest.approx(0.8)
    budget.validation_s = 10.0
    assert budget.progress(epochs_done=2, epoch_seconds=5.0) == pytest.approx(35 / 50)
    assert not budget.out_of_time(19.0) and budget.out_of_time(20.0)  # 30 + 20 + 10 reserved = 60
    unlimited = RunBudget(TrainingConfig(dataset="d", model="unet", run_dir="r", epochs=4), state)
    assert not unlimited.limited and not unlimited.out_of_time(1e9)
    assert unlimited.progress(epochs_done=1.5, epoch_seconds=1e9) == pytest.approx(0.375)


def test_learning_rate_follows_the_schedule_step_by_step(phantom_dataset, tmp_path):
    train(config_for(phantom_dataset, tmp_path / "run", epochs=2, schedule="poly", learning_rate=0.01))
    rates = [e["lr"] for e in events_of(tmp_path / "run") if e["event"] == "epoch"]
    # The epoch event reports the rate of its last step (step 4 of 4 starts at 3/4 of the epoch).
    assert rates == pytest.approx([0.01 * (1 - 0.75 / 2) ** 0.9, 0.01 * (1 - 1.75 / 2) ** 0.9])


def test_time_limit_cuts_the_last_epoch_short_then_validates_and_saves(phantom_dataset, tmp_path):
    run_dir = tmp_path / "timed"
    limit_s = 4.0
    summary = train(
        config_for(phantom_dataset, run_dir, epochs=1000, iterations_per_epoch=50, time_limit_min=limit_s / 60)
    )
    events = events_of(run_dir)
    epochs = [e for e in events if e["event"] == "epoch"]
    assert summary["reason"] == "time_limit" and summary["epochs_done"] == len(epochs) < 1000
    assert epochs[-1].get("truncated") is True
    assert [e for e in events if e["event"] == "validation"][-1]["epoch"] == epochs[-1]["epoch"]
    assert (run_dir / "model.pt").is_file()
    # One training step and the final validation may overrun the budget, not a whole epoch.
    assert summary["elapsed_s"] < limit_s + 3.0
    assert epochs[-1]["lr"] < 0.01 * 0.5


def test_the_last_epoch_the_time_budget_allows_is_validated_even_between_validation_epochs(phantom_dataset, tmp_path):
    # One-batch epochs are never cut short (an epoch trains at least one step), so the budget always
    # ends between epochs; with validation every 1000 epochs, that last epoch must still be
    # validated (a PH2 run lost its last two).
    run_dir = tmp_path / "sparse"
    summary = train(
        config_for(phantom_dataset, run_dir, epochs=1000, iterations_per_epoch=1, val_every=1000, time_limit_min=0.05)
    )
    events = events_of(run_dir)
    epochs = [e for e in events if e["event"] == "epoch"]
    validations = [e for e in events if e["event"] == "validation"]
    assert summary["reason"] == "time_limit" and len(epochs) > 1
    assert [e["epoch"] for e in validations] == [epochs[-1]["epoch"]]
    assert summary["best_epoch"] == epochs[-1]["epoch"] and (run_dir / "model.pt").is_file()


# --------------------------------------------------------------------------------- a whole run
def test_run_folder_holds_model_file_checkpoints_config_and_events(phantom_dataset, tmp_path):
    run_dir = tmp_path / "run"
    summary = train(config_for(phantom_dataset, run_dir))
    # plan.json and fingerprint.json: the experiment plan the run took its unset settings from.
    expected = {"model.pt", "checkpoints", "progress.jsonl", "config.json", "plan.json", "fingerprint.json"}
    assert {p.name for p in run_dir.iterdir()} == expected
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    kinds = [event["event"] for event in events_of(run_dir)]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("epoch") == 2 and kinds.count("validation") == 2
    assert kinds.count("checkpoint") >= 3  # last twice, best at least once
    start = events_of(run_dir)[0]
    assert start["labels"] == {"1": "structure_1", "2": "structure_2"} and start["n_train"] + start["n_val"] == 6
    validation = [e for e in events_of(run_dir) if e["event"] == "validation"]
    assert set(validation[0]["dice"]) == {"1", "2"}
    assert summary["model_file"] == str(run_dir / "model.pt") and summary["epochs_done"] == 2
    assert summary["best_mean_dice"] == max(e["mean_dice"] for e in validation)

    model = load_model_file(run_dir / "model.pt")
    assert model.label_values == [0, 1, 2] and model.channel_names == ["MRI"]
    assert model.network["name"] == "unet" and model.network["patch_size"] == [16, 16, 16]
    assert model.preprocessing["target_spacing"] == [1.0, 1.0, 1.0]
    assert model.preprocessing["normalization"]["kind"] == "mri"
    assert model.training["best_epoch"] == summary["best_epoch"]
    assert sorted(model.training["train_cases"] + model.training["val_cases"]) == [f"phantom_{i:03d}" for i in range(6)]
    network = model.build_network()
    with torch.no_grad():
        assert network(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)


def test_same_seed_same_numbers_and_resume_continues_identically(phantom_dataset, tmp_path):
    straight = train(config_for(phantom_dataset, tmp_path / "a", epochs=3))
    again = train(config_for(phantom_dataset, tmp_path / "b", epochs=3))
    # Stop after the first epoch (as the Stop button does), then resume with the same budget.
    stopped = Trainer(config_for(phantom_dataset, tmp_path / "c", epochs=3))
    stopped.echo = lambda event: setattr(stopped, "stop_requested", stopped.stop_requested or event["event"] == "epoch")
    assert stopped.run()["reason"] == "stopped"
    resumed = train(config_for(phantom_dataset, tmp_path / "c", epochs=3), resume=True)

    def losses(name):
        return [e["loss"] for e in events_of(tmp_path / name) if e["event"] == "epoch"]

    assert losses("a") == losses("b") == losses("c")
    assert straight["best_dice"] == again["best_dice"] == resumed["best_dice"]
    weights = [torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)["model"] for name in "ac"]
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0)
    other_seed = train(config_for(phantom_dataset, tmp_path / "d", epochs=1, seed=1))
    assert [e["loss"] for e in events_of(tmp_path / "d") if e["event"] == "epoch"][0] != losses("a")[0]
    assert other_seed["epochs_done"] == 1


def test_sigkill_loses_at_most_the_current_epoch_and_resume_finishes(phantom_dataset, tmp_path):
    run_dir = tmp_path / "killed"
    args = [
        "train",
        phantom_dataset,
        "--model",
        "unet",
        "--compact",
        "--patch",
        16,
        16,
        16,
        "--batch",
        2,
        "--iterations",
        4,
        "--epochs",
        40,
        "--out",
        run_dir,
        "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "AttentionSeg")}
    process = subprocess.Popen([sys.executable, "-m", "AttentionSegLib", *map(str, args)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        checkpoints = [e for e in events_of(run_dir) if e["event"] == "checkpoint" and e["kind"] == "last"]
        if len(checkpoints) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    completed = max(e["epoch"] for e in events_of(run_dir) if e["event"] == "checkpoint")
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert json.loads(checkpoint["state"])["epoch"] >= completed - 1
    result = cli(*args[:-3], "--epochs", completed + 1, "--out", run_dir, "--resume", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["epochs_done"] == completed + 1
    starts = [e for e in events_of(run_dir) if e["event"] == "start"]
    assert starts[-1]["resumed"] is True and starts[-1]["start_epoch"] == json.loads(checkpoint["state"])["epoch"] + 1
    load_model_file(run_dir / "model.pt")
    assert not [p.name for p in run_dir.rglob("*.tmp")], "a resumed run clears what a kill left half-written"


def test_two_process_distributed_run_writes_once(phantom_dataset, tmp_path):
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "AttentionSeg"), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "AttentionSegLib",
        "train",
        str(phantom_dataset),
        "--model",
        "unet",
        "--compact",
        "--patch",
        "16",
        "16",
        "16",
        "--batch",
        "2",
        "--iterations",
        "3",
        "--epochs",
        "2",
        "--out",
        str(run_dir),
        "--device",
        "cpu",
        "--json",
        "--quiet",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    events = events_of(run_dir)
    assert [e["event"] for e in events].count("start") == 1 and events[0]["world_size"] == 2
    assert [e["event"] for e in events].count("epoch") == 2
    assert load_model_file(run_dir / "model.pt").training["epochs"] >= 1


# --------------------------------------------------------------------------- model file refusals
def test_model_file_refuses_missing_damaged_foreign_and_newer_files(phantom_dataset, tmp_path):
    run_dir = tmp_path / "run"
    train(config_for(phantom_dataset, run_dir, epochs=1))
    model_path = run_dir / "model.pt"
    with pytest.raises(ModelFileError, match="not found"):
        load_model_file(tmp_path / "absent.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(model_path.read_bytes()[:2000])
    with pytest.raises(ModelFileError, match="damaged"):
        load_model_file(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    with pytest.raises(ModelFileError, match="damaged"):
        load_model_file(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ModelFileError, match="not an AttentionSeg model"):
        load_model_file(foreign)
    model = load_model_file(model_path)
    newer = tmp_path / "newer.pt"
    payload = torch.load(model_path, weights_only=True)
    metadata = json.loads(payload["attentionseg_model"])
    metadata["format_version"] = 99
    torch.save({**payload, "attentionseg_model": json.dumps(metadata)}, newer)
    with pytest.raises(ModelFileError, match="newer"):
        load_model_file(newer)
    model.state_dict = {key: value for key, value in list(model.state_dict.items())[1:]}
    with pytest.raises(ModelFileError, match="do not fit"):
        model.build_network()


# ----------------------------------------------------------------------------- other data shapes
def test_two_dimensional_dataset_and_slice_wise_training(tmp_path):
    dataset_2d = write_phantom_dataset(tmp_path / "flat", n_cases=5, shape=(32, 32), n_labels=1)
    summary = train(
        TrainingConfig(
            dataset=str(dataset_2d),
            run_dir=str(tmp_path / "r2"),
            model="iacnn",
            compact=True,
            patch_size=[32, 32],
            batch_size=2,
            epochs=1,
            iterations_per_epoch=2,
        )
    )
    model = load_model_file(summary["model_file"])
    assert model.network["spatial_dims"] == 2 and model.output_activation == "sigmoid"
    assert model.network["out_channels"] == 1 and model.label_values == [0, 1]

    dataset_3d = write_phantom_dataset(tmp_path / "vol", n_cases=5, shape=(6, 32, 32), n_labels=1)
    summary = train(
        TrainingConfig(
            dataset=str(dataset_3d),
            run_dir=str(tmp_path / "r3"),
            model="unet",
            compact=True,
            slice_wise=True,
            batch_size=4,
            epochs=1,
            iterations_per_epoch=2,
        )
    )
    model = load_model_file(summary["model_file"])
    assert model.network["spatial_dims"] == 2 and model.preprocessing["slice_wise"] is True
    assert model.preprocessing["patch_size"][0] == 1


# ---------------------------------------------------------------------------- command line
def test_bad_training_input_exits_2_with_one_line_and_touches_nothing(phantom_dataset, tmp_path, capsys):
    from AttentionSegLib.cli import main

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    cases = [
        (["--model", "no_such_net", "--out", tmp_path / "x"], "unknown model"),
        (["--model", "unet", "--out", occupied], "not empty"),
        (["--model", "unet", "--out", tmp_path / "fresh", "--resume"], "nothing to resume"),
        (["--model", "unet", "--out", tmp_path / "y", "--patch", 15, 16, 16], "patch"),
        (["--model", "unet", "--out", tmp_path / "z", "--epochs", 0], "epochs"),
    ]
    for arguments, message in cases:
        assert main(["train", str(phantom_dataset), *map(str, arguments)]) == 2, arguments
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1, error
    assert sorted(os.listdir(occupied)) == ["notes.txt"] and (occupied / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "x").exists() and not (tmp_path / "fresh").exists()
    missing = cli("train", tmp_path / "absent.json", "--model", "unet", "--out", tmp_path / "w")
    assert missing.returncode == 2 and "absent.json" in missing.stderr and "Traceback" not in missing.stderr


def test_config_refuses_bad_recipe_values():
    with pytest.raises(AttentionSegError, match="loss"):
        TrainingConfig(dataset="d", model="unet", run_dir="r", loss="mse").resolved()
    resolved = TrainingConfig(dataset="d", model="swinnext", run_dir="r").resolved()
    assert resolved.loss == "dice_focal_ce" and np.isclose(resolved.learning_rate, 1e-4)


def test_clinical_features_reach_the_network_and_the_model_file(tmp_path):
    dataset = write_phantom_dataset(tmp_path / "clinical", n_cases=5, shape=(32, 32, 32), n_labels=1)
    rows = ["case_id,age,dose"] + [f"phantom_{i:03d},{40 + 7 * i},{1.5 * i}" for i in range(5)]
    (dataset.parent / "clinical.csv").write_text("\n".join(rows) + "\n")
    definition = json.loads(dataset.read_text())
    definition["clinical_features"] = {"variables": ["age", "dose"], "file": "clinical.csv", "id_column": "case_id"}
    dataset.write_text(json.dumps(definition))
    summary = train(
        TrainingConfig(
            dataset=str(dataset),
            run_dir=str(tmp_path / "run"),
            model="swinnext",
            compact=True,
            patch_size=[32, 32, 32],
            batch_size=2,
            epochs=1,
            iterations_per_epoch=2,
        )
    )
    model = load_model_file(summary["model_file"])
    assert model.network["clinical_features"] == 2 and model.clinical["variables"] == ["age", "dose"]
    train_ages = [40 + 7 * int(case[-3:]) for case in model.training["train_cases"]]
    assert model.clinical["mean"][0] == pytest.approx(np.mean(train_ages))
    assert model.clinical["std"][0] == pytest.approx(np.std(train_ages))
    network = model.build_network()
    assert network.clinical_attention.clinical_features == 2


def test_mirror_axes_reach_the_model_file_and_bad_axes_are_refused(phantom_dataset, tmp_path):
    train(config_for(phantom_dataset, tmp_path / "lr", epochs=1, mirror_axes=[2]))
    assert load_model_file(tmp_path / "lr" / "model.pt").preprocessing["mirror_axes"] == [2]
    train(config_for(phantom_dataset, tmp_path / "all", epochs=1))
    assert load_model_file(tmp_path / "all" / "model.pt").preprocessing["mirror_axes"] == [0, 1, 2]
    with pytest.raises(AttentionSegError, match="mirror axes must be in 0..2"):
        train(config_for(phantom_dataset, tmp_path / "bad", epochs=1, mirror_axes=[3]))
    assert not (tmp_path / "bad").exists()
