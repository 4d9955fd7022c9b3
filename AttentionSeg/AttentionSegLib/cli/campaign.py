"""``attentionseg campaign``: the annotation campaign benchmark (:mod:`AttentionSegLib.evaluation.campaign`):
a robot reader corrects unseen cases in a random and/or ranked order, the automatic model is updated
every few cases, and its test Dice is reported against the reader's cumulative clicks."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from AttentionSegLib.cli.common import EXIT_OK, check_output_path
from AttentionSegLib.devices import DEVICE_CHOICES

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "campaign",
        help="benchmark the learning loop: a robot reader corrects cases, the model is updated, clicks vs Dice",
        description="A robot reader takes cases of DATASET_JSON that MODEL_FILE (automatic) has not seen, in a "
        "random or a ranked order (attentionseg dataset rank, re-ranked after each update), corrects the model's "
        "segmentation of each with INTERACTIVE_MODEL (clicks at the largest error until Dice >= --target or "
        "--max-clicks per label) and saves it; every --update-every cases the model is updated from the "
        "corrections (attentionseg update-model). Reports the model's mean Dice on --test held-out cases against "
        "the cumulative clicks, per order. Everything is written under --out; the dataset is not changed.",
    )
    parser.add_argument("model", type=Path, metavar="MODEL_FILE")
    parser.add_argument("interactive_model", type=Path, metavar="INTERACTIVE_MODEL")
    parser.add_argument("dataset_json", type=Path, metavar="DATASET_JSON")
    parser.add_argument("--out", type=Path, required=True, metavar="WORK_DIR", help="a new folder for the runs")
    parser.add_argument("--order", choices=("random", "ranked", "both"), default="both")
    parser.add_argument("--cases", type=int, default=20, help="cases the reader corrects (default 20)")
    parser.add_argument("--test", type=int, default=20, help="held-out cases the Dice is measured on (default 20)")
    parser.add_argument("--update-every", type=int, default=5, metavar="M", help="update every M cases (default 5)")
    parser.add_argument("--update-minutes", type=float, default=1.0, help="minutes per update (default 1)")
    parser.add_argument("--max-clicks", type=int, default=10, help="clicks per label at most (default 10)")
    parser.add_argument("--target", type=float, default=0.90, help="the Dice a label is corrected to (default 0.90)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="cpu")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every point of every order as JSON")
    parser.set_defaults(run=run)


def clicks_to_reach(points, dice: float) -> int | None:
    """The cumulative clicks at the first point whose test Dice reaches ``dice`` (None: never)."""
    return next((p.clicks for p in points if p.test_dice >= dice), None)


def run(args: argparse.Namespace) -> int:
    from AttentionSegLib.errors import AttentionSegError
    from AttentionSegLib.evaluation.campaign import CampaignSettings, run_campaign

    if args.cases < 1 or args.update_every < 1 or args.max_clicks < 1 or args.test < 1:
        raise AttentionSegError("--cases, --test, --update-every and --max-clicks must be at least 1")
    if args.json is not None:
        check_output_path(args.json, [args.model, args.interactive_model, args.dataset_json], overwrite=True)
    orders = ("random", "ranked") if args.order == "both" else (args.order,)
    results = {}
    for order in orders:
        settings = CampaignSettings(
            order, args.cases, args.update_every, args.update_minutes, args.max_clicks, args.target, args.seed,
            args.device,
        )  # fmt: skip
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        results[order] = run_campaign(
            args.model, args.interactive_model, args.dataset_json, args.out / order, settings, args.test, log
        )
    print("| order | cases corrected | cumulative clicks | test Dice | update time (s) |")
    print("|---|---|---|---|---|")
    for order, points in results.items():
        for point in points:
            print(f"| {order} | {point.cases} | {point.clicks} | {point.test_dice:.4f} | {point.update_seconds:.0f} |")
    for dice in (0.80, 0.85):
        reached = {order: clicks_to_reach(points, dice) for order, points in results.items()}
        print(
            f"clicks to reach test Dice {dice:.2f}: "
            + ", ".join(f"{o} {c if c is not None else 'never'}" for o, c in reached.items())
        )
    if args.json is not None:
        from AttentionSegLib.io.atomic import write_text_atomic

        document = {order: [asdict(p) for p in points] for order, points in results.items()}
        write_text_atomic(args.json, json.dumps(document, indent=2))
    return EXIT_OK
