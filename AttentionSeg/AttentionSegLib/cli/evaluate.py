"""``attentionseg evaluate``: metrics of a predicted label map file against a reference file."""

from __future__ import annotations

import argparse
from pathlib import Path

from AttentionSegLib.cli.common import EXIT_OK, check_output_path
from AttentionSegLib.errors import AttentionSegError

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="per-label Dice, IoU, HD95, ASSD, NSD and volumes of a predicted label map against a reference",
        description="Compare a predicted label map with a reference label map (NIfTI, NRRD, MHA, PNG ..., "
        "or a DICOM SEG, placed on the other file's grid). "
        "Distances are in mm using the reference's spacing; HD95 follows MONAI's definition.",
    )
    parser.add_argument("prediction", type=Path, help="predicted label map file (or DICOM SEG)")
    parser.add_argument("reference", type=Path, help="reference label map file (or DICOM SEG)")
    parser.add_argument("--labels", type=Path, metavar="DATASET_JSON", help="name labels after this dataset definition")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write the per-label table as CSV")
    parser.add_argument(
        "--resample", action="store_true", help="resample the prediction (nearest neighbour) onto the reference grid"
    )
    parser.add_argument(
        "--nsd-tolerance", type=float, default=1.0, metavar="MM", help="NSD tolerance in mm (default 1)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace report files that exist")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.evaluation.evaluate import evaluate_label_files
    from AttentionSegLib.evaluation.report import format_metrics_table, metrics_to_json, write_metrics_csv
    from AttentionSegLib.io.atomic import write_text_atomic

    inputs = [args.prediction, args.reference] + ([args.labels] if args.labels else [])
    for output in (args.json, args.csv):
        check_output_path(output, inputs, args.overwrite)
    if args.nsd_tolerance < 0:
        raise AttentionSegError(f"--nsd-tolerance must be >= 0 mm, got {args.nsd_tolerance}")
    definition = load_dataset(args.labels) if args.labels else None
    report = evaluate_label_files(args.prediction, args.reference, definition, args.resample, args.nsd_tolerance)
    print(format_metrics_table(report))
    if args.json:
        write_text_atomic(args.json, metrics_to_json(report))
    if args.csv:
        write_metrics_csv(report, args.csv)
    return EXIT_OK
