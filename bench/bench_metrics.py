"""Benchmark: AttentionSeg's per-label metrics against MONAI's, side by side on the CPU.

For each case, ``compute_label_metrics`` (ours: Dice, IoU, precision, sensitivity, HD95, HDmax,
ASSD, NSD and volumes for every label) and MONAI's ``DiceMetric`` + ``HausdorffDistanceMetric``
(95th percentile) are run alternately ``--repeats`` times. MONAI's time includes turning both
label maps into one-hot tensors over the label values present in either map.

Reported per case: the median seconds of each side, the ratio MONAI / ours, and the largest
absolute difference of Dice and HD95 (mm) over labels where both sides give a finite value.
Agreement is required on labels present in both maps (Dice <= 1e-6, HD95 <= 1e-3 mm); labels
present in only one map follow different, documented conventions (ours: Dice 0 and HD95 inf;
MONAI: Dice NaN for a label missing from the reference, HD95 NaN for one missing from the
prediction) and are counted, not compared.

Cases:
  1. totalseg-example: ``example_seg_fast.nii.gz`` (prediction) vs ``example_seg.nii.gz``.
  2. totalseg 512x512x20: the totalseg reference resampled (nearest neighbour) onto a 512x512x20
     grid over the same field of view, and a perturbed copy of it as prediction.
  3. ellipsoids 512x512x20: a synthetic 8-label phantom and a perturbed copy of it.
``--skip-data`` runs case 3 only, so the script needs no data folder.

Exit status: 0 when every case agrees within tolerance, 1 otherwise.

Run from the repository root:  .venv/bin/python bench/bench_metrics.py [--data DIR] [--repeats N]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DICE_TOLERANCE = 1e-6
HD95_TOLERANCE_MM = 1e-3
PLANE_SIZE = 512
N_SLICES = 20
PERTURB_SEED = 7

try:
    from AttentionSegLib.data.phantoms import ellipsoid_label_map, perturbed_label_map
    from AttentionSegLib.evaluation.metrics import compute_label_metrics
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "AttentionSeg"))
    from AttentionSegLib.data.phantoms import ellipsoid_label_map, perturbed_label_map
    from AttentionSegLib.evaluation.metrics import compute_label_metrics

import monai  # noqa: E402
import scipy  # noqa: E402
import torch  # noqa: E402
from monai.metrics import DiceMetric, HausdorffDistanceMetric  # noqa: E402
from monai.networks.utils import one_hot  # noqa: E402

# MONAI warns once per label that is empty in one of the maps; that is expected here.
_EMPTY_MASK_WARNING = r"the (ground truth|prediction) of class .* is all 0"
# MONAI 1.6 passes a deprecated argument to itself inside HausdorffDistanceMetric.
_MONAI_INTERNAL_DEPRECATION = r".*always_return_as_numpy"


@dataclass
class Case:
    """A prediction / reference pair with its spacing in mm per array axis."""

    name: str
    prediction: np.ndarray
    reference: np.ndarray
    spacing_mm: tuple[float, ...]


@dataclass
class LabelScores:
    """Dice and HD95 (mm) of one side, by label value."""

    dice: dict[int, float]
    hd95_mm: dict[int, float]


@dataclass
class Comparison:
    """How ours and MONAI's per-label values compare on one case."""

    categories: dict[str, list[int]]
    max_dice_diff: float = 0.0
    max_hd95_diff_mm: float = 0.0
    worst_dice_label: int | None = None
    worst_hd95_label: int | None = None
    # (metric, label value, category, ours, MONAI) where a side is not finite and the two differ
    # (finite vs non-finite, or inf vs NaN).
    nonfinite_mismatches: list[tuple[str, int, str, float, float]] = field(default_factory=list)

    @property
    def unexpected_mismatches(self) -> list[tuple[str, int, str, float, float]]:
        """Non-finite mismatches not explained by the documented one-sided conventions."""
        return [m for m in self.nonfinite_mismatches if not _is_known_convention(*m)]

    @property
    def agrees(self) -> bool:
        return (
            self.max_dice_diff <= DICE_TOLERANCE
            and self.max_hd95_diff_mm <= HD95_TOLERANCE_MM
            and not any(category == "both" for _, _, category, _, _ in self.nonfinite_mismatches)
        )


