#!/usr/bin/env python3
"""Fine-tuning against training from scratch, and forgetting, on one dataset (hippocampus):

- start: a UNet trained ``--minutes`` on ``--first`` cases;
- scratch: the same budget from scratch on ``--more`` other cases;
- fine-tune: start, then ``--minutes`` more on those other cases (``attentionseg train --init``);
- update: start, then ``--minutes`` more on the first and the other cases together (what
  ``attentionseg update-model`` does: the old cases replayed).

Mean Dice (over labels, then cases) on ``--test`` held-out cases for each, and on the start's own
cases for start, fine-tune and update (a drop there is forgetting). Subsets are dataset.json files
with absolute paths in OUT_DIR (outside the repository); runs go there too.

    python bench/bench_fine_tune.py ../shared/data/hippocampus/dataset.json OUT_DIR [--minutes 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "AttentionSeg"))

from AttentionSegLib.data.dataset import load_dataset, write_subset  # noqa: E402
from AttentionSegLib.evaluation.campaign import mean_dice  # noqa: E402
from AttentionSegLib.training.config import TrainingConfig  # noqa: E402
from AttentionSegLib.training.trainer import train  # noqa: E402


def mean_dice_on(model: Path, dataset: Path) -> float:
    definition = load_dataset(dataset)
    return mean_dice(model, definition, definition.cases)


def run(name: str, dataset: Path, out: Path, minutes: float, init: Path | None = None, lr: float | None = None) -> Path:
    folder = out / name
    if (folder / "model.pt").is_file():
        return folder / "model.pt"
    config = TrainingConfig(
        str(dataset), "" if init else "unet", str(folder), time_limit_min=minutes, device="cpu",
        init=str(init) if init else None, learning_rate=lr,
    )  # fmt: skip
    started = time.perf_counter()
    summary = train(config)
    print(f"  {name}: {summary['epochs_done']} epochs in {time.perf_counter() - started:.0f} s", flush=True)
    return Path(summary["model_file"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--first", type=int, default=10)
    parser.add_argument("--more", type=int, default=60)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fine-tune-lr", type=float, nargs="*", default=[], metavar="LR",
        help="also fine-tune and update at these learning rates (side by side with the planner's)",
    )  # fmt: skip
    args = parser.parse_args()
    definition = load_dataset(args.dataset)
    order = np.random.default_rng(args.seed).permutation(len(definition.cases)).tolist()
    first, more = order[: args.first], order[args.first : args.first + args.more]
    test = order[args.first + args.more : args.first + args.more + args.test]
    out, ids = args.out, [case.case_id for case in definition.cases]  # the definition's training order
    parts = {"first": first, "more": more, "both": first + more, "test": test}
    sets = {
        name: write_subset(definition, [ids[i] for i in part], out / name / "dataset.json")
        for name, part in parts.items()
    }
    print(f"{args.dataset}: {args.first} first cases, {args.more} more, {args.test} held out; {args.minutes} min each")
    start = run("start", sets["first"], out, args.minutes)
    models = {
        "start": start,
        "scratch": run("scratch", sets["more"], out, args.minutes),
        "fine-tune": run("fine-tune", sets["more"], out, args.minutes, init=start),
        "update": run("update", sets["both"], out, args.minutes, init=start),
    }
    for lr in args.fine_tune_lr:
        models[f"fine-tune, lr {lr:g}"] = run(f"fine-tune-lr{lr:g}", sets["more"], out, args.minutes, start, lr)
        models[f"update, lr {lr:g}"] = run(f"update-lr{lr:g}", sets["both"], out, args.minutes, start, lr)
    print("| model | training | mean Dice, held-out | mean Dice, the start's own cases |")
    print("|---|---|---|---|")
    described = {
        "start": f"{args.minutes:g} min on {args.first} cases",
        "scratch": f"{args.minutes:g} min on {args.more} other cases, from scratch",
        "fine-tune": f"start + {args.minutes:g} min on the {args.more} other cases",
        "update": f"start + {args.minutes:g} min on all {args.first + args.more} (old replayed)",
    }
    for name, model in models.items():
        described.setdefault(name, described[name.split(",")[0]] + f", learning rate {name.split('lr ')[-1]}")
        held_out = mean_dice_on(model, sets["test"])
        own = mean_dice_on(model, sets["first"]) if name != "scratch" else float("nan")
        print(f"| {name} | {described[name]} | {held_out:.4f} | {own:.4f} |", flush=True)


if __name__ == "__main__":
    main()
