"""``attentionseg evaluate-dataset`` (one model over a dataset's cases) and ``attentionseg compare``
(several models on the same cases). The work is :mod:`AttentionSegLib.evaluation.batch`'s; this
module reads the arguments, picks the cases and writes the reports."""

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
    predictor_from_arguments,
)
from AttentionSegLib.cli.progress_bar import ProgressBar
from AttentionSegLib.errors import AttentionSegError

__all__ = ["add_evaluate_dataset_parser", "add_compare_parser", "heldout_cases"]

_COMPARE_REPORT_FILES = ("comparison.csv", "comparison.json", "dice.png")


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
    parser.add_argument("model_file", type=Path, metavar="MODEL_FILE")
    parser.add_argument("dataset_json", type=Path, metavar="DATASET_JSON")
    _add_split_options(parser, "heldout", "heldout (default), all, test, fold:K or a named split of the dataset")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write one row per case and label as CSV")
    add_inference_options(parser)
    parser.set_defaults(run=run_evaluate_dataset)


def add_compare_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare",
        help="run several model files on the same cases; table, CSV and bar chart of Dice, HD95, ASSD, seconds",
        description="Either --image (one per channel) with --ref, or --dataset with --split. Writes "
        "comparison.csv, comparison.json and dice.png into --report and prints the model x label table.",
    )
    parser.add_argument("--models", type=Path, nargs="+", required=True, metavar="MODEL_FILE")
    parser.add_argument("--image", type=Path, nargs="+", metavar="IMAGE", help="image file(s) of one case")
    parser.add_argument("--ref", type=Path, metavar="REF", help="reference label map of --image")
    parser.add_argument("--dataset", type=Path, metavar="DATASET_JSON", help="compare on a dataset's cases")
    _add_split_options(parser, "all", "all (default), test, fold:K or a named split")
    parser.add_argument("--report", type=Path, required=True, metavar="DIR", help="folder for the report files")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier report files in DIR")
    add_inference_options(parser)
    parser.set_defaults(run=run_compare)


def heldout_cases(predictor, model_path: Path, definition) -> list[str]:
    held_out = predictor.model_file.training.get("val_cases") or []
    if not held_out:
        raise AttentionSegError(f"{model_path}: the model file lists no held-out cases; use --split all|fold:K")
    known = {case.case_id for case in definition.cases}
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
        check_output_path(output, [args.model_file, args.dataset_json])
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
        report = evaluate_model(predictor, cases, lambda case_id: load_case(definition, case_id), on_case)
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
    from AttentionSegLib.evaluation.evaluate import read_label_image
    from AttentionSegLib.io.image import check_same_grid, read_image

    if args.dataset is not None:
        definition = load_dataset(args.dataset)
        cases = dataset_cases(definition, args.split, args.folds, args.split_seed)
        for name, predictor in predictors.items():
            _warn_trained_on(predictor, name, definition, cases)
        return cases, lambda case_id: load_case(definition, case_id)
    images = [read_image(path) for path in args.image]
    reference = read_label_image(args.ref)
    check_same_grid(images[0], reference, str(args.image[0]), str(args.ref))
    return [args.image[0].name], lambda case_id: EvaluationCase(case_id, images, [], reference)


def run_compare(args: argparse.Namespace) -> int:
    from AttentionSegLib.evaluation.batch import (
        compare_models,
        format_comparison_table,
        write_comparison_chart,
        write_comparison_csv,
    )
    from AttentionSegLib.inference.model_store import model_display_names

    outputs = _check_compare_arguments(args)
    names = model_display_names(args.models)
    predictors = {name: predictor_from_arguments(path, args) for name, path in zip(names, args.models)}
    cases, load = _compare_cases(args, predictors)
    bar = ProgressBar("comparing")
    try:
        comparison = compare_models(
            predictors, cases, load, lambda name, done, total: bar(done / total, f"{done}/{total} {name}")
        )
    finally:
        bar.close()
    args.report.mkdir(parents=True, exist_ok=True)
    write_comparison_csv(comparison, outputs[0])
    _write_json(outputs[1], {"models": {name: str(path) for name, path in zip(names, args.models)}, **comparison})
    write_comparison_chart(comparison, outputs[2])
    print(format_comparison_table(comparison))
    print(f"wrote {', '.join(str(p) for p in outputs)}", file=sys.stderr)
    return EXIT_OK
