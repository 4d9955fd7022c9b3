"""Benchmark: what locked segments and the overlap policy cost per prompt, side by side.

Each interactive click of ``ClickLogic`` reads the other segments of its segmentation on the
prompt's region grid (the voxels the object may not take), and under "overwrite" rewrites those it
takes from. This times the same positive clicks on a held-out case of an interactive model with 1
and with ``--segments`` other segments (small cubes spread over the volume plus the other label's
reference), under "never" and "overwrite", in one run, and prints p50 / p95 per click and the
ratio to 1 segment under "never".

Run from the repository root (any interactive model file and its dataset):
    .venv/bin/python bench/bench_overlap_policy.py RUN/model.pt DATASET_JSON [--segments 40] [--clicks 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "AttentionSeg"))


def ras_of(image, index):
    k, j, i = index
    lps = image.index_to_physical() @ np.array([i, j, k, 1.0])
    return (-lps[0], -lps[1], lps[2])


def run(model, image, reference, n_segments: int, policy: str, clicks: int) -> list[float]:
    from AttentionSegLib.interactive.robot import interior_point
    from AttentionSegLib.slicer.click_logic import ClickLogic
    from AttentionSegLib.slicer.mrml import StandaloneScene, segmentation_node_from_label_image, volume_node_from_image

    wiring = StandaloneScene()
    volume = volume_node_from_image(wiring.scene, image, "case")
    labels = np.where(reference == 2, 2, 0).astype(np.uint16)  # the other organ, a finished segment
    names = {2: "other label"}
    rng = np.random.default_rng(0)
    shape = np.asarray(labels.shape)
    for value in range(3, n_segments + 2):  # small cubes where nothing else is
        corner = rng.integers(0, np.maximum(shape - 2, 1))
        box = tuple(slice(c, c + 2) for c in corner)
        labels[box] = np.where(labels[box] == 0, value, labels[box])
        names[value] = f"segment {value}"
    segmentation = segmentation_node_from_label_image(
        wiring.scene, image.with_array(labels), names, name="work", reference_volume_node=volume
    )
    logic = ClickLogic(wiring.scene, overlap=policy)
    point = ras_of(image, interior_point(reference == 1, image.spacing_array_order))
    segment_id, seconds = None, []
    for _ in range(clicks):
        started = time.perf_counter()
        segment_id = logic.click_to_segment(volume, model, point, segmentation, segment_id, device="cpu")
        seconds.append(time.perf_counter() - started)
    return seconds[1:]  # the first click includes the session's set-up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--segments", type=int, default=40)
    parser.add_argument("--clicks", type=int, default=8)
    args = parser.parse_args()
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
    from AttentionSegLib.inference.model_file import load_model_file

    definition = load_dataset(args.dataset)
    case = definition.case(load_model_file(args.model).training["val_cases"][0])
    image = read_case_image(case, definition).channel(0)
    reference = read_case_label(case, definition, image)
    print(f"case grid {image.spatial_shape} voxels, {args.clicks - 1} timed clicks per setting")
    baseline = None
    for n_segments in (1, args.segments):
        for policy in ("never", "overwrite"):
            seconds = run(args.model, image, reference, n_segments, policy, args.clicks)
            p50, p95 = np.percentile(seconds, 50), np.percentile(seconds, 95)
            baseline = baseline or p50
            print(
                f"{n_segments:>3} other segments, {policy:<9}: p50 {p50:.3f} s  p95 {p95:.3f} s  x{p50 / baseline:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
