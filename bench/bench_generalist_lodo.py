#!/usr/bin/env python3
"""Leave-one-dataset-out for the promptable generalist: the same run (steps, seed, settings) on the
whole collection and without one dataset, each measured by the robot user on that dataset's
held-out cases (the same cases for every run, so "trained with" and "never saw it" sit side by
side).

    python bench/bench_generalist_lodo.py DATA_DIR RUNS_DIR [--steps 900] [--leave-out hippocampus chaos-t2]

Each run is ``attentionseg train-generalist`` in ``RUNS_DIR/<name>`` (outside the repository: it
holds weights derived from the data); a run that stopped is resumed, a finished one reused. The
table: Dice after 1, 3 and 5 prompts (initial point, then corrective clicks), per run and dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "AttentionSeg"))

from bench_generalist import ROOT, run_row  # noqa: E402

COLLECTION = ROOT / "AttentionSeg" / "Resources" / "Models" / "promptable-generalist.collection.json"


def held_out_dataset(data: Path, name: str, out: Path) -> Path:
    """A dataset.json of the collection's held-out cases of ``name`` (absolute paths): evaluated
    with ``--split all`` by every run, whether or not the run knows them as held out."""
    from AttentionSegLib.data.collection import load_collection
    from AttentionSegLib.data.dataset import load_dataset, write_subset

    held_out = next(d for d in load_collection(COLLECTION, data).datasets if d.name == name).held_out
    definition = load_dataset(data / name / "dataset.json")
    return write_subset(definition, list(held_out), out / f"{name}-heldout" / "dataset.json", name=f"{name}-heldout")


def train(data: Path, folder: Path, steps: int, leave_out: str | None) -> Path:
    model = folder / "model.pt"
    if model.is_file() and json.loads((folder / "config.json").read_text()).get("steps") == steps:
        done = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        if done and done[-1]["step"] >= steps:
            return model
    command = [
        sys.executable, "-m", "AttentionSegLib", "train-generalist", str(COLLECTION), "--data-root", str(data),
        "--out", str(folder), "--steps", str(steps), "--device", "cpu",
    ]  # fmt: skip
    if leave_out:
        command += ["--leave-out", leave_out]
    if (folder / "checkpoints" / "last.pt").is_file():
        command.append("--resume")
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "AttentionSeg")}
    result = subprocess.run(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("runs", type=Path)
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--leave-out", nargs="*", default=["hippocampus", "chaos-t2"])
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    sets = {name: held_out_dataset(args.data, name, args.runs) for name in args.leave_out}
    print("| run | " + " | ".join(f"{name} held-out: Dice 1 / 3 / 5" for name in sets) + " |")
    print("|---|" + "---|" * len(sets))
    for left_out in [None, *args.leave_out]:
        name = f"without {left_out}" if left_out else "whole collection"
        model = train(args.data, args.runs / (f"without-{left_out}" if left_out else "whole"), args.steps, left_out)
        cells = []
        for dataset_name, dataset in sets.items():
            report = args.runs / f"{name.replace(' ', '-')}-{dataset_name}.json"
            dice = run_row(model, dataset, "all", [], "point", report)["dice_per_interaction"]
            mark = " (never saw it)" if dataset_name == left_out else ""
            cells.append(f"{dice[0]:.3f} / {dice[2]:.3f} / {dice[4]:.3f}{mark}")
        print(f"| {name}, {args.steps} steps | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
