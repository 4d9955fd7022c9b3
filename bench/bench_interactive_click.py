"""Benchmark: the robot user through the AttentionSeg Logic on real MRML (slicer-core): per-click
latency (point placed -> segment updated) and Dice after each click, with an interactive model.

For each held-out case of the model file (or ``--cases`` of them) and each label: a volume node, a
segmentation holding the other labels' reference segments (which clicks must never change), and
the protocol of ``attentionseg interactive-eval`` (first click at the interior-most voxel, then on
the largest error) played through ``ClickLogic.click_to_segment``: RAS points in, the segment read
back after each click. The latency is the Logic call alone (session, windows, MRML update); the
first click of each object includes the session's set-up (normalising the volume). Prints the
mean Dice per click, latency p50 / p95 over all clicks, and whether any other segment changed.

Run from the repository root:
    .venv/bin/python bench/bench_interactive_click.py RUN/model.pt ../shared/data/hippocampus/dataset.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "AttentionSeg"))


class LogicTool:
    """The protocol's tool interface over the Logic: voxel indices in, RAS points to the Logic."""

    def __init__(self, logic, scene, volume, image, model, segmentation, device):
        self.logic, self.scene, self.volume, self.image = logic, scene, volume, image
        self.model, self.segmentation, self.device = model, segmentation, device
        self.segment_id = None
        self.mask = np.zeros(image.spatial_shape, dtype=bool)
        self.seconds: list[float] = []

    def add_click(self, index, positive=True):
        from AttentionSegLib.interactive.session import SessionStep
        from AttentionSegLib.slicer.segments import segment_mask

        k, j, i = index
        lps = self.image.index_to_physical() @ np.array([i, j, k, 1.0])
        started = time.perf_counter()
        self.segment_id = self.logic.click_to_segment(
            self.volume, self.model, (-lps[0], -lps[1], lps[2]), self.segmentation, self.segment_id, positive,
            self.device,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        self.seconds.append(seconds)
        self.mask = segment_mask(self.scene, self.segmentation, self.segment_id, self.volume)
        return SessionStep((), seconds)

    def set_box(self, start, stop):
        raise NotImplementedError("this benchmark starts from a click")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_file", type=Path)
    parser.add_argument("dataset_json", type=Path)
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--cases", type=int, default=0, help="at most this many held-out cases (0: all)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
    from AttentionSegLib.evaluation.interactive import run_robot_user, summarize_objects
    from AttentionSegLib.inference.model_file import load_model_file
    from AttentionSegLib.slicer.click_logic import ClickLogic
    from AttentionSegLib.slicer.mrml import StandaloneScene, segmentation_node_from_label_image, volume_node_from_image
    from AttentionSegLib.slicer.segments import segment_mask

    definition = load_dataset(args.dataset_json)
    model = load_model_file(args.model_file)
    labels = model.object_labels or model.label_names
    ids = list(model.training["val_cases"])[: args.cases or None]
    wiring = StandaloneScene()
    logic = ClickLogic(wiring.scene)
    results, latencies, first_clicks, others_changed = [], [], [], 0
    for case_id in ids:
        image = read_case_image(definition.case(case_id), definition).channel(0)
        reference = read_case_label(definition.case(case_id), definition, image)
        volume = volume_node_from_image(wiring.scene, image, case_id)
        for value, name in labels.items():
            if not (reference == value).any():
                continue
            others = np.where((reference != value) & (reference > 0), reference, 0).astype(np.uint8)
            names = {v: n for v, n in labels.items() if v != value}
            segmentation = segmentation_node_from_label_image(
                wiring.scene, image.with_array(others), names, name="work", reference_volume_node=volume
            )
            segment_ids = {n: segmentation.GetSegmentation().GetSegmentIdBySegmentName(n) for n in names.values()}
            segment_ids = {n: i for n, i in segment_ids.items() if i}
            before = {n: segment_mask(wiring.scene, segmentation, i, volume) for n, i in segment_ids.items()}
            tool = LogicTool(logic, wiring.scene, volume, image, args.model_file, segmentation, args.device)
            result = run_robot_user(
                tool,
                reference == value,
                image.spacing_array_order,
                args.clicks,
                case_id=case_id,
                value=value,
                name=name,
            )
            results.append(result)
            first_clicks.append(tool.seconds[0])
            latencies += tool.seconds[1:]
            for n, mask in before.items():
                after = segment_mask(wiring.scene, segmentation, segment_ids[n], volume)
                others_changed += int(not np.array_equal(after, mask))
            wiring.scene.RemoveNode(segmentation)
        wiring.scene.RemoveNode(volume)
    summary = summarize_objects(results)
    print(f"{args.model_file} through ClickLogic on {definition.name}: {len(ids)} cases, {summary['objects']} objects")
    print("mean Dice per click: " + ", ".join(f"{d:.4f}" for d in summary["dice_per_interaction"]))
    print(f"NoC@85 {summary['noc85']:.2f}, NoC@90 {summary['noc90']:.2f}, DSC-AUC {summary['dice_auc']:.3f}")
    print(
        f"latency per click (Logic, clicks 2..N): p50 {np.percentile(latencies, 50):.3f} s, "
        f"p95 {np.percentile(latencies, 95):.3f} s; first click of an object (session set-up): "
        f"median {np.median(first_clicks):.3f} s"
    )
    print(f"other segments changed: {others_changed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