@dataclass
class CaseResult:
    case: Case
    ours_seconds: list[float]
    monai_seconds: list[float]
    comparison: Comparison


# --------------------------------------------------------------------------------------------
# Cases


def read_label_map(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A label map as a numpy array and its spacing in array axis order."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing()))


def totalseg_example_case(data: Path) -> Case:
    folder = data / "totalseg-example"
    prediction, spacing = read_label_map(folder / "example_seg_fast.nii.gz")
    reference, reference_spacing = read_label_map(folder / "example_seg.nii.gz")
    if not np.allclose(spacing, reference_spacing) or prediction.shape != reference.shape:
        raise ValueError("totalseg-example label maps do not share one grid")
    return Case("totalseg-example", prediction, reference, spacing)


def resample_to_size(path: Path, size_xyz: Sequence[int]) -> tuple[np.ndarray, tuple[float, ...]]:
    """Nearest-neighbour resampling of a label map onto ``size_xyz`` voxels (SimpleITK order)
    covering the same field of view: the outer voxel faces stay where they were."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    old_size = np.asarray(image.GetSize(), dtype=float)
    old_spacing = np.asarray(image.GetSpacing())
    new_spacing = old_size * old_spacing / np.asarray(size_xyz, dtype=float)
    direction = np.asarray(image.GetDirection()).reshape(image.GetDimension(), -1)
    # Voxel centres move by half the change of voxel size, along the image axes.
    origin = np.asarray(image.GetOrigin()) + direction @ ((new_spacing - old_spacing) / 2.0)
    resampled = sitk.Resample(
        image,
        [int(n) for n in size_xyz],
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        origin.tolist(),
        new_spacing.tolist(),
        image.GetDirection(),
        0,
        image.GetPixelID(),
    )
    return sitk.GetArrayFromImage(resampled), tuple(float(s) for s in reversed(new_spacing))


def totalseg_large_case(data: Path) -> Case:
    reference, spacing = resample_to_size(
        data / "totalseg-example" / "example_seg.nii.gz", (PLANE_SIZE, PLANE_SIZE, N_SLICES)
    )
    prediction = perturbed_label_map(reference, seed=PERTURB_SEED, max_shift_mm=2.0, spacing_mm=spacing)
    return Case(f"totalseg {PLANE_SIZE}x{PLANE_SIZE}x{N_SLICES}", prediction, reference, spacing)


def ellipsoid_case() -> Case:
    spacing = (2.5, 0.7, 0.7)
    reference = ellipsoid_label_map((N_SLICES, PLANE_SIZE, PLANE_SIZE), 8, seed=1, spacing_mm=spacing)
    prediction = perturbed_label_map(reference, seed=PERTURB_SEED, max_shift_mm=2.0, spacing_mm=spacing)
    return Case(f"ellipsoids {PLANE_SIZE}x{PLANE_SIZE}x{N_SLICES}", prediction, reference, spacing)


def build_cases(data: Path, skip_data: bool) -> list[Case]:
    cases = [] if skip_data else [totalseg_example_case(data), totalseg_large_case(data)]
    return cases + [ellipsoid_case()]


# --------------------------------------------------------------------------------------------
# The two sides


def ours(case: Case) -> list[dict]:
    return compute_label_metrics(case.prediction, case.reference, case.spacing_mm)


def to_one_hot(label_map: np.ndarray, lookup: np.ndarray, n_channels: int) -> torch.Tensor:
    """Float one-hot tensor (1, n_channels, *shape) of a label map remapped through ``lookup``."""
    compact = torch.from_numpy(lookup[label_map])[None, None]
    return one_hot(compact, num_classes=n_channels, dim=1, dtype=torch.float32)


def monai_side(case: Case) -> LabelScores:
    """MONAI's Dice and HD95 per label value, one-hot conversion included."""
    values = np.union1d(np.unique(case.prediction), np.unique(case.reference))
    values = values[values != 0]
    lookup = np.zeros(int(max(case.prediction.max(), case.reference.max())) + 1, dtype=np.int64)
    lookup[values] = np.arange(1, values.size + 1)
    y_pred = to_one_hot(case.prediction, lookup, values.size + 1)
    y = to_one_hot(case.reference, lookup, values.size + 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_EMPTY_MASK_WARNING)
        warnings.filterwarnings("ignore", message=_MONAI_INTERNAL_DEPRECATION, category=FutureWarning)
        dice = DiceMetric(include_background=False, reduction="none")(y_pred=y_pred, y=y)
        hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            y_pred=y_pred, y=y, spacing=list(case.spacing_mm)
        )
    return LabelScores(
        dice={int(v): float(d) for v, d in zip(values, dice[0])},
        hd95_mm={int(v): float(h) for v, h in zip(values, hd95[0])},
    )


