"""Shared fixtures: small phantoms made in code, so the suite needs no external data."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Fingerprints of the test datasets are cached in a folder of the test session (child processes
# inherit it), never in the user's ~/.attentionseg.
_CACHE_DIR = tempfile.mkdtemp(prefix="attentionseg-test-cache-")
os.environ["ATTENTIONSEG_CACHE_DIR"] = _CACHE_DIR
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)

from AttentionSegLib.data.phantoms import ellipsoid_label_map, perturbed_label_map  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def attentionseg(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Run the ``attentionseg`` command of this checkout in a child process (text output captured)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "AttentionSeg"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "AttentionSegLib", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
    )


def assert_bad_input(result, *fragments):
    """A command refused bad input: exit code 2, one line on stderr (no traceback) holding each fragment."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def oblique_direction(degrees: float = 20.0) -> np.ndarray:
    """A rotation about two axes: an oblique, non-axis-aligned direction matrix."""
    a, b = np.deg2rad(degrees), np.deg2rad(degrees / 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


@pytest.fixture
def anisotropic_pair():
    """A 3D multi-label reference and a shifted/eroded prediction with anisotropic spacing."""
    spacing = (2.5, 0.9, 0.7)  # mm per array axis (k, j, i)
    reference = ellipsoid_label_map((24, 48, 56), 5, seed=7, spacing_mm=spacing)
    prediction = perturbed_label_map(reference, seed=8, max_shift_mm=3.0, spacing_mm=spacing)
    return prediction, reference, spacing


# dcmqi's key names, as in its seg-example.json.
LIVER_TERMINOLOGY = {
    "SegmentedPropertyCategoryCodeSequence": {
        "CodeValue": "85756007",
        "CodingSchemeDesignator": "SCT",
        "CodeMeaning": "Tissue",
    },
    "SegmentedPropertyTypeCodeSequence": {
        "CodeValue": "10200004",
        "CodingSchemeDesignator": "SCT",
        "CodeMeaning": "Liver",
    },
}


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory):
    """A phantom dataset on an oblique, anisotropic grid and two small models trained on it:
    ``good`` (20 short epochs) and ``short`` (2). Returns (dataset.json, [good, short])."""
    from AttentionSegLib.data.phantoms import write_phantom_dataset
    from AttentionSegLib.training.config import TrainingConfig
    from AttentionSegLib.training.trainer import train

    folder = tmp_path_factory.mktemp("trained")
    dataset = write_phantom_dataset(
        folder / "data",
        n_cases=8,
        shape=(16, 24, 24),
        spacing_mm=(2.0, 1.0, 1.0),
        origin_mm=(5.0, -10.0, 20.0),
        direction=oblique_direction(),
        label_names=["liver", "spleen"],
        terminology={"1": LIVER_TERMINOLOGY},  # spleen left uncoded: generic codes
    )
    models = []
    for name, epochs in (("good", 20), ("short", 2)):
        config = TrainingConfig(
            dataset=str(dataset),
            model="unet",
            run_dir=str(folder / name),
            compact=True,
            patch_size=[16, 16, 16],
            epochs=epochs,
            iterations_per_epoch=8,
            learning_rate=1e-2,
            batch_size=2,
        )
        models.append(train(config)["model_file"])
    from pathlib import Path

    return dataset, [Path(model) for model in models]


@pytest.fixture(scope="session")
def interactive_model(trained_models, tmp_path_factory):
    """An interactive (click-conditioned) compact UNet trained briefly on the oblique, anisotropic
    phantom dataset of ``trained_models``. Returns (dataset.json, the run's summary)."""
    from AttentionSegLib.training.config import TrainingConfig
    from AttentionSegLib.training.trainer import train

    dataset, _ = trained_models
    config = TrainingConfig(
        dataset=str(dataset),
        model="unet",
        run_dir=str(tmp_path_factory.mktemp("interactive") / "run"),
        compact=True,
        patch_size=[16, 16, 16],
        epochs=12,
        iterations_per_epoch=8,
        learning_rate=1e-2,
        batch_size=2,
        interactive=True,
        use_plan=False,
    )
    return dataset, train(config)


def held_out_image_and_reference(dataset, model_file):
    """The first validation case of ``model_file`` (read as training reads it): (image, its first
    channel; reference label array on that grid)."""
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
    from AttentionSegLib.inference.model_file import load_model_file

    definition = load_dataset(dataset)
    case = definition.case(load_model_file(model_file).training["val_cases"][0])
    image = read_case_image(case, definition).channel(0)
    return image, read_case_label(case, definition, image)
