"""Resources checked before the work: a segmentation or a training step that will not fit the free
memory is refused in one line with the figures and what to change; on CUDA, logits that do not
fit the GPU beside the windows are stitched in host memory instead."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.memory_check import check_segmentation_memory, estimate_segmentation_memory
from AttentionSegLib.inference.predictor import Predictor
from AttentionSegLib.io.image import Image

GiB = 1 << 30


@pytest.fixture(scope="module")
def predictor(trained_models):
    _, (model, _) = trained_models
    return Predictor(model, device="cpu")


def big_ct() -> Image:
    # 512 x 512 x 1000 int16 voxels at 0.8 x 0.8 x 1 mm: a large CT, never allocated (broadcast view)
    return Image(np.broadcast_to(np.int16(0), (1000, 512, 512)), (0.8, 0.8, 1.0))


def test_the_estimate_counts_the_arrays_a_segmentation_holds(predictor):
    image = big_ct()
    estimate = estimate_segmentation_memory(predictor, image)
    n_input = 1000 * 512 * 512
    grid = estimate.model_grid  # the model's spacing is (2, 1, 1) mm in array order
    assert grid == (500, 410, 410)
    n_model = int(np.prod(grid))
    assert estimate.parts["input"] == n_input * 2  # int16 as read
    assert estimate.parts["logits"] == n_model * (3 + 1) * 4  # 3 classes and MONAI's count map, float32
    assert estimate.parts["labels"] == 2 * n_input
    assert estimate.parts["windows"] > 0 and estimate.device_bytes == 0
    assert (
        estimate.host_bytes
        == estimate.parts["input"]
        + max(estimate.parts["resampling"], n_model * 4 + estimate.parts["logits"] + estimate.parts["windows"])
        + estimate.parts["labels"]
    )


def test_a_segmentation_that_will_not_fit_is_refused_with_the_figures(predictor):
    with pytest.raises(AttentionSegError) as error:
        check_segmentation_memory(predictor, big_ct(), "big_ct.nii.gz", available_host=2 * GiB)
    message = str(error.value)
    assert "\n" not in message and message.startswith("big_ct.nii.gz: segmenting needs about")
    assert "2 GiB are available" in message and "410x410x500 voxels" in message and "crop" in message
    assert (
        check_segmentation_memory(predictor, big_ct(), "big_ct.nii.gz", available_host=64 * GiB).host_bytes < 64 * GiB
    )


def test_on_cuda_logits_too_big_for_the_gpu_are_stitched_on_the_host(trained_models):
    _, (model, _) = trained_models
    gpu = Predictor(model, device="cpu")
    gpu.device = torch.device("cuda")  # the estimate only reads the device type: no GPU needed
    image = big_ct()
    full = estimate_segmentation_memory(gpu, image)
    assert full.device_bytes > full.parts["logits"]
    fits_windows = full.device_bytes - full.parts["logits"] + 1
    estimate = check_segmentation_memory(gpu, image, "ct", available_host=64 * GiB, available_device=fits_windows)
    assert estimate.stitch_on_host and estimate.device_bytes < fits_windows
    with pytest.raises(AttentionSegError, match="of GPU memory .* use --device cpu"):
        check_segmentation_memory(gpu, image, "ct", available_host=64 * GiB, available_device=1 << 20)


def test_segment_refuses_in_one_line_and_writes_nothing(monkeypatch, trained_models, tmp_path, capsys):
    from AttentionSegLib.cli import main
    from AttentionSegLib.data.dataset import load_dataset

    dataset, (model, _) = trained_models
    image = load_dataset(dataset).cases[0].images[0]
    monkeypatch.setattr("AttentionSegLib.inference.memory_check.available_memory_bytes", lambda: 1 << 16)
    out = tmp_path / "p.nii.gz"
    assert main(["segment", str(image), "--model", str(model), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "segmenting needs about" in lines[0] and "64 KiB are available" in lines[0]
    assert not out.exists()


def test_a_training_step_that_will_not_fit_is_refused_before_the_run_folder_is_made(monkeypatch, tmp_path):
    from AttentionSegLib.data.phantoms import write_phantom_dataset
    from AttentionSegLib.training.config import TrainingConfig
    from AttentionSegLib.training.trainer import train

    dataset = write_phantom_dataset(tmp_path / "data", n_cases=4, shape=(8, 8, 8))
    monkeypatch.setattr("AttentionSegLib.resources.available_memory_bytes", lambda: 1 << 20)
    config = TrainingConfig(dataset=str(dataset), model="unet", run_dir=str(tmp_path / "run"), epochs=1, compact=True)
    with pytest.raises(
        AttentionSegError, match=r"one training step of unet .* needs about .* of memory, 1 MiB are free"
    ):
        train(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model_rows, output_rows, slabs", [(40, 100, 3), (100, 40, 4), (37, 37, 5), (12, 200, 2)])
def test_slab_decisions_equal_the_whole_volumes_exactly_on_the_same_logits(model_rows, output_rows, slabs):
    from AttentionSegLib.inference.window import logits_to_classes, slab_rows

    generator = torch.Generator().manual_seed(model_rows)
    logits = torch.randn((3, model_rows, 9, 11), generator=generator)
    shape = (output_rows, 14, 10)
    whole = logits_to_classes(logits, shape)
    parts = slab_rows(model_rows, output_rows, slabs)
    assert [first for (first, _), _ in parts][0] == 0 and parts[-1][0][1] == output_rows
    assert all(parts[i][0][1] == parts[i + 1][0][0] for i in range(len(parts) - 1))  # every row once
    pieces = []
    for (first, last), (lower, upper) in parts:
        start, stop = max(0, lower - 1), upper  # the model slices a slab holds (a halo of 1 here)
        pieces.append(
            logits_to_classes(
                logits[:, start:stop], shape, rows=(first, last), source_start=start, source_total=model_rows
            )
        )
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


def test_an_image_too_large_for_memory_in_one_piece_is_segmented_in_slabs(monkeypatch, trained_models, capsys):
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.io.image import read_image

    _, (model, _) = trained_models
    dataset, _ = trained_models
    case = load_dataset(dataset).cases[0]
    small = read_image(case.images[0])
    # the case repeated 12 times along its first axis: 192 slices at 2 mm (windows of 16)
    image = small.with_array(np.concatenate([small.array] * 12, axis=0))
    predictor = Predictor(model, device="cpu")
    whole = predictor.predict(image).label_image.array
    full = estimate_segmentation_memory(predictor, image)
    # as much memory as everything but half the logits: slabs are needed and enough
    budget = full.host_bytes - full.parts["logits"] // 2
    monkeypatch.setattr("AttentionSegLib.inference.memory_check.available_memory_bytes", lambda: budget)
    monkeypatch.setattr("AttentionSegLib.inference.memory_check._QUICK_SHARE", 0.0)
    warnings = []
    slabbed = Predictor(model, device="cpu", warn=warnings.append)
    estimate = check_segmentation_memory(slabbed, image, "long", available_host=budget)
    assert estimate.slabs >= 2 and estimate.host_bytes <= budget
    fractions = []
    labels = slabbed.predict(image, progress=fractions.append).label_image.array
    assert any("segmented in" in w and "slabs" in w for w in warnings)
    assert fractions[-1] == pytest.approx(1.0) and fractions == sorted(fractions)
    # windows sit at other places in a slab than in the whole image: a few border voxels may differ
    assert np.mean(labels == whole) > 0.99