def time_call(function: Callable[[Case], object], case: Case) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(case)
    return time.perf_counter() - start, result


def run_case(case: Case, repeats: int) -> CaseResult:
    """Ours and MONAI alternately, ``repeats`` times each; values from the last run."""
    ours_seconds, monai_seconds = [], []
    rows, scores = [], None
    for _ in range(repeats):
        seconds, rows = time_call(ours, case)
        ours_seconds.append(seconds)
        seconds, scores = time_call(monai_side, case)
        monai_seconds.append(seconds)
    return CaseResult(case, ours_seconds, monai_seconds, compare(rows, scores))


# --------------------------------------------------------------------------------------------
# Comparison


def _is_known_convention(metric: str, value: int, category: str, ours_value: float, monai_value: float) -> bool:
    if category == "reference" and metric == "hd95":
        return math.isinf(ours_value) and math.isnan(monai_value)
    if category == "prediction" and metric == "dice":
        return ours_value == 0.0 and math.isnan(monai_value)
    return False


def _same_non_finite(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def compare(rows: list[dict], monai_scores: LabelScores) -> Comparison:
    """Largest differences where both sides are finite, and every label where a side is not finite
    and the two sides differ."""
    comparison = Comparison(categories={"both": [], "reference": [], "prediction": []})
    for row in rows:
        value, category = row["value"], row["present_in"]
        comparison.categories.setdefault(category, []).append(value)
        for metric, ours_value, monai_value in (
            ("dice", row["dice"], monai_scores.dice.get(value, math.nan)),
            ("hd95", row["hd95_mm"], monai_scores.hd95_mm.get(value, math.nan)),
        ):
            if not (math.isfinite(ours_value) and math.isfinite(monai_value)):
                if not _same_non_finite(ours_value, monai_value):
                    comparison.nonfinite_mismatches.append((metric, value, category, ours_value, monai_value))
                continue
            difference = abs(ours_value - monai_value)
            if metric == "dice" and difference >= comparison.max_dice_diff:
                comparison.max_dice_diff, comparison.worst_dice_label = difference, value
            if metric == "hd95" and difference >= comparison.max_hd95_diff_mm:
                comparison.max_hd95_diff_mm, comparison.worst_hd95_label = difference, value
    return comparison


# --------------------------------------------------------------------------------------------
# Report


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown CPU"


def machine_line() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"CPU: {cpu_model()}, {cores} cores (torch threads {torch.get_num_threads()}); "
        f"Python {platform.python_version()}, torch {torch.__version__}, MONAI {monai.__version__}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}"
    )


def _format_spacing(spacing: Sequence[float]) -> str:
    return " x ".join(f"{s:.3g}" for s in spacing)


