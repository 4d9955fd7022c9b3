"""``attentionseg dataset info | validate | split | fingerprint | rank``: dataset definitions (MSD or nnU-Net v2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from AttentionSegLib.cli.common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    add_inference_options,
    check_output_path,
    predictor_from_arguments,
)
from AttentionSegLib.cli.progress_bar import ProgressBar
from AttentionSegLib.errors import AttentionSegError

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("dataset", help="inspect, validate and split dataset definitions (MSD or nnU-Net v2)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    info = actions.add_parser("info", help="what the definition declares and how many cases it lists")
    info.add_argument("dataset_json", type=Path)
    info.set_defaults(run=run_info)
    validate = actions.add_parser(
        "validate",
        help="check every case; report all problems at once (exit 1 if any)",
        description="Checks missing and unreadable files, dimensionality, channel counts, shared geometry of "
        "channels and label, undeclared label values, duplicate case ids and clinical values.",
    )
    validate.add_argument("dataset_json", type=Path)
    validate.add_argument("--skip-label-values", action="store_true", help="do not read label maps for their values")
    validate.add_argument("--json", action="store_true", help="print the problems as JSON")
    validate.set_defaults(run=run_validate)
    split = actions.add_parser("split", help="deterministic k-fold split (or a named split) of the annotated cases")
    split.add_argument("dataset_json", type=Path)
    split.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    split.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    split.add_argument("--split", default=None, help="one split only: all, test, fold:K or a named split")
    split.set_defaults(run=run_split)
    fingerprint = actions.add_parser(
        "fingerprint",
        help="shapes, spacings, label geometry and foreground intensities of the annotated cases",
        description="Reads every annotated case once (then cached in ~/.attentionseg/fingerprints, or "
        "$ATTENTIONSEG_CACHE_DIR/fingerprints, until a file of the dataset changes) and summarises what "
        "planning needs: spacing and shape, per-channel foreground intensities, label volumes, bounding "
        "boxes, centroids and class frequencies.",
    )
    fingerprint.add_argument("dataset_json", type=Path)
    fingerprint.add_argument("--json", action="store_true", help="print the whole fingerprint as JSON")
    fingerprint.add_argument("--no-cache", action="store_true", help="recompute; neither read nor write the cache")
    fingerprint.set_defaults(run=run_fingerprint)
    rank = actions.add_parser(
        "rank",
        help="rank the cases without labels by the expected benefit of annotating them (which case next)",
        description="Segments each case without labels (with --all, every case) with MODEL_FILE and ranks them "
        "by the expected wrong volume: the sum of the model's uncertainty (0-1 per voxel) near the predicted "
        "structures, in mL. The first case is the one to annotate next; equal scores keep a seeded order.",
    )
    rank.add_argument("model", type=Path, metavar="MODEL_FILE")
    rank.add_argument("dataset_json", type=Path)
    rank.add_argument("--all", action="store_true", help="rank the annotated cases too")
    rank.add_argument("--seed", type=int, default=0, help="order of equal scores (default 0)")
    rank.add_argument("--limit", type=int, default=None, metavar="N", help="print the first N only")
    rank.add_argument("--json", type=Path, metavar="FILE", help="write the whole ranking as JSON")
    add_inference_options(rank)
    rank.set_defaults(run=run_rank)


def run_info(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import load_dataset

    print(json.dumps(load_dataset(args.dataset_json).summary(), indent=2))
    return EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.validation import validate_dataset

    definition = load_dataset(args.dataset_json)
    problems = validate_dataset(definition, check_label_values=not args.skip_label_values)
    n_cases = len(definition.cases) + len(definition.test_cases)
    if args.json:
        listing = [{"case": p.case_id, "file": str(p.file) if p.file else None, "message": p.message} for p in problems]
        print(json.dumps({"dataset": str(definition.path), "n_cases": n_cases, "problems": listing}, indent=2))
    else:
        for problem in problems:
            print(problem)
        print(f"{definition.path}: {n_cases} cases, {len(problems)} problem(s)")
    return EXIT_PROBLEMS if problems else EXIT_OK


def run_split(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.splits import k_fold_split, resolve_split

    definition = load_dataset(args.dataset_json)
    if args.split is not None:
        result = resolve_split(definition, args.split, args.folds, args.seed)
    else:
        try:
            result = k_fold_split([c.case_id for c in definition.cases], args.folds, args.seed)
        except ValueError as error:
            raise AttentionSegError(f"{definition.path}: {error}") from None
    print(json.dumps(result, indent=2))
    return EXIT_OK


# (column title, ChannelIntensity attribute) of the intensity table
_INTENSITY_COLUMNS = (
    ("Mean", "mean"),
    ("Std", "std"),
    ("Min", "minimum"),
    ("P0.5", "percentile_00_5"),
    ("P50", "percentile_50_0"),
    ("P99.5", "percentile_99_5"),
    ("Max", "maximum"),
)


def run_fingerprint(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.fingerprint import compute_fingerprint, load_or_compute_fingerprint
    from AttentionSegLib.evaluation.report import json_safe

    definition = load_dataset(args.dataset_json)
    bar = ProgressBar("fingerprint")

    def on_case(done: int, total: int) -> None:
        bar(done / total, f"{done}/{total}")

    try:
        if args.no_cache:
            fingerprint = compute_fingerprint(definition, progress=on_case)
        else:
            fingerprint = load_or_compute_fingerprint(definition, progress=on_case)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(json_safe(fingerprint.to_dict()), indent=1))
    else:
        print(format_fingerprint(fingerprint))
    return EXIT_OK


def run_rank(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.inference.case_ranking import cases_to_rank, rank_cases

    definition = load_dataset(args.dataset_json)
    cases = cases_to_rank(definition, args.all)
    if not cases:
        raise AttentionSegError(
            f"{definition.path}: no case without labels to rank (MSD 'test' or nnU-Net imagesTs); "
            "--all ranks every case"
        )
    if args.json is not None:
        check_output_path(args.json, [args.dataset_json, args.model], overwrite=True)
    predictor = predictor_from_arguments(args.model, args)
    bar = ProgressBar("ranking")
    try:
        ranked = rank_cases(predictor, definition, cases, args.seed, progress=lambda d, n: bar(d / n, f"{d}/{n}"))
    finally:
        bar.close()
    print(f"{'rank':>4}  {'case':<24} {'expected wrong (mL)':>20} {'mean uncertainty':>17} {'structure (mL)':>15}")
    for position, row in enumerate(ranked[: args.limit] if args.limit else ranked, start=1):
        print(
            f"{position:>4}  {row.case_id:<24} {row.expected_wrong_ml:>20.3f} {row.mean_uncertainty:>17.3f} "
            f"{row.structure_ml:>15.2f}"
        )
    if args.json is not None:
        from dataclasses import asdict

        from AttentionSegLib.io.atomic import write_text_atomic

        document = {"model": str(args.model), "dataset": str(definition.path), "seed": args.seed}
        document["ranking"] = [asdict(row) for row in ranked]
        write_text_atomic(args.json, json.dumps(document, indent=2))
    return EXIT_OK


def format_fingerprint(fingerprint) -> str:
    """A readable summary of a :class:`~AttentionSegLib.data.fingerprint.DatasetFingerprint`: grid,
    per-channel foreground intensities and per-label geometry along the array axes. A label's
    volume (area in 2D), bounding box and centroid are medians over the cases that hold it."""
    import numpy as np

    from AttentionSegLib.evaluation.report import fixed_width_table, format_value

    def triple(values, pattern: str = "{:.3g}") -> str:
        return " x ".join(pattern.format(v) for v in values)

    spacings, shapes = fingerprint.spacings, fingerprint.shapes
    lines = [
        f"{fingerprint.dataset_name}: {len(fingerprint.cases)} annotated cases, {fingerprint.spatial_dims}D, "
        f"{fingerprint.image_kind} ({fingerprint.dataset_path})",
        f"axes in array order {'(k, j, i)' if fingerprint.spatial_dims == 3 else '(j, i)'}; spacing mm, shape voxels",
        f"spacing  median {triple(fingerprint.median_spacing)}   min {triple(spacings.min(axis=0))}   "
        f"max {triple(spacings.max(axis=0))}",
        f"shape    median {triple(fingerprint.median_shape, '{:g}')}   min {triple(shapes.min(axis=0), '{:d}')}   "
        f"max {triple(shapes.max(axis=0), '{:d}')}",
        "",
        "foreground intensities",
    ]
    header = ["Channel", *[title for title, _ in _INTENSITY_COLUMNS]]
    rows = [
        [channel.name, *[format_value(getattr(channel, key), "{:.4g}") for _, key in _INTENSITY_COLUMNS]]
        for channel in fingerprint.intensities
    ]
    lines += [fixed_width_table(header, rows, 1), ""]
    volume_title = "Median mL" if fingerprint.spatial_dims == 3 else "Median mm2"
    volume_scale = 1.0 if fingerprint.spatial_dims == 3 else 1000.0
    frequencies = fingerprint.class_frequencies
    header = ["Label", "Name", "Cases", volume_title, "Median bbox mm", "Median centroid mm", "Frequency"]
    rows = [["0", fingerprint.labels.get(0, "background"), "", "", "", "", f"{frequencies.get(0, 0.0):.4f}"]]
    for value in fingerprint.foreground_labels:
        present = fingerprint.label_case_count(value)
        volumes = fingerprint.label_volumes_ml(value)
        volumes = volumes[volumes > 0]
        rows.append(
            [
                str(value),
                fingerprint.labels[value],
                f"{present}/{len(fingerprint.cases)}",
                format_value(float(np.median(volumes)) * volume_scale if present else None, "{:.4g}"),
                triple(np.median(fingerprint.label_bbox_sizes_mm(value), axis=0), "{:.1f}") if present else "-",
                triple(np.median(fingerprint.label_centroids_mm(value), axis=0), "{:.1f}") if present else "-",
                f"{frequencies.get(value, 0.0):.4f}",
            ]
        )
    lines.append(fixed_width_table(header, rows, 2))
    return "\n".join(lines)
