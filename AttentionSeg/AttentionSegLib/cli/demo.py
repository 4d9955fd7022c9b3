"""``attentionseg demo``: the README's main job, end to end, on data it makes itself.

1. a small phantom dataset: 3 labelled structures per case, anisotropic voxels (2.5 x 0.8 x
   0.8 mm) on an obliquely oriented grid, written as an nnU-Net dataset;
2. ``attentionseg train``: a small UNet (16-32-64 channels) for about a minute on the CPU (fold 0
   held out);
3. ``attentionseg segment``: the model file segments a held-out case;
4. metrics against that case's reference, printed and written as CSV and JSON.

Nothing is downloaded. The folder is reused only when an earlier demo made it. The command's
wiring is :func:`add_parser`; the workflow, usable from Python, is :func:`run_demo`.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from AttentionSegLib.cli.common import EXIT_OK
from AttentionSegLib.devices import DEVICE_CHOICES
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.io.atomic import write_text_atomic

__all__ = ["add_parser", "run_demo", "DEMO_LABELS"]

DEMO_LABELS = ["liver", "spleen", "kidney"]
_MARKER = ".attentionseg-demo"
_N_CASES = 10
_SHAPE = (24, 48, 48)  # array order (k, j, i)
_SPACING_MM = (2.5, 0.8, 0.8)  # array order: thick slices, fine in-plane, as a typical CT
_ORIGIN_MM = (-19.2, 40.0, -30.0)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="the whole job on data it makes: phantom dataset -> train -> segment a held-out case -> metrics",
        description="Makes a small anisotropic, obliquely oriented phantom dataset, trains a small network on it "
        "for about a minute on the CPU, segments a held-out case, writes the segmentation (.nii.gz and Slicer "
        ".seg.nrrd) and metrics.csv / metrics.json, and prints the per-label table. Nothing is downloaded.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("attentionseg-demo"), help="output folder (default ./attentionseg-demo)"
    )
    parser.add_argument("--seed", type=int, default=0, help="phantom and training seed (default 0)")
    parser.add_argument("--minutes", type=float, default=1.0, help="training time budget in minutes (default 1)")
    parser.add_argument(
        "--epochs", type=int, default=500, help="at most this many epochs, whatever the time left (default 500)"
    )
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from AttentionSegLib.cli.train import TrainingDisplay

    if args.minutes <= 0:
        raise AttentionSegError(f"--minutes must be positive, got {args.minutes}")
    if args.epochs <= 0:
        raise AttentionSegError(f"--epochs must be positive, got {args.epochs}")
    display = TrainingDisplay()
    try:
        run_demo(
            args.out,
            args.seed,
            minutes=args.minutes,
            epochs=args.epochs,
            device=args.device,
            echo=display.event,
            step_progress=display.step,
        )
    finally:
        display.close()
    return EXIT_OK


def _oblique_direction(degrees: float = 12.0) -> np.ndarray:
    angle = np.deg2rad(degrees)
    return np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])


def _claim_folder(out: Path) -> None:
    """Create ``out`` (or take back an earlier demo's) and remove an earlier demo's outputs."""
    if out.exists() and any(out.iterdir()) and not (out / _MARKER).exists():
        raise AttentionSegError(f"{out}: folder exists and was not made by the demo; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / _MARKER, "made by attentionseg demo\n")
    for earlier in ("dataset", "run"):  # an earlier demo's outputs: the marker says they are ours
        shutil.rmtree(out / earlier, ignore_errors=True)


def _write_dataset(out: Path, seed: int) -> Path:
    from AttentionSegLib.data.phantoms import write_phantom_dataset

    print(
        f"1/4 phantom dataset: {_N_CASES} cases of {_SHAPE[::-1]} voxels (i, j, k), spacing "
        f"{_SPACING_MM[::-1]} mm, oblique direction, labels {', '.join(DEMO_LABELS)}"
    )
    return write_phantom_dataset(
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


def _train(
    dataset_json: Path, out: Path, seed: int, minutes: float, epochs: int, device: str, echo, step_progress
) -> Path:
    from AttentionSegLib.training.config import TrainingConfig
    from AttentionSegLib.training.trainer import train

    print(f"2/4 training a small UNet (16-32-64 channels) for up to {minutes:g} minute(s)")
    config = TrainingConfig(
        dataset=str(dataset_json),
        model="unet",
        run_dir=str(out / "run"),
        options={"channels": [16, 32, 64], "strides": [2, 2], "num_res_units": 1},
        epochs=epochs,
        time_limit_min=minutes,
        learning_rate=3e-3,
        iterations_per_epoch=10,
        val_every=2,
        seed=seed,
        device=device,
    )
    summary = train(config, echo=echo, step_progress=step_progress)
    return Path(summary["model_file"])


def _segment_and_evaluate(out: Path, dataset_json: Path, model_path: Path, device: str) -> dict:
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
    from AttentionSegLib.evaluation.metrics import evaluate_label_maps
    from AttentionSegLib.evaluation.report import format_metrics_table, metrics_to_json, write_metrics_csv
    from AttentionSegLib.inference.predictor import Predictor
    from AttentionSegLib.io.segmentation_file import write_label_image

    predictor = Predictor(model_path, device=device)
    model_file = predictor.model_file
    definition = load_dataset(dataset_json)
    case_id = model_file.training["val_cases"][0]
    case = definition.case(case_id)
    image = read_case_image(case, definition)
    reference = read_case_label(case, definition, image)
    print(f"3/4 segmenting held-out case {case_id} ({case.images[0]})")
    prediction = predictor.predict(image, names=[str(case.images[0])])
    written = [
        write_label_image(
            prediction.label_image,
            out / f"{case_id}_segmentation{ending}",
            model_file.foreground_labels,
            overwrite=True,
        )
        for ending in (".nii.gz", ".seg.nrrd")
    ]
    print(f"4/4 metrics of {case_id} against its reference ({case.label})")
    report = evaluate_label_maps(
        prediction.label_image.array, reference, image.spacing_array_order, model_file.label_names
    )
    print(format_metrics_table(report))
    write_text_atomic(out / "metrics.json", metrics_to_json(report))
    write_metrics_csv(report, out / "metrics.csv")
    print(
        f"Wrote {model_path}, {written[0]}, {written[1]}, {out / 'metrics.csv'} and {out / 'metrics.json'} "
        f"(segmenting took {sum(prediction.seconds.values()):.2f} s on {prediction.device})"
    )
    return report


def run_demo(
    out: Path,
    seed: int = 0,
    minutes: float = 1.0,
    epochs: int = 500,
    device: str = "auto",
    echo: Callable[[dict], None] | None = None,
    step_progress: Callable[[int, int, int, float], None] | None = None,
) -> dict:
    """Make the dataset, train, segment a held-out case and evaluate it; returns the metrics report.

    Args:
        out: output folder (created; an existing one must have been made by the demo).
        seed: phantom and training seed.
        minutes: training budget.
        epochs: at most this many epochs (a test asks for a fixed number, so that a busy machine
            trains as much as an idle one).
        device: auto, cuda or cpu.
        echo: receives the training progress events (the command line prints them).
        step_progress: called as ``(epoch, step, iterations, mean_loss)`` after every training step
            (the command line draws its progress bar).

    Raises:
        AttentionSegError: ``out`` holds files the demo did not make.
    """
    out = Path(out)
    _claim_folder(out)
    dataset_json = _write_dataset(out, seed)
    model_path = _train(dataset_json, out, seed, minutes, epochs, device, echo, step_progress)
    return _segment_and_evaluate(out, dataset_json, model_path, device)
