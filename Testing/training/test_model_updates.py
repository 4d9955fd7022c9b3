"""Learning from corrections: a correction saved into the dataset becomes the model's next version
(``attentionseg update-model``), every version is kept and listed, rollback is one step, and an
update that cannot happen changes nothing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from AttentionSegLib.data.corrections import add_training_case
from AttentionSegLib.data.dataset import load_dataset
from AttentionSegLib.data.phantoms import write_phantom_dataset
from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_file import load_model_file
from AttentionSegLib.inference.model_store import list_registered_models
from AttentionSegLib.inference.model_versions import list_versions, rollback
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.trainer import train
from AttentionSegLib.training.update_model import new_cases, update_model
from conftest import assert_bad_input, attentionseg


@pytest.fixture()
def model_and_dataset(tmp_path):
    """A model trained one short epoch on 5 phantoms, in a models folder, and its dataset with one
    correction saved since (a phantom the model never saw)."""
    torch.set_num_threads(1)
    dataset = write_phantom_dataset(tmp_path / "data", n_cases=5, shape=(16, 20, 16))
    config = TrainingConfig(
        str(dataset), "unet", str(tmp_path / "run"), compact=True, patch_size=[16, 16, 16], epochs=1,
        iterations_per_epoch=2, batch_size=2, learning_rate=1e-2,
    )  # fmt: skip
    models = tmp_path / "models"
    models.mkdir()
    model = models / "liver.pt"
    shutil.copy(train(config)["model_file"], model)
    other = write_phantom_dataset(tmp_path / "other", n_cases=1, shape=(16, 20, 16), seed=9)
    definition = load_dataset(other)
    case = definition.cases[0]
    image = read_case_image(case, definition)
    label = read_case_label(case, definition, image.channel(0))
    added = add_training_case(dataset, image, image.channel(0).with_array(label, has_channels=False))
    return model, dataset, added["case_id"]


def test_an_update_becomes_the_next_version_and_rollback_returns_to_the_first(model_and_dataset, tmp_path):
    model, dataset, case_id = model_and_dataset
    original = model.read_bytes()
    assert new_cases(model, dataset) == [case_id]
    run = tmp_path / "update"
    result = attentionseg("update-model", model, dataset, "--minutes", "0.1", "--device", "cpu", "--out", run)
    assert result.returncode == 0, result.stderr
    assert "version 2 (from version 1, 1 case(s) added) is now current" in result.stderr
    updated = load_model_file(model)
    assert updated.training["version"]["version"] == 2 and updated.training["version"]["cases_added"] == [case_id]
    assert updated.training["initialised_from"]["file"] == "liver.pt"
    versions = list_versions(model)
    assert [(v.version, v.base_version, v.current) for v in versions] == [(1, None, False), (2, 1, True)]
    folder = model.parent / "versions" / "liver"
    assert (folder / "v1.pt").read_bytes() == original and (folder / "v2.pt").read_bytes() == model.read_bytes()
    assert case_id in model.with_suffix(".md").read_text() and "update-model" in model.with_suffix(".md").read_text()
    assert list_registered_models(model.parent) == [model]  # versions are not listed as models
    listed = json.loads(attentionseg("versions", model, "--json").stdout)
    assert [v["current"] for v in listed] == [False, True]
    # The update saw the new case: a second one has nothing new and changes nothing.
    before = model.read_bytes()
    assert_bad_input(attentionseg("update-model", model, dataset, "--minutes", "0.1"), "has not trained on")
    assert model.read_bytes() == before and len(list_versions(model)) == 2
    # Rollback, in one step: the file is version 1 again, the history keeps version 2.
    result = attentionseg("versions", model, "--rollback", "1")
    assert result.returncode == 0 and "version 1 is current again" in result.stderr
    assert model.read_bytes() == original
    assert [v.current for v in list_versions(model)] == [True, False]
    with pytest.raises(AttentionSegError, match="no version 7"):
        rollback(model, 7)


def test_an_update_that_fails_leaves_the_model_and_its_versions_as_they_were(model_and_dataset, tmp_path):
    model, dataset, _ = model_and_dataset
    before = model.read_bytes()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("another run's file")
    with pytest.raises(AttentionSegError, match="not empty"):
        update_model(model, dataset, minutes=0.1, device="cpu", run_dir=busy)
    assert model.read_bytes() == before and not (model.parent / "versions").exists()
    assert_bad_input(attentionseg("versions", model, "--rollback", "1"), "never updated")
