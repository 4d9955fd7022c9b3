"""``attentionseg segment``: a model file segments image(s); the label image keeps the input's grid."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from AttentionSegLib.cli.common import (
    EXIT_OK,
    add_inference_options,
    check_output_path,
    inference_options,
    json_value,
    predictor_from_arguments,
)
from AttentionSegLib.cli.progress_bar import ProgressBar
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_source import model_source

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "segment",
        help="segment image(s) with a model file; writes a label image on the input's grid",
        description="Runs a model file (attentionseg train) on one image per model channel, in the model's "
        "channel order (or one image holding all channels); an image may be a DICOM series, given as its "
        "folder. The label image has the input's grid (size, spacing, origin, direction). The ending of --out "
        "picks the format: .nii.gz, .nrrd, .mha, .png, .seg.nrrd (a Slicer segmentation with the model's label "
        "names, colours and terminology) or .dcm (a DICOM SEG referencing the input series; --dicom-seg writes "
        "one besides --out). With --ref (a label map or a DICOM SEG), prints per-label metrics against it. "
        "With --dataset instead of images: every case of a split into --out-dir (one label map per case), "
        "resumable, and spread over a Ray cluster's workers with --cluster.",
    )
    parser.add_argument(
        "images", type=Path, nargs="*", metavar="IMAGE", help="input image file(s) or DICOM series folder(s)"
    )
    parser.add_argument(
        "--model",
        type=model_source,
        required=True,
        metavar="MODEL",
        help="model file (model.pt), or a server's model http(s)://HOST:PORT/models/NAME (token: ATTENTIONSEG_TOKEN)",
    )
    parser.add_argument("--out", type=Path, metavar="PRED", help="output label image file (.dcm: a DICOM SEG)")
    parser.add_argument(
        "--dicom-seg", type=Path, metavar="FILE.dcm", help="also write a DICOM SEG (the input must be a DICOM series)"
    )
    parser.add_argument("--series", metavar="UID", help="Series Instance UID, when a DICOM folder holds several")
    parser.add_argument(
        "--ref", type=Path, metavar="REF", help="reference label map or DICOM SEG: print metrics against it"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write a JSON report (timings, metrics)")
    parser.add_argument(
        "--clinical", type=json_value, metavar="JSON", help="clinical values: a JSON object by name, or a list"
    )
    parser.add_argument(
        "--uncertainty",
        type=Path,
        metavar="FILE",
        help="also write where the segmentation is likely wrong: a float image on the input's grid, 0 (sure) to 1",
    )
    parser.add_argument(
        "--uncertainty-method",
        choices=("entropy", "tta"),
        default=None,
        help="entropy of the class probabilities (default), or the disagreement of the mirrored copies (needs --tta)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--progress", action="store_true", help="print progress events (JSON lines) on stderr, for programs"
    )
    cohort = parser.add_argument_group("a dataset's cases (instead of IMAGE)")
    cohort.add_argument("--dataset", type=Path, metavar="DATASET_JSON", help="segment the cases of a dataset")
    cohort.add_argument("--out-dir", type=Path, metavar="DIR", help="one label map per case; a rerun resumes")
    cohort.add_argument("--split", default="all", help="all (default: every image), test, fold:K or a named split")
    cohort.add_argument(
        "--suffix", default=".nii.gz", help="label map format: .nii.gz (default), .nrrd, .seg.nrrd, .mha"
    )
    cohort.add_argument("--cluster", metavar="ADDRESS", help="spread the cases over a Ray cluster (HOST:6379 or auto)")
    add_inference_options(parser)
    parser.set_defaults(run=run)


def _run_dataset(args: argparse.Namespace) -> int:
    """``--dataset``: every case of the split into ``--out-dir``, resumable, here or on a cluster."""
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.splits import split_case_ids
    from AttentionSegLib.serve.cohort import CohortJob, run_cohort

    if args.images:
        raise AttentionSegError("give either IMAGE(s) or --dataset, not both")
    if args.out_dir is None:
        raise AttentionSegError("--dataset: give --out-dir DIR (one label map per case)")
    extra = [
        flag
        for flag, value in (
            ("--out", args.out),
            ("--ref", args.ref),
            ("--dicom-seg", args.dicom_seg),
            ("--uncertainty", args.uncertainty),
            ("--clinical", args.clinical),
        )
        if value is not None
    ]
    if extra:
        raise AttentionSegError(f"--dataset writes one label map per case into --out-dir; drop {', '.join(extra)}")
    options = inference_options(args)
    definition = load_dataset(args.dataset)
    if args.split == "all":  # every image, annotated or not
        cases = [case.case_id for case in definition.cases + definition.test_cases]
    else:
        cases = split_case_ids(definition, args.split)
    if not cases:
        raise AttentionSegError(f"{args.dataset}: split {args.split!r} holds no cases")
    job = CohortJob(args.model, args.dataset, cases, args.out_dir, args.suffix, measure=False, options=options)
    bar = ProgressBar("segmenting cases")
    skipped = []

    def on_case(done: int, total: int, case_id: str, was_done: bool) -> None:
        if was_done:
            skipped.append(case_id)
        bar(done / total, f"{done}/{total} {case_id}")

    try:
        run = run_cohort(job, args.cluster, on_case)
    finally:
        bar.close()
    nodes = len(set(run.nodes.values()))
    where = f"on {nodes} node(s) of the cluster at {args.cluster}" if args.cluster else "here"
    resumed = f"; {len(skipped)} were done already" if skipped else ""
    print(f"wrote {len(cases)} label maps into {args.out_dir} ({where}{resumed})", file=sys.stderr)
    return EXIT_OK


class _ProgressEvents:
    """``--progress``: each fraction as a ``progress`` event line on stderr, for programs."""

    def __call__(self, fraction: float) -> None:
        from AttentionSegLib.progress import event_line

        print(event_line("progress", fraction=round(fraction, 4)), file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _is_dicom_seg_path(path: Path | None) -> bool:
    return path is not None and path.name.lower().endswith(".dcm")


def _check_arguments(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """(label image output, DICOM SEG output), checked before any work."""
    from AttentionSegLib.io.image import image_suffix

    if args.out is None and args.dicom_seg is None:
        raise AttentionSegError("give --out (a label image or .dcm) and/or --dicom-seg FILE.dcm")
    label_out = None if _is_dicom_seg_path(args.out) else args.out
    seg_out = args.out if _is_dicom_seg_path(args.out) else args.dicom_seg
    if args.dicom_seg is not None and _is_dicom_seg_path(args.out):
        raise AttentionSegError(f"{args.out}: --out is already a DICOM SEG; drop --dicom-seg or change --out")
    if seg_out is not None and not _is_dicom_seg_path(seg_out):
        raise AttentionSegError(f"{seg_out}: a DICOM SEG file ends in .dcm")
    if seg_out is not None and not args.images[0].is_dir():
        raise AttentionSegError(
            f"{seg_out}: a DICOM SEG references a DICOM series; {args.images[0]} is a file, not a series folder"
        )
    if args.uncertainty is not None and (not image_suffix(args.uncertainty) or args.uncertainty.suffix == ".png"):
        raise AttentionSegError(f"{args.uncertainty}: an uncertainty map is a float image (.nii.gz, .nrrd or .mha)")
    if args.uncertainty_method and args.uncertainty is None:
        raise AttentionSegError("--uncertainty-method: give --uncertainty FILE too")
    if label_out is not None and not image_suffix(label_out):
        raise AttentionSegError(f"{label_out}: unknown ending (use .nii.gz, .nrrd, .seg.nrrd, .mha, .png or .dcm)")
    if label_out is not None and seg_out is not None and label_out.resolve() == seg_out.resolve():
        raise AttentionSegError(f"{label_out}: --out and --dicom-seg name the same file")
    inputs = [*args.images, args.model] + ([args.ref] if args.ref else [])
    outputs = [output for output in (label_out, seg_out, args.json, args.uncertainty) if output is not None]
    if len({output.resolve() for output in outputs}) < len(outputs):
        raise AttentionSegError(f"{outputs[-1]}: two outputs name the same file")
    for output in outputs:
        check_output_path(output, inputs, args.overwrite)
    return label_out, seg_out


def _read_inputs(args: argparse.Namespace, label_names: dict[int, str]):
    """The input images, the DICOM series of the first (or None) and the reference (or None)."""
    from AttentionSegLib.io.dicom_series import read_dicom_series
    from AttentionSegLib.io.image import check_same_grid, read_image
    from AttentionSegLib.io.label_map import read_label_image

    images, series = [], None
    for index, path in enumerate(args.images):
        if path.is_dir():
            image, path_series = read_dicom_series(path, args.series)  # its warnings go to stderr (main)
            if index == 0:  # a DICOM SEG references the series of the first image
                series = path_series
            images.append(image)
        else:
            images.append(read_image(path))
    reference = None
    if args.ref is not None:
        grid = images[0].channel(0)  # the first image's grid, one channel
        reference = read_label_image(args.ref, onto=grid, label_names=label_names)
        check_same_grid(images[0], reference, str(args.images[0]), str(args.ref))
    return images, series, reference


def _model_identity(model_path, model_file) -> tuple[str, str]:
    """(algorithm name, version) for DICOM: the network and dataset, and the weights' hash."""
    from AttentionSegLib import __version__
    from AttentionSegLib.inference.model_source import model_digest

    digest = model_digest(model_path)[:16]
    dataset = model_file.training.get("dataset") or ""
    name = f"AttentionSeg {model_file.network['name']}" + (f" ({dataset})" if dataset else "")
    return name, f"{__version__} model sha256:{digest}"


