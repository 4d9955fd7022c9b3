"""The sliding-window segmenter, the one inference path of the predictor and the trainer's
validation: against the validation loop it replaced, one window against a direct forward pass,
the logits -> classes decision against interpolation then argmax, and the predictor's
independence from the training package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from AttentionSegLib.inference.window import WindowSegmenter, logits_to_classes, window_count
from AttentionSegLib.models import build_model

ROOT = Path(__file__).resolve().parents[2]


def tiny_unet(out_channels: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    options = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}
    return build_model("unet", 3, 1, out_channels, (16, 16, 16), **options).eval()


def replaced_validation_classes(network, image: torch.Tensor, sigmoid: bool) -> np.ndarray:
    """The trainer's validation before the segmenter: MONAI's sliding window with Gaussian blending,
    overlap 0.5, 4 windows per batch, then argmax (or logit > 0) on the same grid."""
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        logits = sliding_window_inference(
            image, (16, 16, 16), sw_batch_size=4, predictor=lambda w: network(w).float(), overlap=0.5, mode="gaussian"
        )
    prediction = (logits[0, 0] > 0).long() if sigmoid else logits[0].argmax(0)
    return prediction.numpy()


@pytest.mark.parametrize("out_channels, sigmoid", [(3, False), (1, True)])
def test_segmenter_classes_equal_the_validation_it_replaced(out_channels, sigmoid):
    network = tiny_unet(out_channels)
    image = torch.randn(1, 1, 20, 30, 18, generator=torch.Generator().manual_seed(1))
    segmenter = WindowSegmenter(network, (16, 16, 16), overlap=0.5, windows_per_batch=4, sigmoid=sigmoid)
    classes = segmenter.classes(segmenter.logits(image))
    assert classes.dtype == np.uint8 and classes.shape == (20, 30, 18)
    np.testing.assert_array_equal(classes, replaced_validation_classes(network, image, sigmoid))
    assert len(np.unique(classes)) > 1


def test_progress_counts_window_batches_and_clinical_vectors_reach_every_window():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, window, clinical):
            seen.append(clinical.clone())
            return window.repeat(1, 2, 1, 1, 1)

    fractions: list[float] = []
    segmenter = WindowSegmenter(Recorder(), (8, 8, 8), overlap=0.5, windows_per_batch=3)
    image = torch.randn(1, 1, 12, 12, 12)
    logits = segmenter.logits(image, torch.tensor([[0.5, -2.0]]), progress=fractions.append)
    torch.testing.assert_close(logits[0], image[0, 0])  # identity logits survive the blending
    assert len(fractions) == -(-window_count((12, 12, 12), (8, 8, 8), 0.5) // 3) and fractions[-1] == 1.0
    assert all(c.shape[1] == 2 and (c == torch.tensor([0.5, -2.0])).all() for c in seen)


def test_one_window_logits_equal_a_direct_forward_pass_of_the_padded_image():
    network = tiny_unet(3)
    image = torch.randn(1, 1, 12, 16, 10, generator=torch.Generator().manual_seed(2))
    before = [(16 - s) // 2 for s in image.shape[2:]]
    pad = [v for s, b in zip(reversed(image.shape[2:]), reversed(before)) for v in (b, 16 - s - b)]
    with torch.no_grad():
        expected = network(F.pad(image, pad))[0][
            (slice(None), *(slice(b, b + s) for b, s in zip(before, image.shape[2:])))
        ]
    logits = WindowSegmenter(network, (16, 16, 16)).one_window_logits(image)
    torch.testing.assert_close(logits, expected)


def test_the_predictor_does_not_load_the_training_package():
    code = (
        "import sys, AttentionSegLib.inference.predictor\n"
        "print([m for m in sys.modules if m.startswith('AttentionSegLib.training')])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "AttentionSeg")
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


@pytest.mark.parametrize("source, target", [((5, 7, 6), (13, 20, 11)), ((9, 8, 8), (4, 8, 8)), ((6, 6, 6), (6, 6, 6))])
def test_slab_by_slab_interpolation_equals_trilinear_interpolation_then_argmax(source, target):
    torch.manual_seed(0)
    logits = torch.randn(3, *source, dtype=torch.float64)
    expected = F.interpolate(logits[None], size=target, mode="trilinear", align_corners=False)[0].argmax(0)
    result = logits_to_classes(logits, target, slab=3)
    np.testing.assert_array_equal(result, expected.numpy())
    one = torch.randn(1, *source, dtype=torch.float64)
    expected = F.interpolate(one[None], size=target, mode="trilinear", align_corners=False)[0, 0] > 0
    np.testing.assert_array_equal(logits_to_classes(one, target, sigmoid=True), expected.numpy())
