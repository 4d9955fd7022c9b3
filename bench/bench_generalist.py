#!/usr/bin/env python3
"""The promptable generalist with the robot user, per dataset: Dice after 1, 3 and 5 prompts,
NoC@85/90, latency per prompt (p50/p95), for an initial point and an initial 3D box (then
corrective clicks). Every figure comes from ``attentionseg interactive-eval`` (one child process
per row, its JSON report kept in OUT_DIR).

    python bench/bench_generalist.py MODEL_FILE DATA_DIR OUT_DIR [--rows NAME ...] [--ph2-cases N]

Rows: the held-out cases of the datasets the model was trained with (hippocampus, chaos-t2), the
TotalSegmentator example (trained with; every structure, optimistic), and two sets no training
run saw: BraTS 2013 sub-regions (FLAIR, channel 0) and PH2 skin lesions. The generalist is 3D: each
PH2 photograph becomes a one-slice volume of its luminance (0.299 R + 0.587 G + 0.114 B) at 1 mm,
written to OUT_DIR/ph2-volumes (derived data stays out of the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# name: (dataset.json under DATA_DIR or a builder, split, extra flags)
ROWS = {
    "hippocampus": ("hippocampus/dataset.json", "heldout", []),
    "chaos-t2": ("chaos-t2/dataset.json", "heldout", []),
    "totalseg-example": ("totalseg", "all", []),
    "brats2013 (unseen)": ("brats2013/dataset.json", "all", ["--channel", "0"]),
    "ph2 (unseen)": ("ph2", "all", []),
}


def totalseg_dataset(data: Path, out: Path) -> Path:
    """The TotalSegmentator example as a one-case MSD dataset (links, no copies)."""
    folder = out / "totalseg-dataset"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for source, target in (
        (data / "totalseg-example" / "example_ct_sm.nii.gz", folder / "imagesTr" / "example.nii.gz"),
        (data / "totalseg-example" / "example_seg.nii.gz", folder / "labelsTr" / "example.nii.gz"),
    ):
        if not target.exists():
            os.symlink(source.resolve(), target)
    import SimpleITK as sitk

    values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "example.nii.gz"))))
    labels = {"0": "background", **{str(int(v)): f"totalseg_{int(v)}" for v in values if v}}
    definition = {
        "name": "totalseg-example",
        "modality": {"0": "CT"},
        "labels": labels,
        "training": [{"image": "./imagesTr/example.nii.gz", "label": "./labelsTr/example.nii.gz"}],
    }
    (folder / "dataset.json").write_text(json.dumps(definition))
    return folder / "dataset.json"


def ph2_volumes(data: Path, out: Path, limit: int) -> Path:
    """PH2 photographs as one-slice luminance volumes (see the module docstring)."""
    import SimpleITK as sitk

    source = json.loads((data / "ph2" / "dataset.json").read_text())
    folder = out / "ph2-volumes"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    images = sorted((data / "ph2" / "imagesTr").glob("*"))[:limit]
    entries = []
    for path in images:
        case = path.name.split(".")[0].removesuffix("_0000")
        label_path = next((data / "ph2" / "labelsTr").glob(f"{case}.*"))
        rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
        gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32) if rgb.ndim == 3 else rgb
        label = (sitk.GetArrayFromImage(sitk.ReadImage(str(label_path))) > 0).astype(np.uint8)
        for array, target in (
            (gray, folder / "imagesTr" / f"{case}.nii.gz"),
            (label, folder / "labelsTr" / f"{case}.nii.gz"),
        ):
            sitk.WriteImage(sitk.GetImageFromArray(array[None]), str(target))
        entries.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    lesion = next(name for name, value in source["labels"].items() if int(value) == 1)
    definition = {"name": "ph2-volumes", "modality": {"0": "photo"}, "labels": {"0": "background", "1": lesion}}
    definition["training"] = entries
    (folder / "dataset.json").write_text(json.dumps(definition))
    return folder / "dataset.json"


def run_row(model: Path, dataset: Path, split: str, flags: list[str], initial: str, report: Path) -> dict:
    command = [
        sys.executable, "-m", "AttentionSegLib", "interactive-eval", str(model), str(dataset),
        "--split", split, "--clicks", "5", "--initial", initial, "--device", "cpu",
        "--json", str(report), "--overwrite", *flags,
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "AttentionSeg")}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return json.loads(report.read_text())["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--initial", nargs="*", default=["point", "box"], choices=["point", "box", "box2d", "scribble"])
    parser.add_argument("--ph2-cases", type=int, default=40, help="PH2 images used (default 40 of 160)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    columns = ["dataset", "initial", "objects", "Dice 1", "Dice 3", "Dice 5", "NoC@85", "NoC@90", "p50 s", "p95 s"]
    print("| " + " | ".join([*columns, "lower after a prompt"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.rows:
        source, split, flags = ROWS[name]
        if source == "totalseg":
            dataset = totalseg_dataset(args.data, args.out)
        elif source == "ph2":
            dataset = ph2_volumes(args.data, args.out, args.ph2_cases)
        else:
            dataset = args.data / source
        for initial in args.initial:
            stem = name.split(" ")[0]
            summary = run_row(args.model, dataset, split, flags, initial, args.out / f"{stem}-{initial}.json")
            dice = summary["dice_per_interaction"]
            drops = ", ".join(map(str, summary["mean_dice_drops"])) or "never"
            print(
                f"| {name} | {initial} | {summary['objects']} | {dice[0]:.3f} | {dice[2]:.3f} | {dice[4]:.3f} | "
                f"{summary['noc85']:.2f} | {summary['noc90']:.2f} | {summary['latency_p50_s']:.3f} | "
                f"{summary['latency_p95_s']:.3f} | {drops} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
