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
from AttentionSegLib.models.spec import LOSSES, OPTIMIZERS, SCHEDULES

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
        help="make a phantom reference/prediction pair and evaluate it (no downloads)",
        description="Writes a synthetic anisotropic multi-label reference, a perturbed prediction, a dataset.json "
        "naming the labels, then evaluates the pair and writes metrics.csv and metrics.json.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("attentionseg-demo"), help="output folder (default ./attentionseg-demo)"
    )
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    parser.set_defaults(run=_run_demo)


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
    parser.add_argument("dataset_json", type=Path, metavar="DATASET_JSON")
    parser.add_argument("--model", required=True, help="network name (attentionseg models)")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder (new, or --resume)")
    parser.add_argument("--epochs", type=int, help="maximum epochs (default: the recipe's)")
    parser.add_argument("--time-limit", type=float, metavar="MINUTES", help="stop before this wall-clock budget")
    parser.add_argument("--patch", type=int, nargs="+", metavar="N", help="patch size in array order (z y x | y x)")
    parser.add_argument("--batch", type=int, help="batch size")
    parser.add_argument("--lr", type=float, help="base learning rate")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--loss", choices=LOSSES)
    parser.add_argument("--optimizer", choices=OPTIMIZERS)
    parser.add_argument("--schedule", choices=SCHEDULES)
    parser.add_argument("--fold", type=int, default=0, help="validation fold (default 0)")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation/sampling/augmentation seed (default 0)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    parser.add_argument("--slice-wise", action="store_true", help="train a 2D network on the slices of a 3D dataset")
    parser.add_argument("--iterations", type=int, metavar="N", help="batches per epoch (default: one pass, >= 10)")
    parser.add_argument("--val-every", type=int, default=1, metavar="N", help="validate every N epochs (default 1)")
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes (default 0)")
    parser.add_argument("--compact", action="store_true", help="the network's small configuration (demos, tests)")
    parser.add_argument(
        "--options",
        type=_json_object,
        default={},
        metavar="JSON",
        help="network constructor options as a JSON object, e.g. '{\"channels\": [16, 32, 64]}'",
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
    return parser


def _check_output_path(path: Path | None, inputs: list[Path]) -> None:
    if path is None:
        return
    if any(path.resolve() == p.resolve() for p in inputs if p.exists()):
        raise AttentionSegError(f"{path}: output would overwrite an input file")
    if not path.parent.resolve().is_dir():
        raise AttentionSegError(f"{path}: folder {path.parent} does not exist")


def _run_evaluate(args: argparse.Namespace) -> int:
    from AttentionSegLib.dataset import load_dataset
    from AttentionSegLib.evaluation import evaluate_label_files
    from AttentionSegLib.report import format_metrics_table, metrics_to_json, write_metrics_csv, write_text_atomic

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
    from AttentionSegLib.demo import run_demo

    run_demo(args.out, args.seed)
    return EXIT_OK


def _run_models(args: argparse.Namespace) -> int:
    from AttentionSegLib.models import describe_model, get_preset, list_models, list_presets
    from AttentionSegLib.report import format_models_table

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
            f"epoch {event['epoch']}/{event['epochs']}  loss {event['loss']:.4f}  lr {event['lr']:.2e}  "
            f"{event['seconds']:.1f} s"
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
    from AttentionSegLib.training import TrainingConfig, train

    config = TrainingConfig(
        dataset=str(args.dataset_json),
        model=args.model,
        run_dir=str(args.out),
        epochs=args.epochs,
        time_limit_min=args.time_limit,
        patch_size=args.patch,
        batch_size=args.batch,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        loss=args.loss,
        optimizer=args.optimizer,
        schedule=args.schedule,
        fold=args.fold,
        n_folds=args.folds,
        seed=args.seed,
        device=args.device,
        slice_wise=args.slice_wise,
        iterations_per_epoch=args.iterations,
        val_every=args.val_every,
        workers=args.workers,
        compact=args.compact,
        options=args.options,
    )
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
    from AttentionSegLib.dataset import load_dataset

    print(json.dumps(load_dataset(args.dataset_json).summary(), indent=2))
    return EXIT_OK


def _run_dataset_validate(args: argparse.Namespace) -> int:
    from AttentionSegLib.dataset import load_dataset, validate_dataset

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
    from AttentionSegLib.dataset import k_fold_split, load_dataset, resolve_split

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
