"""Benchmark: click-to-segment latency through the AttentionSeg Logic (point placed -> segment
updated), on real MRML (slicer-core), goal <= 1 s on the CPU.

Volumes as in ``bench_inference.py``: a hippocampus case with a model file trained on that
dataset, and a synthetic 300 x 512 x 512 CT-like volume with a UNet model file (random weights,
patch 64 x 128 x 128 at 2.0 x 1.5 x 1.5 mm, so one window spans 128 x 240 x 240 input voxels).

Each click runs ``ClickLogic.click_to_segment``: the volume node's voxels and geometry,
one window of the model around the point, the connected structure under it, and the segment's
update inside the window. The first click (model load) is reported apart; then ``--repeats``
positive and negative clicks alternate at the volume's centre, and medians are printed.

Run from the repository root:
    .venv/bin/python bench/bench_click.py --hippocampus-model RUN/model.pt \\
        --hippocampus-image ../shared/data/hippocampus/imagesTr/hippocampus_001.nii.gz
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "AttentionSeg"))
sys.path.insert(0, str(ROOT / "bench"))


def measure(model_path: Path, image_path: Path, device: str, repeats: int) -> dict:
    import numpy as np

    from AttentionSegLib.inference.predictor import Predictor
    from AttentionSegLib.io.image import read_image
    from AttentionSegLib.slicer.click_logic import ClickLogic
    from AttentionSegLib.slicer.mrml import StandaloneScene, volume_node_from_image
    from AttentionSegLib.slicer.predictor_cache import PredictorCache

    wiring = StandaloneScene()
    image = read_image(image_path)
    volume = volume_node_from_image(wiring.scene, image, "volume")
    predictors = PredictorCache(lambda path, dev, tta: Predictor(path, device=device, tta=tta))
    logic = ClickLogic(wiring.scene, predictors)
    predictor = predictors.get(model_path, device)
    center = [s // 2 for s in image.spatial_shape]
    # Click where the model finds a structure: the foreground voxel nearest to the centre of
    # the window around the volume's centre.
    labels, region = predictor.predict_window(image, center)
    foreground = np.argwhere(labels > 0)
    if len(foreground):
        local = foreground[np.argmin(((foreground - (np.asarray(center) - [r.start for r in region])) ** 2).sum(1))]
        center = [int(v + r.start) for v, r in zip(local, region)]
    lps = image.index_to_physical() @ np.array([*center[::-1], 1.0])
    point = (-lps[0], -lps[1], lps[2])
    target = wiring.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "clicks")
    target.SetReferenceImageGeometryParameterFromVolumeNode(volume)

    started = time.perf_counter()
    segment_id = logic.click_to_segment(volume, model_path, point, target, device=device)
    first = time.perf_counter() - started
    times = {"positive": [], "negative": []}
    for _ in range(repeats):
        for positive in (False, True):
            started = time.perf_counter()
            logic.click_to_segment(volume, model_path, point, target, segment_id, positive=positive, device=device)
            times["positive" if positive else "negative"].append(time.perf_counter() - started)
    return {
        "shape": image.spatial_shape,
        "region": [r.stop - r.start for r in region],
        "first_s": first,
        "positive_s": statistics.median(times["positive"]),
        "negative_s": statistics.median(times["negative"]),
        "all": times,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hippocampus-model", type=Path)
    parser.add_argument("--hippocampus-image", type=Path)
    parser.add_argument("--large-shape", type=int, nargs=3, default=[300, 512, 512], metavar=("K", "J", "I"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch
    from bench_inference import large_model_file, large_volume

    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        if args.hippocampus_model and args.hippocampus_image:
            rows["hippocampus"] = measure(args.hippocampus_model, args.hippocampus_image, args.device, args.repeats)
        model = large_model_file(Path(folder) / "large_model.pt")
        volume = large_volume(Path(folder) / "large.nii.gz", tuple(args.large_shape))
        rows["large"] = measure(model, volume, args.device, args.repeats)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device: {args.device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"medians of {args.repeats} clicks each\n")
    print(
        "| volume | voxels (array order) | window (input voxels) | first click s | positive click s "
        "| negative click s |"
    )
    print("|---|---|---|---:|---:|---:|")
    for key, row in rows.items():
        print(
            f"| {key} | {'x'.join(map(str, row['shape']))} | {'x'.join(map(str, row['region']))} | "
            f"{row['first_s']:.3f} | {row['positive_s']:.3f} | {row['negative_s']:.3f} |"
        )
    print("\nraw seconds:", {key: row["all"] for key, row in rows.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
