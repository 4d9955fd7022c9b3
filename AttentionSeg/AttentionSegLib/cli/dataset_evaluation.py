"""``attentionseg evaluate-dataset`` (one model over a dataset's cases) and ``attentionseg compare``
(several models on the same cases). The work is :mod:`AttentionSegLib.evaluation.batch`'s; this
module reads the arguments, picks the cases and writes the reports."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from AttentionSegLib.cli.common import (
    EXIT_OK,
    add_inference_options,
    check_new_output,
    check_output_path,
    inference_options,
    predictor_from_arguments,
)
from AttentionSegLib.cli.progress_bar import ProgressBar
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_source import model_source

__all__ = ["add_evaluate_dataset_parser", "add_compare_parser", "heldout_cases"]

WORST_CASES_SHOWN = 3  # per model, in report.html
_CASE_MAP_FILES = (
    "consensus_majority.seg.nrrd",
    "consensus_staple.seg.nrrd",
    "agreement.seg.nrrd",
    "disagreement.json",
    "consensus_metrics.json",
)
_COMPARE_REPORT_FILES = ("comparison.csv", "comparison.json", "dice.png", "cases.csv", "report.html")


def _add_split_options(parser: argparse.ArgumentParser, default: str, help_text: str) -> None:
    parser.add_argument("--split", default=default, help=help_text)
    parser.add_argument("--folds", type=int, default=5, help="number of folds for fold:K (default 5)")
    parser.add_argument("--split-seed", type=int, default=0, help="split seed for fold:K (default 0)")


def add_evaluate_dataset_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate-dataset",
        help="run a model file over a dataset's cases: per case and per label metrics plus means",
        description="Segments every case of a split and compares it with the case's reference label map. "
        "--split heldout (default) takes the cases the model file says were held out of its training.",
    )
    parser.add_argument(
        "model_file",
        type=model_source,
        metavar="MODEL",
        help="model file, or a server's model http(s)://HOST:PORT/models/NAME",
    )
    parser.add_argument("dataset_json", type=Path, metavar="DATASET_JSON")
    _add_split_options(parser, "heldout", "heldout (default), all, test, fold:K or a named split of the dataset")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write one row per case and label as CSV")
    parser.add_argument("--overwrite", action="store_true", help="replace report files that exist")
    parser.add_argument(
        "--predictions",
        type=Path,
        metavar="DIR",
        help="keep each case's label map and metrics in DIR; a rerun with the same DIR resumes where it stopped",
    )
    parser.add_argument("--cluster", metavar="ADDRESS", help="spread the cases over a Ray cluster (HOST:6379 or auto)")
    add_inference_options(parser)
    parser.set_defaults(run=run_evaluate_dataset)


def add_compare_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare",
        help="run several model files on the same cases; means, paired statistics, ranking and a report page",
        description="Either --image (one per channel) with --ref, or --dataset with --split. Writes into "
        "--report: comparison.csv (means per model and label), cases.csv (every case, label and model: Dice, "
        "HD95, ASSD, NSD), comparison.json (all of it, with the paired statistics: bootstrap 95%% intervals, "
        "Wilcoxon p-values with Holm's correction, wins, and the ranking with its bootstrap stability), "
        "dice.png and report.html (one self-contained page: box plots, statistics, ranking, worst cases), and "
        "prints the model x label table.",
    )
    parser.add_argument(
        "--models",
        type=model_source,
        nargs="+",
        required=True,
        metavar="MODEL",
        help="model files or server model URLs",
    )
    parser.add_argument(
        "--image", type=Path, nargs="+", metavar="IMAGE", help="image file(s) or DICOM series folder of one case"
    )
    parser.add_argument("--series", metavar="UID", help="Series Instance UID, when a DICOM folder holds several")
    parser.add_argument("--ref", type=Path, metavar="REF", help="reference label map or DICOM SEG of --image")
    parser.add_argument("--dataset", type=Path, metavar="DATASET_JSON", help="compare on a dataset's cases")
    _add_split_options(parser, "all", "all (default), test, fold:K or a named split")
    parser.add_argument("--report", type=Path, required=True, metavar="DIR", help="folder for the report files")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier report files in DIR")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0): same seed, same numbers")
    add_inference_options(parser)
    parser.set_defaults(run=run_compare)


def heldout_cases(predictor, model_path: Path, definition) -> list[str]:
    training = predictor.model_file.training
    known = {case.case_id for case in definition.cases}
    if training.get("kind") == "promptable-generalist":
        # The generalist holds cases out per dataset of its collection: the one of this dataset.
        for dataset in training.get("datasets", []):
            ids = dataset.get("held_out_cases") or []
            if ids and set(ids) <= known:
                return list(ids)
        raise AttentionSegError(
            f"{model_path}: the generalist holds out no case of {definition.path}; for a dataset it never saw "
            "use --split all"
        )
    held_out = training.get("val_cases") or []
    if not held_out:
        raise AttentionSegError(f"{model_path}: the model file lists no held-out cases; use --split all|fold:K")
    missing = [case_id for case_id in held_out if case_id not in known]
    if missing:
        raise AttentionSegError(
            f"{model_path}: {len(missing)} of its held-out cases (e.g. {missing[0]}) are not annotated cases of "
            f"{definition.path}; was it trained on another dataset? Use --split"
        )
    return list(held_out)


def _warn_trained_on(predictor, name: str, definition, cases: list[str]) -> None:
    training = predictor.model_file.training
    if training.get("dataset") != definition.name:
        return
    seen = set(training.get("train_cases") or []) & set(cases)
    if seen:
        print(
            f"note: {name} was trained on {len(seen)} of these {len(cases)} cases; their metrics are optimistic",
            file=sys.stderr,
        )


def _write_json(path: Path, document: dict) -> None:
    from AttentionSegLib.evaluation.report import json_safe
    from AttentionSegLib.io.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(json_safe(document), indent=2))


def run_evaluate_dataset(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.evaluation.batch import (
        dataset_cases,
        evaluate_model,
        format_dataset_table,
        load_case,
        write_dataset_csv,
    )

    for output in (args.json, args.csv):
        check_output_path(output, [args.model_file, args.dataset_json], args.overwrite)
    definition = load_dataset(args.dataset_json)
    predictor = predictor_from_arguments(args.model_file, args)
    if args.split == "heldout":
        cases = heldout_cases(predictor, args.model_file, definition)
    else:
        cases = dataset_cases(definition, args.split, args.folds, args.split_seed)
        _warn_trained_on(predictor, str(args.model_file), definition, cases)
    bar = ProgressBar("evaluating")

    def on_case(done: int, total: int, row: dict) -> None:
        bar(done / total, f"{done}/{total} {row['case']}")

    try:
        if args.predictions is None and args.cluster is None:
            report = evaluate_model(predictor, cases, lambda case_id: load_case(definition, case_id), on_case)
        else:
            report = _evaluate_cohort(args, predictor, cases, on_case)
    finally:
        bar.close()
    print(f"{args.model_file} on {definition.name} ({args.split}: {len(cases)} cases)")
    print(format_dataset_table(report))
    if args.json:
        document = {"model": str(args.model_file), "dataset": str(definition.path), "split": args.split, **report}
        _write_json(args.json, document)
    if args.csv:
        write_dataset_csv(report, args.csv)
    return EXIT_OK


def _evaluate_cohort(args: argparse.Namespace, predictor, cases: list[str], on_case) -> dict:
    """The evaluation case by case into ``--predictions`` (resumable), here or on ``--cluster``."""
    import tempfile

    from AttentionSegLib.evaluation.batch import model_report
    from AttentionSegLib.serve.cohort import CohortJob, run_cohort

    options = inference_options(args)
    with tempfile.TemporaryDirectory(prefix="attentionseg-cohort-") as scratch:
        folder = args.predictions or scratch
        job = CohortJob(args.model_file, args.dataset_json, cases, folder, measure=True, options=options)
        run = run_cohort(job, args.cluster, lambda done, total, case_id, _: on_case(done, total, {"case": case_id}))
    return model_report(run.rows, predictor.model_file.label_names)


def _check_compare_arguments(args: argparse.Namespace) -> list[Path]:
    """The report files to write, after checking the arguments."""
    if (args.image is None) == (args.dataset is None):
        raise AttentionSegError("give either --image (with --ref) or --dataset")
    if args.image is not None and args.ref is None:
        raise AttentionSegError("--image needs --ref (the reference label map to compare against)")
    outputs = [args.report / name for name in _COMPARE_REPORT_FILES]
    if args.report.exists() and not args.report.is_dir():
        raise AttentionSegError(f"{args.report}: not a folder")
    for output in outputs:
        check_new_output(output, args.overwrite)
    return outputs


def _compare_cases(args: argparse.Namespace, predictors: dict):
    """The case ids to compare on and the function that reads a case."""
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.evaluation.batch import EvaluationCase, dataset_cases, load_case
    from AttentionSegLib.io.image import check_same_grid, read_image
    from AttentionSegLib.io.label_map import read_label_image

    if args.dataset is not None:
        definition = load_dataset(args.dataset)
        cases = dataset_cases(definition, args.split, args.folds, args.split_seed)
        for name, predictor in predictors.items():
            _warn_trained_on(predictor, name, definition, cases)
        return cases, lambda case_id: load_case(definition, case_id)
    images = [read_image(path, args.series) for path in args.image]
    grid = images[0].channel(0)  # the first image's grid, one channel
    names = next(iter(predictors.values())).model_file.label_names
    reference = read_label_image(args.ref, onto=grid, label_names=names)
    check_same_grid(images[0], reference, str(args.image[0]), str(args.ref))
    return [args.image[0].name], lambda case_id: EvaluationCase(case_id, images, [], reference)


def write_case_maps(predictions: dict, labels: dict, colors: dict, folder: Path) -> list[Path]:
    """One case's maps, on its grid: the consensus segmentations (majority vote, STAPLE) and their
    metrics against the reference, the agreement map, each model's errors per label (.seg.nrrd,
    named segments) and the disagreement regions with their centres in RAS (JSON). The maps are
    :func:`~AttentionSegLib.evaluation.comparison_maps.compute_comparison_maps`'s. Returns the
    files written."""
    from AttentionSegLib.evaluation.comparison_maps import compute_comparison_maps
    from AttentionSegLib.evaluation.consensus import ERROR_KINDS
    from AttentionSegLib.io.segmentation_file import write_label_image

    case = next(iter(predictions.values()))[0]
    grid = case.reference
    arrays = {name: prediction for name, (_, prediction) in predictions.items()}
    # No file lists the largest error regions (Slicer's table does): worst_errors=0 skips their search.
    maps = compute_comparison_maps(grid, arrays, labels, grid.array, worst_errors=0, measure_consensus=True)
    named = [{"value": v, "name": n, "color": list(colors.get(v, (0.5, 0.5, 0.5)))} for v, n in labels.items() if v]
    written = []

    def write(array, name: str, segments) -> None:  # existing files were refused before the run
        image = grid.with_array(array.astype(np.uint16), has_channels=False)
        written.append(write_label_image(image, folder / name, segments, overwrite=True))

    if maps.consensus:
        write(maps.consensus["majority"], "consensus_majority.seg.nrrd", named)
        write(maps.consensus["staple"], "consensus_staple.seg.nrrd", named)
        path = folder / "consensus_metrics.json"  # the consensus measured like any model
        _write_json(path, maps.consensus_metrics)
        written.append(path)
        agreement = [{"value": n, "name": f"{n} of {len(arrays)} models"} for n in range(1, len(arrays) + 1)]
        write(maps.agreement, "agreement.seg.nrrd", agreement)
        path = folder / "disagreement.json"
        _write_json(
            path, {"regions": maps.disagreements, "note": "largest first; index in array order (k, j, i), ras in mm"}
        )
        written.append(path)
    for name in arrays:
        for _, label, codes in maps.error_maps(name):
            kinds = [{"value": c, "name": f"{label} {k}", "color": list(rgb)} for c, (k, rgb) in ERROR_KINDS.items()]
            write(codes, error_file_name(name, label), kinds)
    return written


def error_file_name(model: str, label: str) -> str:
    """One model's errors on one label (one file per label: a voxel can be one label's leak and
    another's miss)."""
    return f"errors_{sanitised_file_name(model)}_{sanitised_file_name(label)}.seg.nrrd"


