"""``attentionseg update-model`` and ``attentionseg versions``: a model learns from the corrections
saved into a dataset (a fine-tune kept as its next version), and its versions are listed or one is
made current again (:mod:`~AttentionSegLib.inference.model_versions`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from AttentionSegLib.cli.common import EXIT_OK
from AttentionSegLib.devices import DEVICE_CHOICES

__all__ = ["add_update_parser", "add_versions_parser"]


def add_update_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "update-model",
        help="fine-tune a model on its dataset with the corrections saved since, as its next version",
        description="Fine-tunes MODEL_FILE's current version (attentionseg train --init) on DATASET_JSON, whose "
        "cases the model has not seen (corrections saved with the module or the web page) join the ones it "
        "knows, which are replayed so that it does not forget. The result becomes the model's next version and "
        "the current MODEL_FILE; every version stays in MODELS/versions/NAME (attentionseg versions lists them, "
        "--rollback returns to one).",
    )
    parser.add_argument("model", type=Path, metavar="MODEL_FILE")
    parser.add_argument("dataset_json", type=Path, metavar="DATASET_JSON")
    parser.add_argument("--minutes", type=float, default=5.0, help="time for the fine-tune (default 5)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    parser.add_argument("--out", type=Path, metavar="RUN_DIR", help="the fine-tune's run folder (default: a new one)")
    parser.set_defaults(run=run_update)


def add_versions_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "versions",
        help="list a model's versions, or make an earlier one current again (--rollback)",
        description="Lists the versions of MODEL_FILE (each update made by update-model, the base it started "
        "from and the cases it added), the current one marked; --rollback VERSION makes that version current.",
    )
    parser.add_argument("model", type=Path, metavar="MODEL_FILE")
    parser.add_argument("--rollback", type=int, metavar="VERSION", help="make this version current again")
    parser.add_argument("--json", action="store_true", help="print the versions as JSON")
    parser.set_defaults(run=run_versions)


def run_update(args: argparse.Namespace) -> int:
    from AttentionSegLib.cli.train import TrainingDisplay
    from AttentionSegLib.training.update_model import update_model

    display = TrainingDisplay()
    try:
        version = update_model(args.model, args.dataset_json, args.minutes, args.device, args.out, echo=display.event)
    finally:
        display.close()
    print(
        f"{args.model}: version {version.version} (from version {version.base_version}, "
        f"{len(version.cases_added)} case(s) added) is now current",
        file=sys.stderr,
    )
    return EXIT_OK


def run_versions(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from AttentionSegLib.inference.model_versions import list_versions, rollback

    if args.rollback is not None:
        chosen = rollback(args.model, args.rollback)
        print(f"{args.model}: version {chosen.version} is current again", file=sys.stderr)
    versions = list_versions(args.model)
    if args.json:
        print(json.dumps([asdict(v) for v in versions], indent=2))
        return EXIT_OK
    for v in versions:
        base = f"from v{v.base_version}" if v.base_version else "original"
        added = f"{len(v.cases_added)} case(s) added" if v.cases_added else ""
        print(f"{'*' if v.current else ' '} v{v.version:<3} {v.date or '-':<25} {base:<10} {added}")
    return EXIT_OK