def results_table(results: list[CaseResult]) -> str:
    lines = [
        "| case | shape | spacing mm | labels | ours s | MONAI s | ratio | max \\|ΔDice\\| | max \\|ΔHD95\\| mm |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        case, comparison = result.case, result.comparison
        ours_s = statistics.median(result.ours_seconds)
        monai_s = statistics.median(result.monai_seconds)
        n_labels = sum(len(values) for values in comparison.categories.values())
        lines.append(
            f"| {case.name} | {'x'.join(map(str, case.reference.shape))} | {_format_spacing(case.spacing_mm)} "
            f"| {n_labels} | {ours_s:.3f} | {monai_s:.3f} | {monai_s / ours_s:.1f} "
            f"| {comparison.max_dice_diff:.1e} | {comparison.max_hd95_diff_mm:.1e} |"
        )
    return "\n".join(lines)


def categories_table(results: list[CaseResult]) -> str:
    lines = [
        "| case | labels in both | reference only | prediction only | non-finite mismatches (Dice / HD95) "
        "| all explained by conventions |",
        "|---|---:|---:|---:|---|---|",
    ]
    for result in results:
        comparison = result.comparison
        mismatches = comparison.nonfinite_mismatches
        n_dice = sum(1 for m in mismatches if m[0] == "dice")
        n_hd95 = sum(1 for m in mismatches if m[0] == "hd95")
        lines.append(
            f"| {result.case.name} | {len(comparison.categories['both'])} "
            f"| {len(comparison.categories['reference'])} | {len(comparison.categories['prediction'])} "
            f"| {n_dice} / {n_hd95} | {'yes' if not comparison.unexpected_mismatches else 'NO'} |"
        )
    return "\n".join(lines)


def convention_notes(results: list[CaseResult]) -> list[str]:
    """One line per label whose non-finite values differ as the documented conventions say."""
    lines = []
    for result in results:
        comparison = result.comparison
        for mismatch in comparison.nonfinite_mismatches:
            if mismatch not in comparison.unexpected_mismatches:
                metric, value, category, ours_value, monai_value = mismatch
                lines.append(
                    f"{result.case.name}: label {value} present in {category} only: "
                    f"{metric} ours {ours_value} vs MONAI {monai_value} (known convention)"
                )
    return lines


def problems(results: list[CaseResult]) -> list[str]:
    """Human-readable lines for every tolerance failure or unexplained mismatch."""
    lines = []
    for result in results:
        comparison, name = result.comparison, result.case.name
        if comparison.max_dice_diff > DICE_TOLERANCE:
            lines.append(
                f"{name}: Dice differs by {comparison.max_dice_diff:.3g} (label {comparison.worst_dice_label})"
            )
        if comparison.max_hd95_diff_mm > HD95_TOLERANCE_MM:
            lines.append(
                f"{name}: HD95 differs by {comparison.max_hd95_diff_mm:.3g} mm (label {comparison.worst_hd95_label})"
            )
        for metric, value, category, ours_value, monai_value in comparison.unexpected_mismatches:
            lines.append(
                f"{name}: label {value} (present in {category}): {metric} ours {ours_value} vs MONAI {monai_value}"
            )
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help=f"data root holding totalseg-example/ (default {DEFAULT_DATA})"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side per case (default 3)")
    parser.add_argument("--skip-data", action="store_true", help="run the synthetic case only (no data folder needed)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(machine_line())
    print(f"repeats: {args.repeats} per side, alternating; times are medians\n")
    results = []
    for case in build_cases(args.data, args.skip_data):
        print(f"running {case.name} ...", file=sys.stderr, flush=True)
        results.append(run_case(case, args.repeats))
    print(results_table(results))
    print()
    print(categories_table(results))
    issues = problems(results)
    failed = not all(result.comparison.agrees for result in results)
    print()
    for line in convention_notes(results):
        print(f"note: {line}")
    for line in issues:
        print(f"WARNING: {line}")
    print(
        f"agreement on labels present in both maps (Dice <= {DICE_TOLERANCE:g}, HD95 <= {HD95_TOLERANCE_MM:g} mm): "
        f"{'FAIL' if failed else 'OK'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
