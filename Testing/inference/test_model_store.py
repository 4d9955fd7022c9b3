"""The models folder: where it is, atomic no-clobber registration, listing."""

import shutil
from pathlib import Path

import pytest

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_store import (
    MODELS_DIR_ENV,
    default_models_folder,
    list_registered_models,
    register_model,
)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "run" / "model.pt"
    path.parent.mkdir()
    path.write_bytes(b"weights-1")
    return path


def test_default_folder_is_the_environment_variable_else_under_home(monkeypatch, tmp_path):
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "zoo"))
    assert default_models_folder() == tmp_path / "zoo"
    monkeypatch.setenv(MODELS_DIR_ENV, "")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    assert default_models_folder() == Path(tmp_path) / ".attentionseg" / "models"


def test_register_copies_under_the_given_name_and_creates_the_folder(model_file, tmp_path):
    folder = tmp_path / "models" / "nested"
    registered = register_model(model_file, folder, name="liver-unet")
    assert registered == folder / "liver-unet.pt"
    assert registered.read_bytes() == b"weights-1" and model_file.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["liver-unet.pt"]  # no temporary file left


def test_register_never_overwrites_it_numbers_the_new_file(model_file, tmp_path):
    folder = tmp_path / "models"
    first = register_model(model_file, folder, name="liver.pt")
    model_file.write_bytes(b"weights-2")
    second = register_model(model_file, folder, name="liver")
    model_file.write_bytes(b"weights-3")
    third = register_model(model_file, folder, name="liver")
    assert [first.name, second.name, third.name] == ["liver.pt", "liver-2.pt", "liver-3.pt"]
    assert [p.read_bytes() for p in (first, second, third)] == [b"weights-1", b"weights-2", b"weights-3"]


def test_register_default_name_and_unsafe_characters(model_file, tmp_path):
    assert register_model(model_file, tmp_path / "m").name == "model.pt"
    assert register_model(model_file, tmp_path / "m", name="../my model: v1").name == "my_model_v1.pt"
    with pytest.raises(AttentionSegError, match="no usable characters"):
        register_model(model_file, tmp_path / "m", name="///")


def test_register_uses_the_environment_folder_by_default(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "env-models"))
    assert register_model(model_file).parent == tmp_path / "env-models"
    assert list_registered_models() == [tmp_path / "env-models" / "model.pt"]


def test_failed_copy_leaves_nothing_behind(model_file, tmp_path, monkeypatch):
    def broken_copy(source, target):
        Path(target).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", broken_copy)
    with pytest.raises(AttentionSegError, match="cannot register model.pt .disk full."):
        register_model(model_file, tmp_path / "models", name="x")
    assert list((tmp_path / "models").iterdir()) == []


def test_missing_model_file_is_a_user_error(tmp_path):
    with pytest.raises(AttentionSegError, match="model file not found"):
        register_model(tmp_path / "nope.pt", tmp_path / "models")


def test_list_gives_model_files_sorted_and_nothing_for_a_missing_folder(tmp_path):
    assert list_registered_models(tmp_path / "missing") == []
    for name in ("b.pt", "a.pt", "notes.txt", ".a.part"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.pt").mkdir()
    assert list_registered_models(tmp_path) == [tmp_path / "a.pt", tmp_path / "b.pt"]
