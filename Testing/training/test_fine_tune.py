"""Fine-tuning (``attentionseg train --init MODEL_FILE``): the run keeps the base model's network,
grid and normalisation, starts from its weights (a grown label set keeps the old channels at their
labels' places), records which file it started from, and refuses what cannot continue in one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from AttentionSegLib.data.dataset import load_dataset
from AttentionSegLib.data.phantoms import write_phantom_dataset
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_file import file_digest, load_model_file
from AttentionSegLib.models import build_from_spec
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.fine_tune import check_dataset_fits, load_base_weights, settings_from_model
from AttentionSegLib.training.run_plan import plan_training
from AttentionSegLib.training.trainer import train
from conftest import assert_bad_input, attentionseg

TINY = {"model": "unet", "compact": True, "batch_size": 2, "learning_rate": 1e-2, "iterations_per_epoch": 3}


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Two labels, an automatic and an interactive base trained on them (one epoch each), and a
    dataset with a third label."""
    root = tmp_path_factory.mktemp("fine-tune")
    two = write_phantom_dataset(root / "two", n_cases=5, shape=(16, 20, 16), n_labels=2)
    three = write_phantom_dataset(root / "three", n_cases=5, shape=(16, 20, 16), n_labels=3, seed=1)
    torch.set_num_threads(1)
    models = {}
    for kind, flags in (("automatic", {}), ("interactive", {"interactive": True})):
        config = TrainingConfig(str(two), run_dir=str(root / kind), epochs=1, patch_size=[16, 16, 16], **TINY, **flags)
        models[kind] = Path(train(config)["model_file"])
    return root, two, three, models


def test_a_fine_tune_keeps_the_models_grid_and_normalisation_and_starts_from_its_weights(bases):
    root, two, three, models = bases
    base = load_model_file(models["automatic"])
    # The planner would choose otherwise for this dataset (another spacing); the base model decides.
    config = TrainingConfig(str(three), "", str(root / "tuned"), init=str(models["automatic"]), epochs=1)
    settled = settings_from_model(config)
    assert settled.model == "unet" and settled.patch_size == list(base.patch_size)
    assert settled.target_spacing == list(base.target_spacing) and settled.options == base.network["options"]
    plan, _, _ = plan_training(settled.resolved(), load_dataset(three))
    assert plan.normalization == base.normalization  # the model's statistics, not refitted on "three"
    assert plan.label_values == (0, 1, 2, 3)
    # Weights: every layer but the output copied; the output's rows of labels 0-2 are the base's, 3 is new.
    torch.manual_seed(0)
    network = build_from_spec(plan.network)
    assert load_base_weights(network, base, plan, str(models["automatic"])) == [3]
    state = network.state_dict()
    grown = {}
    for key, value in base.state_dict.items():
        axes = [d for d, (a, b) in enumerate(zip(value.shape, state[key].shape)) if a != b]
        if axes:  # label axes: 3 labels (with background) in the base, 4 here
            assert all((value.shape[d], state[key].shape[d]) == (3, 4) for d in axes), key
            grown[key] = axes
            old_part = state[key][tuple(slice(0, 3) if d in axes else slice(None) for d in range(value.ndim))]
            new_part = state[key].narrow(axes[0], 3, 1)
            assert torch.equal(old_part, value) and new_part.abs().sum() > 0, key  # new: initialised, not zero
        else:
            assert torch.equal(state[key], value), key
    assert grown  # the output layer(s)

    summary = train(dataclasses.replace(config, epochs=1, iterations_per_epoch=2, learning_rate=1e-3))
    tuned = load_model_file(summary["model_file"])
    assert tuned.training["initialised_from"] == {
        "file": models["automatic"].name,
        "sha256": file_digest(models["automatic"]),
        "dataset": base.training["dataset"],
        "name": None,
    }
    assert tuned.target_spacing == base.target_spacing and tuned.patch_size == base.patch_size
    assert [label["name"] for label in tuned.foreground_labels] == ["structure_1", "structure_2", "structure_3"]
    start = next(json.loads(line) for line in (root / "tuned" / "progress.jsonl").read_text().splitlines())
    assert start["initialised_from"] == str(models["automatic"]) and start["new_label_channels"] == [3]


def test_an_interactive_model_fine_tunes_as_interactive_with_its_click_radius(bases, tmp_path):
    root, two, three, models = bases
    base = load_model_file(models["interactive"])
    config = TrainingConfig(str(three), "", str(tmp_path / "run"), init=str(models["interactive"]), epochs=1)
    tuned = load_model_file(train(dataclasses.replace(config, iterations_per_epoch=2))["model_file"])
    assert tuned.is_interactive and tuned.prompt_encoding == base.prompt_encoding
    assert [label["name"] for label in tuned.interactive["object_labels"]] == [
        "structure_1",
        "structure_2",
        "structure_3",
    ]


def test_what_cannot_continue_is_refused_in_one_line_and_writes_nothing(bases, tmp_path):
    root, two, three, models = bases
    automatic = str(models["automatic"])
    renamed = write_phantom_dataset(tmp_path / "renamed", n_cases=3, shape=(16, 20, 16), label_names=["liver", "x"])
    one = write_phantom_dataset(tmp_path / "one", n_cases=3, shape=(16, 20, 16), n_labels=1)
    cases = [
        ((two, "--init", automatic, "--model", "segresnet"), "the model's model is unet, the run asks for segresnet"),
        ((two, "--init", automatic, "--interactive"), "the model's interactive is False"),
        ((renamed, "--init", automatic), "label 1 is 'structure_1' in the model and 'liver' in the dataset"),
        ((one, "--init", automatic), "the dataset has no label 2 (structure_2) that the model segments"),
        ((two, "--init", tmp_path / "missing.pt"), "missing.pt: model file not found"),
    ]
    for number, (arguments, message) in enumerate(cases):
        out = tmp_path / f"run{number}"
        result = attentionseg("train", *arguments, "--out", out, "--epochs", "1")
        assert_bad_input(result, message)
        assert not out.exists() or not any(out.iterdir())
    # Another channel count, on the plan of a real run.
    base = load_model_file(automatic)
    settled = settings_from_model(TrainingConfig(str(two), "", str(tmp_path / "x"), init=automatic)).resolved()
    plan, _, _ = plan_training(settled, load_dataset(two))
    with pytest.raises(AttentionSegError, match=r"reads 1 image channel\(s\) \(.*\), the dataset has 2"):
        check_dataset_fits(base, dataclasses.replace(plan, channel_names=("t1", "t2")), automatic)


def test_the_web_pages_training_panel_fine_tunes_the_model_it_names(bases, tmp_path):
    from AttentionSegLib.web.panels.training import run_config

    root, two, three, models = bases
    # The network and interactive choices of the panel give way to the model file's.
    config = run_config(str(two), "segresnet", str(tmp_path / "run"), 0, True, "cpu", str(models["automatic"]))
    assert (config.model, config.interactive, config.init) == ("", False, str(models["automatic"]))
    tuned = load_model_file(train(dataclasses.replace(config, epochs=1, iterations_per_epoch=1))["model_file"])
    assert tuned.network["name"] == "unet" and tuned.training["initialised_from"]["file"] == "model.pt"
    with pytest.raises(AttentionSegError, match="dataset definition"):
        run_config("", "unet", str(tmp_path / "other"), 0, False, "cpu", None)
