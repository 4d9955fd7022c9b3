#!/usr/bin/env python3
"""How well each uncertainty map finds a model's errors on its held-out (validation) cases:
AUROC for wrong voxels within 5 mm of the structure and among the prediction's boundary voxels,
for the ``entropy`` map (without and with flip TTA), the ``tta`` disagreement map, and the
``exp(-distance to the predicted boundary)`` map that knows nothing of the model; and the expected
calibration error of the predicted class's probability. Voxels of all cases are pooled.

    python bench/bench_uncertainty.py MODEL_FILE DATASET_JSON [--cases N]

Train the model first, e.g. the 10-minute UNet of the goal:
    attentionseg train ../shared/data/hippocampus/dataset.json --model unet --out RUN --time-limit 10 --device cpu
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "AttentionSeg"))

from AttentionSegLib.data.dataset import load_dataset  # noqa: E402
from AttentionSegLib.data.preprocessing import read_case_image, read_case_label  # noqa: E402
from AttentionSegLib.evaluation.uncertainty import (  # noqa: E402
    auroc,
    boundary_distance_map,
    boundary_voxels,
    expected_calibration_error,
)
from AttentionSegLib.inference.predictor import Predictor  # noqa: E402
from AttentionSegLib.inference.uncertainty import class_probabilities, to_grid  # noqa: E402
from AttentionSegLib.regions import within_distance  # noqa: E402


def confidence_map(predictor: Predictor, image) -> np.ndarray:
    """The predicted class's probability on the input grid (for the calibration error)."""
    array, shape = predictor.preprocess(image)
    with torch.no_grad():
        logits = predictor.segmenter.logits(torch.from_numpy(array)[None])
    return to_grid(class_probabilities(logits, predictor.sigmoid).max(dim=0).values, shape).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--cases", type=int, default=None, help="the first N validation cases (default all)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    plain, tta = Predictor(args.model, device="cpu"), Predictor(args.model, device="cpu", tta=True)
    definition = load_dataset(args.dataset)
    case_ids = plain.model_file.training["val_cases"][: args.cases]
    maps = {"entropy": [], "entropy + TTA": [], "tta disagreement": [], "exp(-distance), no model": []}
    wrong, near, boundary, confidence, correct = [], [], [], [], []
    started = time.perf_counter()
    for case_id in case_ids:
        case = definition.case(case_id)
        image = read_case_image(case, definition)
        reference = read_case_label(case, definition, image.channel(0))
        first = plain.predict(image, uncertainty="entropy")
        with_tta = tta.predict(image, uncertainty="entropy")
        spread = tta.predict(image, uncertainty="tta")
        labels = first.label_image.array
        spacing = image.spacing_array_order
        maps["entropy"].append(first.uncertainty.array)
        maps["entropy + TTA"].append(with_tta.uncertainty.array)
        maps["tta disagreement"].append(spread.uncertainty.array)
        maps["exp(-distance), no model"].append(boundary_distance_map(labels, spacing))
        near.append(within_distance((labels != 0) | (reference != 0), spacing, 5.0))
        boundary.append(boundary_voxels(labels))
        wrong.append(labels != reference)
        confidence.append(confidence_map(plain, image))
        correct.append(labels == reference)
    wrong_all, near_all, boundary_all = (np.concatenate([a.ravel() for a in x]) for x in (wrong, near, boundary))
    seconds = time.perf_counter() - started
    print(f"{args.model} on {len(case_ids)} validation cases of {definition.name} ({seconds:.0f} s)")
    print(f"voxels within 5 mm: {near_all.sum()} ({wrong_all[near_all].sum()} wrong); "
          f"boundary voxels: {boundary_all.sum()} ({wrong_all[boundary_all].sum()} wrong)")  # fmt: skip
    print("| map | AUROC within 5 mm of the structure | AUROC on the predicted boundary |")
    print("|---|---|---|")
    for name, values in maps.items():
        pooled = np.concatenate([v.ravel() for v in values])
        near_score = auroc(pooled[near_all], wrong_all[near_all])
        boundary_score = auroc(pooled[boundary_all], wrong_all[boundary_all])
        print(f"| {name} | {near_score:.3f} | {boundary_score:.3f} |")
    confidence_all = np.concatenate([c.ravel() for c in confidence])
    correct_all = np.concatenate([c.ravel() for c in correct])
    ece = expected_calibration_error(confidence_all, correct_all)
    near_ece = expected_calibration_error(confidence_all[near_all], correct_all[near_all])
    print(f"expected calibration error of the predicted class's probability: {ece:.4f} (all voxels), "
          f"{near_ece:.4f} (within 5 mm)")  # fmt: skip


if __name__ == "__main__":
    main()
