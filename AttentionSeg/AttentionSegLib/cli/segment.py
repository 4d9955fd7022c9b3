"""``attentionseg segment``: a model file segments image(s); the label image keeps the input's grid."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from AttentionSegLib.cli.common import (
    EXIT_OK,
    add_inference_options,
    check_new_output,
    check_output_path,
    json_value,
    predictor_from_arguments,
)
from AttentionSegLib.cli.progress_bar import ProgressBar
from AttentionSegLib.errors import AttentionSegError

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "segment",
        help="segment image(s) with a model file; writes a label image on the input's grid",
        description="Runs a model file (attentionseg train) on one image per model channel, in the model's "
        "channel order (or one image holding all channels). The label image has the input's grid "
        "(size, spacing, origin, direction). The ending of --out picks the format: .nii.gz, .nrrd, .mha, .png or "
        ".seg.nrrd (a Slicer segmentation with the model's label names and colours). With --ref, prints "
        "per-label metrics against that reference label map.",
    )
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="input image file(s)")
    parser.add_argument("--model", type=Path, required=True, metavar="MODEL_FILE", help="model file (model.pt)")
    parser.add_argument("--out", type=Path, required=True, metavar="PRED", help="output label image file")
    parser.add_argument("--ref", type=Path, metavar="REF", help="reference label map: print metrics against it")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write a JSON report (timings, metrics)")
    parser.add_argument(
        "--clinical", type=json_value, metavar="JSON", help="clinical values: a JSON object by name, or a list"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--progress", action="store_true", help="print progress events (JSON lines) on stderr, for programs"
    )
    add_inference_options(parser)
    parser.set_defaults(run=run)


class _ProgressEvents:
    """``--progress``: each fraction as a ``progress`` event line on stderr, for programs."""

    def __call__(self, fraction: float) -> None:
        from AttentionSegLib.progress import event_line

        print(event_line("progress", fraction=round(fraction, 4)), file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _check_arguments(args: argparse.Namespace) -> None:
    from AttentionSegLib.io.image import image_suffix

    inputs = [*args.images, args.model] + ([args.ref] if args.ref else [])
    for output in (args.out, args.json):
        check_output_path(output, inputs)
    if not image_suffix(args.out):
        raise AttentionSegError(f"{args.out}: unknown ending (use .nii.gz, .nrrd, .seg.nrrd, .mha or .png)")
    check_new_output(args.out, args.overwrite)


def run(args: argparse.Namespace) -> int:
    from AttentionSegLib.evaluation.evaluate import read_label_image
    from AttentionSegLib.evaluation.metrics import evaluate_label_maps
    from AttentionSegLib.evaluation.report import format_metrics_table
    from AttentionSegLib.io.image import check_same_grid, read_image
    from AttentionSegLib.io.segmentation_file import write_label_image

    _check_arguments(args)
    predictor = predictor_from_arguments(args.model, args)
    images = [read_image(path) for path in args.images]
    reference = read_label_image(args.ref) if args.ref else None
    if reference is not None:
        check_same_grid(images[0], reference, str(args.images[0]), str(args.ref))
    bar = _ProgressEvents() if args.progress else ProgressBar("segmenting")
    try:
        names = [str(path) for path in args.images]
        prediction = predictor.predict(images, clinical=args.clinical, progress=bar, names=names)
    finally:
        bar.close()
    model_file = predictor.model_file
    write_label_image(prediction.label_image, args.out, model_file.labels, overwrite=args.overwrite)
    timing = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in prediction.seconds.items())
    print(f"wrote {args.out} ({prediction.device}; {timing})", file=sys.stderr)
    report = None
    if reference is not None:
        report = evaluate_label_maps(
            prediction.label_image.array, reference.array, reference.spacing_array_order, model_file.label_names
        )
        print(format_metrics_table(report))
    if args.json:
        _write_json_report(args, prediction, model_file.foreground_labels, report)
    return EXIT_OK


def _write_json_report(args: argparse.Namespace, prediction, labels: list[dict], report: dict | None) -> None:
    from AttentionSegLib.evaluation.report import json_safe
    from AttentionSegLib.io.atomic import write_text_atomic

    document = {
        "model": str(args.model),
        "images": [str(p) for p in args.images],
        "output": str(args.out),
        "reference": str(args.ref) if args.ref else None,
        "device": prediction.device,
        "seconds": prediction.seconds,
        "labels": labels,
        "metrics": report,
    }
    write_text_atomic(args.json, json.dumps(json_safe(document), indent=2))