def sanitised_file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_compare(args: argparse.Namespace) -> int:
    from AttentionSegLib.evaluation.batch import (
        compare_models,
        format_comparison_table,
        write_case_csv,
        write_comparison_chart,
        write_comparison_csv,
    )
    from AttentionSegLib.evaluation.comparison_report import strip_thumbnails, write_report
    from AttentionSegLib.evaluation.statistics import comparison_statistics
    from AttentionSegLib.inference.model_store import model_display_names

    outputs = _check_compare_arguments(args)
    names = model_display_names(args.models)
    predictors = {name: predictor_from_arguments(path, args) for name, path in zip(names, args.models)}
    if args.image is not None:  # the single case's maps: checked before anything runs
        labels = next(iter(predictors.values())).model_file.label_names
        errors = [error_file_name(name, label) for name in names for value, label in labels.items() if value]
        for name in [*_CASE_MAP_FILES, *errors]:
            check_new_output(args.report / name, args.overwrite)
    cases, load = _compare_cases(args, predictors)
    predictions: dict = {}  # one case (--image): its maps are written too

    def keep(name: str, case, prediction) -> None:
        if args.image is not None:
            predictions[name] = (case, prediction)

    bar = ProgressBar("comparing")
    try:
        comparison = compare_models(
            predictors,
            cases,
            load,
            lambda name, done, total: bar(done / total, f"{done}/{total} {name}"),
            keep_worst=WORST_CASES_SHOWN,
            on_prediction=keep,
        )
    finally:
        bar.close()
    started = time.perf_counter()
    statistics = comparison_statistics(comparison, seed=args.seed)
    comparison["seconds"]["statistics"] = time.perf_counter() - started
    args.report.mkdir(parents=True, exist_ok=True)
    write_comparison_csv(comparison, outputs[0])
    document = {"models": {name: str(path) for name, path in zip(names, args.models)}, **strip_thumbnails(comparison)}
    _write_json(outputs[1], {**document, "statistics": statistics})
    write_comparison_chart(comparison, outputs[2])
    write_case_csv(comparison, outputs[3])
    started = time.perf_counter()
    write_report(comparison, statistics, outputs[4])
    if predictions:
        first = next(iter(predictors.values())).model_file
        outputs += write_case_maps(predictions, first.label_names, first.label_colors, args.report)
    comparison["seconds"]["report"] = time.perf_counter() - started
    print(format_comparison_table(comparison))
    seconds = comparison["seconds"]
    added = seconds["error_maps"] + seconds["statistics"]
    print(
        f"time: inference and metrics {seconds['inference']:.1f} s, error maps {seconds['error_maps']:.2f} s, "
        f"statistics {seconds['statistics']:.2f} s ({added / max(seconds['inference'], 1e-9):.1%} of the inference), "
        f"report page {seconds['report']:.2f} s",
        file=sys.stderr,
    )
    print(f"wrote {', '.join(str(p) for p in outputs)}", file=sys.stderr)
    return EXIT_OK
