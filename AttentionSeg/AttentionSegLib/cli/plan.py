"""``attentionseg plan``: the settings ``train`` would take from the dataset, each with its reason."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from AttentionSegLib.cli.common import EXIT_OK
from AttentionSegLib.devices import DEVICE_CHOICES

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "plan",
        help="plan training from the dataset's fingerprint: spacing, patch, network, batch, mirroring, schedule",
        description="Computes (or reuses) the dataset fingerprint and prints the experiment plan for a network on a "
        "device: every setting `attentionseg train` takes from it when the flag is not given, with the reason. "
        "--gpu-memory plans for a GPU of that many GiB even where none is present.",
    )
    parser.add_argument("dataset_json", type=Path, metavar="DATASET_JSON")
    parser.add_argument("--model", required=True, help="network name (attentionseg models)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="plan for this device (default auto)")
    parser.add_argument("--gpu-memory", type=float, metavar="GIB", help="plan for a GPU with this much memory")
    parser.add_argument("--time-limit", type=float, metavar="MINUTES", help="the training time budget")
    parser.add_argument("--slice-wise", action="store_true", help="a 2D network on the slices of a 3D dataset")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from AttentionSegLib.cli.progress_bar import ProgressBar
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.fingerprint import load_or_compute_fingerprint
    from AttentionSegLib.training.device_budget import DeviceBudget
    from AttentionSegLib.training.experiment_planner import plan_experiment

    definition = load_dataset(args.dataset_json)
    bar = ProgressBar("fingerprint")
    try:
        fingerprint = load_or_compute_fingerprint(
            definition, progress=lambda done, total: bar(done / total, f"{done}/{total} cases")
        )
    finally:
        bar.close()
    device = DeviceBudget.for_device(args.device, args.gpu_memory)
    plan = plan_experiment(fingerprint, args.model, device, args.time_limit, args.slice_wise)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.format())
    return EXIT_OK
