"""``attentionseg demo``: the README's main job, end to end, on data it makes itself.

1. a small phantom dataset: 3 labelled structures per case, anisotropic voxels (2.5 x 0.8 x
   0.8 mm) on an obliquely oriented grid, written as an nnU-Net dataset;
2. ``attentionseg train``: a small UNet (16-32-64 channels) for about a minute on the CPU (fold 0
   held out);
3. ``attentionseg segment``: the model file segments a held-out case;
4. metrics against that case's reference, printed and written as CSV and JSON.

Nothing is downloaded. The folder is reused only when an earlier demo made it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from AttentionSegLib.data.dataset import load_dataset
from AttentionSegLib.data.phantoms import write_phantom_dataset
from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.evaluation.metrics import evaluate_label_maps
from AttentionSegLib.evaluation.report import format_metrics_table, metrics_to_json, write_metrics_csv
from AttentionSegLib.inference.predictor import Predictor
from AttentionSegLib.io.atomic import write_text_atomic
from AttentionSegLib.io.segmentation_file import write_label_image
from AttentionSegLib.training.trainer import TrainingConfig, train

__all__ = ["run_demo", "DEMO_LABELS"]

DEMO_LABELS = ["liver", "spleen", "kidney"]
_MARKER = ".attentionseg-demo"
_N_CASES = 10
_SHAPE = (24, 48, 48)  # array order (k, j, i)
_SPACING_MM = (2.5, 0.8, 0.8)  # array order: thick slices, fine in-plane, as a typical CT
_ORIGIN_MM = (-19.2, 40.0, -30.0)


def _oblique_direction(degrees: float = 12.0) -> np.ndarray:
    angle = np.deg2rad(degrees)
    return np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])


def run_demo(
    out: Path,
    seed: int = 0,
    minutes: float = 1.0,
    device: str = "auto",
    echo: Callable[[dict], None] | None = None,
) -> dict:
    """Make the dataset, train, segment a held-out case and evaluate it; returns the metrics report.

    Args:
        out: output folder (created; an existing one must have been made by the demo).
        seed: phantom and training seed.
        minutes: training budget.
        device: auto, cuda or cpu.
        echo: receives the training progress events (the command line prints them).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / _MARKER).exists():
        raise AttentionSegError(f"{out}: folder exists and was not made by the demo; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("made by attentionseg demo\n")
    for earlier in ("dataset", "run"):  # an earlier demo's outputs: the marker says they are ours
        shutil.rmtree(out / earlier, ignore_errors=True)

    print(
        f"1/4 phantom dataset: {_N_CASES} cases of {_SHAPE[::-1]} voxels (i, j, k), spacing "
        f"{_SPACING_MM[::-1]} mm, oblique direction, labels {', '.join(DEMO_LABELS)}"
    )
    dataset_json = write_phantom_dataset(
        out / "dataset",
        n_cases=_N_CASES,
        shape=_SHAPE,
        n_labels=len(DEMO_LABELS),
        spacing_mm=_SPACING_MM,
        seed=seed,
        name="AttentionSegDemo",
        label_names=DEMO_LABELS,
        origin_mm=_ORIGIN_MM,
        direction=_oblique_direction(),
    )

    print(f"2/4 training a small UNet (16-32-64 channels) for up to {minutes:g} minute(s)")
    config = TrainingConfig(
        dataset=str(dataset_json),
        model="unet",
        run_dir=str(out / "run"),
        options={"channels": [16, 32, 64], "strides": [2, 2], "num_res_units": 1},
        epochs=500,
        time_limit_min=minutes,
        learning_rate=3e-3,
        iterations_per_epoch=10,
        val_every=2,
        seed=seed,
        device=device,
    )
    summary = train(config, echo=echo)
    model_path = Path(summary["model_file"])

    predictor = Predictor(model_path, device=device)
    definition = load_dataset(dataset_json)
    case_id = predictor.model_file.training["val_cases"][0]
    case = definition.case(case_id)
    image = read_case_image(case, definition)
    reference = read_case_label(case, definition, image)
    print(f"3/4 segmenting held-out case {case_id} ({case.images[0]})")
    prediction = predictor.predict(image, names=[str(case.images[0])])
    written = [
        write_label_image(
            prediction.label_image, out / f"{case_id}_segmentation{ending}", predictor.labels, overwrite=True
        )
        for ending in (".nii.gz", ".seg.nrrd")
    ]

    print(f"4/4 metrics of {case_id} against its reference ({case.label})")
    labels = {int(label["value"]): label["name"] for label in predictor.labels}
    report = evaluate_label_maps(prediction.label_image.array, reference, image.spacing_array_order, labels)
    print(format_metrics_table(report))
    write_text_atomic(out / "metrics.json", metrics_to_json(report))
    write_metrics_csv(report, out / "metrics.csv")
    print(
        f"Wrote {model_path}, {written[0]}, {written[1]}, {out / 'metrics.csv'} and {out / 'metrics.json'} "
        f"(segmenting took {sum(prediction.seconds.values()):.2f} s on {prediction.device})"
    )
    return report
