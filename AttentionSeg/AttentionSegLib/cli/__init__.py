"""The ``attentionseg`` command line (also ``python -m AttentionSegLib``).

Exit codes: 0 success, 1 the command ran but found problems (``dataset validate``), 2 bad input
(one line on stderr, no traceback, no file changed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from AttentionSegLib import __version__
from AttentionSegLib.devices import DEVICE_CHOICES
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.config import add_arguments as add_training_arguments

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="per-label Dice, IoU, HD95, ASSD, NSD and volumes of a predicted label map against a reference",
        description="Compare a predicted label map with a reference label map (NIfTI, NRRD, MHA, PNG ...). "
        "Distances are in mm using the reference's spacing; HD95 follows MONAI's definition.",
    )
    parser.add_argument("prediction", type=Path, help="predicted label map file")
    parser.add_argument("reference", type=Path, help="reference label map file")
    parser.add_argument("--labels", type=Path, metavar="DATASET_JSON", help="name labels after this dataset definition")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write the per-label table as CSV")
    parser.add_argument(
        "--resample", action="store_true", help="resample the prediction (nearest neighbour) onto the reference grid"
    )
    parser.add_argument(
        "--nsd-tolerance", type=float, default=1.0, metavar="MM", help="NSD tolerance in mm (default 1)"
    )
    parser.set_defaults(run=_run_evaluate)


def _add_demo(commands: argparse._SubParsersAction) -> None:
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
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    parser.set_defaults(run=_run_demo)


def _add_inference_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto: CUDA when present")
    parser.add_argument("--tta", action="store_true", help="average over mirrored copies (slower, often better)")
    parser.add_argument(
        "--overlap", type=float, default=0.5, help="fraction of a window shared with its neighbours (default 0.5)"
    )
    parser.add_argument(
        "--keep-largest", action="store_true", help="keep only the largest connected component of each label"
    )


def _add_segment(commands: argparse._SubParsersAction) -> None:
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
        "--clinical", type=_json_value, metavar="JSON", help="clinical values: a JSON object by name, or a list"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--progress", action="store_true", help="print progress events (JSON lines) on stderr, for programs"
    )
    _add_inference_options(parser)
    parser.set_defaults(run=_run_segment)


def _add_split_options(parser: argparse.ArgumentParser, default: str, help_text: str) -> None:
    parser.add_argument("--split", default=default, help=help_text)
    parser.add_argument("--folds", type=int, default=5, help="number of folds for fold:K (default 5)")
    parser.add_argument("--split-seed", type=int, default=0, help="split seed for fold:K (default 0)")


def _add_evaluate_dataset(commands: argparse._SubParsersAction) -> None:
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
    _add_inference_options(parser)
    parser.set_defaults(run=_run_evaluate_dataset)


def _add_compare(commands: argparse._SubParsersAction) -> None:
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
    _add_inference_options(parser)
    parser.set_defaults(run=_run_compare)


def _add_dataset(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("dataset", help="inspect, validate and split dataset definitions (MSD or nnU-Net v2)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    info = actions.add_parser("info", help="what the definition declares and how many cases it lists")
    info.add_argument("dataset_json", type=Path)
    info.set_defaults(run=_run_dataset_info)
    validate = actions.add_parser(
        "validate",
        help="check every case; report all problems at once (exit 1 if any)",
        description="Checks missing and unreadable files, dimensionality, channel counts, shared geometry of "
        "channels and label, undeclared label values, duplicate case ids and clinical values.",
    )
    validate.add_argument("dataset_json", type=Path)
    validate.add_argument("--skip-label-values", action="store_true", help="do not read label maps for their values")
    validate.add_argument("--json", action="store_true", help="print the problems as JSON")
    validate.set_defaults(run=_run_dataset_validate)
    split = actions.add_parser("split", help="deterministic k-fold split (or a named split) of the annotated cases")
    split.add_argument("dataset_json", type=Path)
    split.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    split.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    split.add_argument("--split", default=None, help="one split only: all, test, fold:K or a named split")
    split.set_defaults(run=_run_dataset_split)


def _add_models(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "models",
        help="list the networks: dimensions, default patch, constraints, parameters, deep supervision, recipe",
        description="Every registered network with its paper, supported dimensions, default patch size (array "
        "order), what every patch axis must be a multiple of, the parameter count of its default configuration, "
        "whether it has deep supervision and clinical input, and its default training recipe; then the presets.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.set_defaults(run=_run_models)


def _add_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a network on a dataset definition; writes RUN_DIR/model.pt, checkpoints and progress.jsonl",
        description="Train a registered network (attentionseg models) on the annotated cases of a dataset "
        "definition, validating on a held-out fold. Unset recipe values come from the network's default recipe. "
        "RUN_DIR gets model.pt (the model file, updated at every new best validation Dice), checkpoints/last.pt "
        "and best.pt, progress.jsonl (one JSON event per line) and config.json. Under torchrun the run uses "
        "DistributedDataParallel.",
    )
    add_training_arguments(parser)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="read the settings from a config.json (a run folder's, or written by the Training module); "
        "flags given here override it",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--json", action="store_true", help="end by printing one JSON summary on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(run=_run_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attentionseg",
        description="AttentionSeg: attention-based medical image segmentation, metrics and datasets.",
    )
    parser.add_argument("--version", action="version", version=f"attentionseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_evaluate(commands)
    _add_demo(commands)
    _add_dataset(commands)
    _add_models(commands)
    _add_train(commands)
    _add_segment(commands)
    _add_evaluate_dataset(commands)
    _add_compare(commands)
    return parser


def _check_output_path(path: Path | None, inputs: list[Path]) -> None:
    if path is None:
        return
    if any(path.resolve() == p.resolve() for p in inputs if p.exists()):
        raise AttentionSegError(f"{path}: output would overwrite an input file")
    if not path.parent.resolve().is_dir():
        raise AttentionSegError(f"{path}: folder {path.parent} does not exist")


def _run_evaluate(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.evaluation.evaluate import evaluate_label_files
    from AttentionSegLib.evaluation.report import format_metrics_table, metrics_to_json, write_metrics_csv
    from AttentionSegLib.io.atomic import write_text_atomic

    inputs = [args.prediction, args.reference] + ([args.labels] if args.labels else [])
    for output in (args.json, args.csv):
        _check_output_path(output, inputs)
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


def _run_demo(args: argparse.Namespace) -> int:
    from AttentionSegLib.cli.demo import run_demo

    if args.minutes <= 0:
        raise AttentionSegError(f"--minutes must be positive, got {args.minutes}")
    run_demo(args.out, args.seed, minutes=args.minutes, device=args.device, echo=_print_training_event)
    return EXIT_OK


def _json_value(text: str):
    try:
        return json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None


class _ProgressBar:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.active = sys.stderr.isatty()

    def __call__(self, fraction: float, note: str = "") -> None:
        if self.active:
            done = int(30 * fraction)
            sys.stderr.write(f"\r{self.label} [{'#' * done}{'.' * (30 - done)}] {100 * fraction:3.0f}% {note}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.active:
            sys.stderr.write("\r" + " " * 90 + "\r")
            sys.stderr.flush()


def _predictor(path: Path, args: argparse.Namespace):
    from AttentionSegLib.inference.predictor import Predictor

    return Predictor(path, device=args.device, tta=args.tta, overlap=args.overlap, keep_largest=args.keep_largest)


def _check_new_output(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise AttentionSegError(f"{path}: file exists; use --overwrite to replace it")


def _run_segment(args: argparse.Namespace) -> int:
    from AttentionSegLib.evaluation.evaluate import read_label_image
    from AttentionSegLib.evaluation.metrics import evaluate_label_maps
    from AttentionSegLib.evaluation.report import format_metrics_table, json_safe
    from AttentionSegLib.io.atomic import write_text_atomic
    from AttentionSegLib.io.image import check_same_grid, image_suffix, read_image
    from AttentionSegLib.io.segmentation_file import write_label_image
    from AttentionSegLib.progress import event_line

    inputs = [*args.images, args.model] + ([args.ref] if args.ref else [])
    for output in (args.out, args.json):
        _check_output_path(output, inputs)
    if not image_suffix(args.out):
        raise AttentionSegError(f"{args.out}: unknown ending (use .nii.gz, .nrrd, .seg.nrrd, .mha or .png)")
    _check_new_output(args.out, args.overwrite)
    predictor = _predictor(args.model, args)
    images = [read_image(path) for path in args.images]
    reference = read_label_image(args.ref) if args.ref else None
    if reference is not None:
        check_same_grid(images[0], reference, str(args.images[0]), str(args.ref))
    bar = _ProgressBar("segmenting")
    if args.progress:

        def bar(fraction: float) -> None:
            print(event_line("progress", fraction=round(fraction, 4)), file=sys.stderr, flush=True)

        bar.close = lambda: None
    try:
        names = [str(path) for path in args.images]
        prediction = predictor.predict(images, clinical=args.clinical, progress=bar, names=names)
    finally:
        bar.close()
    write_label_image(prediction.label_image, args.out, predictor.model_file.labels, overwrite=args.overwrite)
    timing = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in prediction.seconds.items())
    print(f"wrote {args.out} ({prediction.device}; {timing})", file=sys.stderr)
    report = None
    if reference is not None:
        labels = {int(label["value"]): label["name"] for label in predictor.labels}
        report = evaluate_label_maps(
            prediction.label_image.array, reference.array, reference.spacing_array_order, labels
        )
        print(format_metrics_table(report))
    if args.json:
        document = {
            "model": str(args.model),
            "images": [str(p) for p in args.images],
            "output": str(args.out),
            "reference": str(args.ref) if args.ref else None,
            "device": prediction.device,
            "seconds": prediction.seconds,
            "labels": predictor.labels,
            "metrics": report,
        }
        write_text_atomic(args.json, json.dumps(json_safe(document), indent=2))
    return EXIT_OK


def _heldout_cases(predictor, model_path: Path, definition) -> list[str]:
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


def _run_evaluate_dataset(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.evaluation.batch import (
        dataset_cases,
        evaluate_model,
        format_dataset_table,
        load_case,
        write_dataset_csv,
    )
    from AttentionSegLib.evaluation.report import json_safe
    from AttentionSegLib.io.atomic import write_text_atomic

    for output in (args.json, args.csv):
        _check_output_path(output, [args.model_file, args.dataset_json])
    definition = load_dataset(args.dataset_json)
    predictor = _predictor(args.model_file, args)
    if args.split == "heldout":
        cases = _heldout_cases(predictor, args.model_file, definition)
    else:
        cases = dataset_cases(definition, args.split, args.folds, args.split_seed)
        _warn_trained_on(predictor, str(args.model_file), definition, cases)
    bar = _ProgressBar("evaluating")

    def on_case(done: int, total: int, row: dict) -> None:
        bar(done / total, f"{done}/{total} {row['case']}")

    try:
        report = evaluate_model(predictor, cases, lambda case_id: load_case(definition, case_id), on_case)
    finally:
        bar.close()
    print(f"{args.model_file} on {definition.name} ({args.split}: {len(cases)} cases)")
    print(format_dataset_table(report))
    document = {"model": str(args.model_file), "dataset": str(definition.path), "split": args.split, **report}
    if args.json:
        write_text_atomic(args.json, json.dumps(json_safe(document), indent=2))
    if args.csv:
        write_dataset_csv(report, args.csv)
    return EXIT_OK


def _run_compare(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.evaluation.batch import (
        EvaluationCase,
        compare_models,
        dataset_cases,
        format_comparison_table,
        load_case,
        write_comparison_chart,
        write_comparison_csv,
    )
    from AttentionSegLib.evaluation.evaluate import read_label_image
    from AttentionSegLib.evaluation.report import json_safe
    from AttentionSegLib.io.atomic import write_text_atomic
    from AttentionSegLib.io.image import check_same_grid, read_image

    if (args.image is None) == (args.dataset is None):
        raise AttentionSegError("give either --image (with --ref) or --dataset")
    if args.image is not None and args.ref is None:
        raise AttentionSegError("--image needs --ref (the reference label map to compare against)")
    outputs = [args.report / name for name in ("comparison.csv", "comparison.json", "dice.png")]
    if args.report.exists() and not args.report.is_dir():
        raise AttentionSegError(f"{args.report}: not a folder")
    for output in outputs:
        _check_new_output(output, args.overwrite)
    from AttentionSegLib.inference.model_store import model_display_names

    names = model_display_names(args.models)
    predictors = {name: _predictor(path, args) for name, path in zip(names, args.models)}
    if args.dataset is not None:
        definition = load_dataset(args.dataset)
        cases = dataset_cases(definition, args.split, args.folds, args.split_seed)
        for name, predictor in predictors.items():
            _warn_trained_on(predictor, name, definition, cases)

        def load(case_id: str) -> EvaluationCase:
            return load_case(definition, case_id)
    else:
        images = [read_image(path) for path in args.image]
        reference = read_label_image(args.ref)
        check_same_grid(images[0], reference, str(args.image[0]), str(args.ref))
        cases = [args.image[0].name]

        def load(case_id: str) -> EvaluationCase:
            return EvaluationCase(case_id, images, [], reference)

    bar = _ProgressBar("comparing")
    try:
        comparison = compare_models(
            predictors, cases, load, lambda name, done, total: bar(done / total, f"{done}/{total} {name}")
        )
    finally:
        bar.close()
    args.report.mkdir(parents=True, exist_ok=True)
    write_comparison_csv(comparison, outputs[0])
    document = {"models": {name: str(path) for name, path in zip(names, args.models)}, **comparison}
    write_text_atomic(outputs[1], json.dumps(json_safe(document), indent=2))
    write_comparison_chart(comparison, outputs[2])
    print(format_comparison_table(comparison))
    print(f"wrote {', '.join(str(p) for p in outputs)}", file=sys.stderr)
    return EXIT_OK


def _run_models(args: argparse.Namespace) -> int:
    from AttentionSegLib.evaluation.report import format_models_table
    from AttentionSegLib.models import describe_model, get_preset, list_models, list_presets

    models = [describe_model(name) for name in list_models()]
    presets = [get_preset(name) for name in list_presets()]
    if args.json:
        preset_rows = [
            {
                "name": p.name,
                "model": p.model,
                "spatial_dims": p.spatial_dims,
                "in_channels": p.in_channels,
                "out_channels": p.out_channels,
                "patch_size": list(p.patch_size),
                "description": p.description,
            }
            for p in presets
        ]
        print(json.dumps({"models": models, "presets": preset_rows}, indent=2))
    else:
        print(format_models_table(models, presets))
    return EXIT_OK


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _format(value, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def _print_training_event(event: dict) -> None:
    kind = event["event"]
    if kind == "start":
        line = (
            f"training {event['model']} on {event['dataset']}: {event['n_train']} train / {event['n_val']} "
            f"validation cases, patch {'x'.join(map(str, event['patch_size']))}, batch {event['batch_size']}, "
            f"device {event['device']}" + (f", resumed at epoch {event['start_epoch']}" if event["resumed"] else "")
        )
    elif kind == "epoch":
        line = (
            f"epoch {event['epoch']}/{event['epochs']}  loss {_format(event['loss'], '.4f')}  lr {event['lr']:.2e}  "
            f"{event['seconds']:.1f} s" + ("  (cut short by the time limit)" if event.get("truncated") else "")
        )
    elif kind == "validation":
        dice = "  ".join(
            f"{value}: {score:.3f}" if score is not None else f"{value}: -" for value, score in event["dice"].items()
        )
        mean = event["mean_dice"]
        line = f"  validation Dice {dice}  mean {mean:.4f}" if mean is not None else f"  validation Dice {dice}"
        line += "  (best)" if event["is_best"] else ""
    elif kind == "end":
        best = event["best_mean_dice"]
        line = (
            f"done ({event['reason']}): {event['epochs_done']} epochs in {event['elapsed_s']:.0f} s, best mean "
            f"Dice {best:.4f} at epoch {event['best_epoch']}"
            if best is not None
            else f"done ({event['reason']}): {event['epochs_done']} epochs"
        )
        if event["model_file"]:
            line += f"\nmodel file: {event['model_file']}"
    elif kind == "error":
        line = f"error: {event['message']}"
    else:
        return
    print(line, file=sys.stderr, flush=True)


def _run_train(args: argparse.Namespace) -> int:
    from AttentionSegLib.training.trainer import train

    config = TrainingConfig.from_arguments(args)
    try:
        summary = train(config, resume=args.resume, echo=None if args.quiet else _print_training_event)
    except AttentionSegError:
        raise
    except ValueError as error:  # a network refusing its configuration
        raise AttentionSegError(str(error)) from None
    except Exception as error:
        print(f"attentionseg: training failed: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    if args.json:
        print(json.dumps(summary, indent=2))
    return EXIT_OK


def _run_dataset_info(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import load_dataset

    print(json.dumps(load_dataset(args.dataset_json).summary(), indent=2))
    return EXIT_OK


def _run_dataset_validate(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import load_dataset, validate_dataset

    definition = load_dataset(args.dataset_json)
    problems = validate_dataset(definition, check_label_values=not args.skip_label_values)
    n_cases = len(definition.cases) + len(definition.test_cases)
    if args.json:
        print(
            json.dumps(
                {
                    "dataset": str(definition.path),
                    "n_cases": n_cases,
                    "problems": [
                        {"case": p.case_id, "file": str(p.file) if p.file else None, "message": p.message}
                        for p in problems
                    ],
                },
                indent=2,
            )
        )
    else:
        for problem in problems:
            print(problem)
        print(f"{definition.path}: {n_cases} cases, {len(problems)} problem(s)")
    return EXIT_PROBLEMS if problems else EXIT_OK


def _run_dataset_split(args: argparse.Namespace) -> int:
    from AttentionSegLib.data.dataset import k_fold_split, load_dataset, resolve_split

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


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except AttentionSegError as error:
        print(f"attentionseg: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("attentionseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
