"""``attentionseg demo``: the README's main job, on data it makes itself.

For now: a synthetic anisotropic, obliquely oriented multi-label reference and a perturbed
"prediction" of it, evaluated with ``attentionseg evaluate``'s code path. Later the demo trains a
small network and segments a held-out phantom case.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from AttentionSegLib.dataset import load_dataset
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.evaluation import evaluate_label_files
from AttentionSegLib.image import Image, write_image
from AttentionSegLib.phantoms import ellipsoid_label_map, perturbed_label_map, phantom_image
from AttentionSegLib.report import format_metrics_table, metrics_to_json, write_metrics_csv, write_text_atomic

__all__ = ["run_demo", "DEMO_LABELS"]

DEMO_LABELS = {0: "background", 1: "liver", 2: "spleen", 3: "left kidney", 4: "right kidney", 5: "stomach"}
_MARKER = ".attentionseg-demo"
# Array order (k, j, i): 40 slices of 2.5 mm, 0.8 mm in plane, as a typical abdominal CT.
_SHAPE = (40, 128, 128)
_SPACING_IJK_MM = (0.8, 0.8, 2.5)


def _oblique_direction(degrees: float = 12.0) -> np.ndarray:
    angle = np.deg2rad(degrees)
    return np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])


def run_demo(out: Path, seed: int = 0) -> dict:
    """Write the phantom pair into ``out`` and evaluate it; prints the table and returns the report.

    ``out`` is created; an existing folder is reused only if an earlier demo made it, so the demo
    never overwrites someone else's files.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / _MARKER).exists():
        raise AttentionSegError(f"{out}: folder exists and was not made by the demo; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("made by attentionseg demo\n")

    spacing_array_order = tuple(reversed(_SPACING_IJK_MM))
    reference = ellipsoid_label_map(_SHAPE, len(DEMO_LABELS) - 1, seed=seed, spacing_mm=spacing_array_order)
    prediction = perturbed_label_map(reference, seed=seed + 1, max_shift_mm=2.0, spacing_mm=spacing_array_order)
    geometry = dict(spacing=_SPACING_IJK_MM, origin=(-51.2, -80.0, 20.0), direction=_oblique_direction())
    reference_path = write_image(Image(reference, **geometry), out / "reference.nii.gz")
    prediction_path = write_image(Image(prediction, **geometry), out / "prediction.nii.gz")
    write_image(Image(phantom_image(reference, seed), **geometry), out / "image.nii.gz")
    dataset_json = out / "dataset.json"
    write_text_atomic(
        dataset_json,
        json.dumps(
            {
                "name": "AttentionSeg demo phantom",
                "channel_names": {"0": "CT"},
                "labels": {name: value for value, name in DEMO_LABELS.items()},
                "file_ending": ".nii.gz",
            },
            indent=1,
        ),
    )

    report = evaluate_label_files(prediction_path, reference_path, load_dataset(dataset_json))
    print(f"Phantom: {_SHAPE[::-1]} voxels (i, j, k), spacing {_SPACING_IJK_MM} mm, oblique direction")
    print(format_metrics_table(report))
    write_text_atomic(out / "metrics.json", metrics_to_json(report))
    write_metrics_csv(report, out / "metrics.csv")
    print(f"Wrote {reference_path}, {prediction_path}, {out / 'metrics.csv'} and {out / 'metrics.json'}")
    return report
