"""``attentionseg dataset info | validate | split``: dataset definitions (MSD or nnU-Net v2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from AttentionSegLib.cli.common import EXIT_OK, EXIT_PROBLEMS
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