def run(args: argparse.Namespace) -> int:
    if args.dataset is not None:
        return _run_dataset(args)
    if not args.images:
        raise AttentionSegError("give the image(s) to segment, or --dataset DATASET_JSON --out-dir DIR")
    for flag, value in (("--out-dir", args.out_dir), ("--cluster", args.cluster)):
        if value is not None:
            raise AttentionSegError(f"{flag} goes with --dataset (a dataset's cases)")
    from AttentionSegLib.evaluation.metrics import evaluate_label_maps
    from AttentionSegLib.evaluation.report import format_metrics_table
    from AttentionSegLib.io.dicom_seg import write_dicom_seg
    from AttentionSegLib.io.segmentation_file import write_label_image

    label_out, seg_out = _check_arguments(args)
    predictor = predictor_from_arguments(args.model, args)
    images, series, reference = _read_inputs(args, predictor.model_file.label_names)
    bar = _ProgressEvents() if args.progress else ProgressBar("segmenting")
    try:
        names = [str(path) for path in args.images]
        method = None
        if args.uncertainty is not None:
            from AttentionSegLib.inference.uncertainty import DEFAULT_METHOD

            method = args.uncertainty_method or DEFAULT_METHOD
        prediction = predictor.predict(images, clinical=args.clinical, progress=bar, names=names, uncertainty=method)
    finally:
        bar.close()
    model_file = predictor.model_file
    timing = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in prediction.seconds.items())
    if label_out is not None:
        write_label_image(
            prediction.label_image, label_out, model_file.labels, model_file.label_terminology, overwrite=args.overwrite
        )
        print(f"wrote {label_out} ({prediction.device}; {timing})", file=sys.stderr)
    if seg_out is not None:
        name, version = _model_identity(args.model, model_file)
        write_dicom_seg(
            prediction.label_image,
            series,
            seg_out,
            model_file.labels,
            model_file.label_terminology,
            algorithm_name=name,
            algorithm_version=version,
            series_description=name,
            overwrite=args.overwrite,
        )
        print(f"wrote DICOM SEG {seg_out} (references series {series.series_uid}; {timing})", file=sys.stderr)
    if args.uncertainty is not None:
        from AttentionSegLib.io.image import write_image

        write_image(prediction.uncertainty, args.uncertainty, overwrite=args.overwrite)
        print(f"wrote uncertainty map {args.uncertainty} ({method}; 0 sure to 1 likely wrong)", file=sys.stderr)
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
        "output": str(args.out) if args.out else None,
        "dicom_seg": str(args.dicom_seg) if args.dicom_seg else None,
        "reference": str(args.ref) if args.ref else None,
        "uncertainty": str(args.uncertainty) if args.uncertainty else None,
        "device": prediction.device,
        "seconds": prediction.seconds,
        "labels": labels,
        "metrics": report,
    }
    write_text_atomic(args.json, json.dumps(json_safe(document), indent=2))
