"""The Slicer module's Compare on real MRML (slicer-core): several models on one case, with the
reference; what it adds to the scene and how long the maps take beside the models.

    .venv/bin/python bench/bench_compare_logic.py DATASET_JSON CASE_ID MODEL.pt [MODEL.pt ...]

Prints the per-model Dice against the reference, the nodes of the comparison's subject hierarchy
folder, the five largest errors (model, label, kind, mL, centre in RAS) and the seconds spent in
the models versus the maps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from AttentionSegLib.data.dataset import load_dataset
from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
from AttentionSegLib.slicer import compare_logic as compare_module
from AttentionSegLib.slicer.compare_logic import CompareLogic
from AttentionSegLib.slicer.mrml import StandaloneScene, segmentation_node_from_label_image, volume_node_from_image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("case_id")
    parser.add_argument("models", type=Path, nargs="+")
    args = parser.parse_args()
    definition = load_dataset(args.dataset)
    case = definition.case(args.case_id)
    image = read_case_image(case, definition)
    image = image.channel(0) if image.has_channels else image
    reference = read_case_label(case, definition, image)
    wiring = StandaloneScene()
    volume = volume_node_from_image(wiring.scene, image, args.case_id)
    reference_node = segmentation_node_from_label_image(
        wiring.scene, image.with_array(reference.astype(np.uint16), has_channels=False),
        definition.foreground_labels, name="reference", reference_volume_node=volume,
    )  # fmt: skip
    maps_seconds = []
    original = compare_module.add_comparison_maps

    def timed(*a, **k):
        started = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            maps_seconds.append(time.perf_counter() - started)

    compare_module.add_comparison_maps = timed
    started = time.perf_counter()
    result = CompareLogic(wiring.scene).compare(volume, args.models, reference_node, device="cpu")
    total = time.perf_counter() - started
    for model, report in result["reports"].items():
        print(f"{model}: Dice " + ", ".join(f"{row['name']} {row['dice']:.4f}" for row in report["labels"]))
    maps = result["maps"]
    import slicer
    import vtk

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(wiring.scene)
    children = []
    ids = vtk.vtkIdList()
    hierarchy.GetItemChildren(maps.folder_item, ids)
    for index in range(ids.GetNumberOfIds()):
        children.append(hierarchy.GetItemName(ids.GetId(index)))
    print(f"folder {hierarchy.GetItemName(maps.folder_item)!r}: {len(children)} nodes: {', '.join(children)}")
    for row in maps.worst_errors[:5]:
        ras = ", ".join(f"{v:.1f}" for v in row["ras"])
        where = f"{row['volume_ml']:.3f} mL ({row['voxels']} voxels) at ({ras}) mm RAS"
        print(f"  {row['model']}: {row['label']} {row['kind']}, {where}")
    print(
        f"compare {total:.2f} s in all; maps {maps_seconds[0]:.2f} s "
        f"({maps_seconds[0] / max(total - maps_seconds[0], 1e-9):.1%} of the rest: models, metrics, tables)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
