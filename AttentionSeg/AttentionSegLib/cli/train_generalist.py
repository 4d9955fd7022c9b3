"""``attentionseg train-generalist``: the promptable generalist from a dataset collection.

The shipped model's card gives the exact command; ``--resume`` goes on with a stopped run (a
session's time limit, Ctrl-C) exactly where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from AttentionSegLib.cli.common import EXIT_OK

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train-generalist",
        help="train the class-agnostic promptable model on a collection of datasets (the shipped generalist)",
        description="Train one promptable network (the object under points, boxes, scribbles and lassos) on every "
        "structure of a dataset collection (a JSON file naming datasets, the labels to use and their licences; "
        "AttentionSeg/Resources/Models/promptable-generalist.collection.json is the shipped one). RUN_DIR gets "
        "model.pt (rewritten at every checkpoint), checkpoints/last.pt, config.json and log.jsonl.",
    )
    parser.add_argument("collection", type=Path, help="the collection file (JSON)")
    parser.add_argument("--data-root", type=Path, required=True, help="the folder the collection's paths start from")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="the run folder (new, or --resume)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps of the whole run (default 4000)")
    parser.add_argument("--minutes", type=float, default=None, help="stop this invocation after this long (resumable)")
    parser.add_argument("--leave-out", action="append", default=[], metavar="NAME", help="leave a dataset out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--patch", type=int, default=64, help="the window, voxels per axis (a multiple of 16)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes drawing samples and simulating the user while the network trains (a GPU needs them; "
        "the results do not depend on it)",
    )
    parser.add_argument(
        "--init", type=Path, default=None, metavar="MODEL", help="start from this model file's weights (same network)"
    )
    parser.add_argument("--resume", action="store_true", help="go on with the run in RUN_DIR from its checkpoint")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from AttentionSegLib.training.promptable.trainer import PromptableConfig, train_promptable

    config = PromptableConfig(
        collection=str(args.collection),
        data_root=str(args.data_root),
        run_dir=str(args.out),
        minutes=args.minutes,
        leave_out=list(args.leave_out),
        seed=args.seed,
        device=args.device,
        patch=args.patch,
        batch_size=args.batch_size,
        workers=args.workers,
        init=str(args.init) if args.init else None,
    )
    if args.steps is not None:
        config.steps = args.steps
    elif args.resume:
        config.steps = 0  # keep the run's own
    train_promptable(config, resume=args.resume, log=lambda line: print(line, file=sys.stderr, flush=True))
    return EXIT_OK
