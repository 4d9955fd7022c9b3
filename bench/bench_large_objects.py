#!/usr/bin/env python3
"""A liver in a 512 x 512 x 300 CT from clicks: the generalist's window zooming out (its default)
against the window following the object at the image's spacing, side by side on one volume.

    python bench/bench_large_objects.py MODEL_FILE DATA_DIR [--clicks 5] [--follow-windows 8 32]

The CT is the TotalSegmentator example of DATA_DIR (3 mm) resampled to 512 x 512 x 300 voxels of
0.7 x 0.7 x 0.3 mm (linear; its liver label, value 5, nearest), in memory only. The robot user
clicks the liver's interior-most voxel, then the largest error region, as interactive-eval does.
Printed: Dice after each click and seconds per click, per mode.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "AttentionSeg"))

from AttentionSegLib.evaluation.metrics import dice_per_label  # noqa: E402
from AttentionSegLib.inference.predictor import Predictor  # noqa: E402
from AttentionSegLib.interactive.robot import next_click  # noqa: E402
from AttentionSegLib.interactive.segmenter import NetworkWindow, ObjectSegmenter  # noqa: E402
from AttentionSegLib.interactive.session import InteractiveSession  # noqa: E402
from AttentionSegLib.io.image import Image  # noqa: E402
from AttentionSegLib.regions import interior_point  # noqa: E402

LIVER = 5


def large_ct(data: Path) -> tuple[Image, np.ndarray]:
    source = sitk.ReadImage(str(data / "totalseg-example" / "example_ct_sm.nii.gz"))
    labels = sitk.ReadImage(str(data / "totalseg-example" / "example_seg.nii.gz"))
    reference = sitk.Image([512, 512, 300], sitk.sitkFloat32)
    reference.SetSpacing((0.7, 0.7, 0.3))
    size = np.asarray(source.GetSize())
    center = source.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist())
    extent = (np.asarray([512, 512, 300]) - 1) * np.asarray(reference.GetSpacing())
    direction = np.asarray(source.GetDirection()).reshape(3, 3)
    reference.SetOrigin(tuple(np.asarray(center) - direction @ (extent / 2)))
    reference.SetDirection(source.GetDirection())
    image = sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkInt16)
    label = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    array = sitk.GetArrayFromImage(image)
    return Image(array, spacing=reference.GetSpacing(), origin=reference.GetOrigin()), sitk.GetArrayFromImage(
        label
    ) == LIVER


def robot(session: InteractiveSession, reference: np.ndarray, clicks: int) -> tuple[list[float], list[float]]:
    spacing = session.spacing
    dice, seconds = [], []
    click = interior_point(reference, spacing)
    positive = True
    for _ in range(clicks):
        step = session.add_click(click, positive)
        seconds.append(step.seconds)
        dice.append(float(dice_per_label(session.mask.astype(np.uint8), reference.astype(np.uint8), [1])[1]))
        found = next_click(session.mask, reference, spacing)
        if found is None:
            break
        click, positive = found.index, found.positive
    return dice, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--follow-windows", type=int, nargs="*", default=[8, 32])
    args = parser.parse_args()
    image, reference = large_ct(args.data)
    print(
        f"CT {image.array.shape} voxels at {image.spacing} mm; liver {reference.sum() * 0.7 * 0.7 * 0.3 / 1000:.0f} mL"
    )
    predictor = Predictor(args.model, device="cpu")
    started = time.perf_counter()
    session = InteractiveSession.for_predictor(predictor, [image])
    print(f"session set-up (normalisation of the volume): {time.perf_counter() - started:.2f} s")
    modes = [("zoom out (default)", session.segmenter)]
    window = session.segmenter.window
    for windows in args.follow_windows:
        modes.append(
            (f"follow, up to {windows} windows", ObjectSegmenter(window, session.spacing, max_windows=windows))
        )
    print("| mode | " + " | ".join(f"Dice {k}" for k in range(1, args.clicks + 1)) + " | s per click (mean) | s max |")
    print("|---|" + "---|" * (args.clicks + 2))
    for name, segmenter in modes:
        session.segmenter = segmenter
        session.reset()
        dice, seconds = robot(session, reference, args.clicks)
        cells = " | ".join(f"{d:.3f}" for d in dice) + " | -" * (args.clicks - len(dice))
        print(f"| {name} | {cells} | {np.mean(seconds):.2f} | {max(seconds):.2f} |", flush=True)
    assert isinstance(window, NetworkWindow)


if __name__ == "__main__":
    main()
