"""``attentionseg interactive-eval``: the robot-user benchmark of a model file on a dataset's cases
(:mod:`AttentionSegLib.evaluation.interactive`). An interactive model runs through its session; an
automatic one through the window-and-component click, so both report the same figures."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from AttentionSegLib.cli.common import EXIT_OK, check_output_path
from AttentionSegLib.cli.progress_bar import ProgressBar
from AttentionSegLib.devices import DEVICE_CHOICES

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "interactive-eval",
        help="robot-user benchmark: Dice and NSD after every click, DSC-AUC, NoC@85/90, latency",
        description="Runs a simulated user on every object (label) of every case: an initial prompt (a "
        "click at the object's interior-most voxel, or its bounding box), then clicks at the interior-most "
        "voxel of the largest error region, positive on missed structure, negative on leak (the CVPR 2025 "
        "interactive segmentation challenge's protocol). Interactive models answer through their session; "
        "automatic models through one window and connected components.",
    )
    parser.add_argument("model_file", type=Path, metavar="MODEL_FILE")
    parser.add_argument("dataset_json", type=Path, metavar="DATASET_JSON")
    parser.add_argument("--split", default="heldout", help="heldout (default), all, test, fold:K or a named split")
    parser.add_argument("--folds", type=int, default=5, help="number of folds for fold:K (default 5)")
    parser.add_argument("--split-seed", type=int, default=0, help="split seed for fold:K (default 0)")
    parser.add_argument(
        "--clicks", type=int, default=5, metavar="N", help="interactions per object, the initial prompt included"
    )
    parser.add_argument(
        "--initial",
        choices=("point", "box", "box2d", "scribble"),
        default="point",
        help="initial prompt: a click, the 3D box, the box on one slice, or a scribble on one slice (default point)",
    )
    parser.add_argument(
        "--channel",
        type=int,
        default=0,
        metavar="K",
        help="for a one-channel model (the generalist) on a dataset with several channels: the channel it sees "
        "(0-based, default 0)",
    )
    parser.add_argument("--nsd-tolerance", type=float, default=2.0, metavar="MM", help="NSD tolerance (default 2 mm)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto: CUDA when present")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the report (summary and per object) as JSON")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write one row per object and interaction as CSV")
    parser.add_argument("--overwrite", action="store_true", help="replace report files that exist")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from AttentionSegLib.cli.dataset_evaluation import heldout_cases
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.errors import AttentionSegError
    from AttentionSegLib.evaluation.batch import dataset_cases, load_case
    from AttentionSegLib.evaluation.interactive import evaluate_cases, summarize_objects
    from AttentionSegLib.inference.predictor import Predictor
    from AttentionSegLib.interactive.component_click import ComponentClicks
    from AttentionSegLib.interactive.session import InteractiveSession

    if args.clicks < 1:
        raise AttentionSegError(f"--clicks must be at least 1, got {args.clicks}")
    for output in (args.json, args.csv):
        check_output_path(output, [args.model_file, args.dataset_json], args.overwrite)
    definition = load_dataset(args.dataset_json)
    predictor = Predictor(args.model_file, device=args.device)
    model_file = predictor.model_file
    if args.split == "heldout":
        ids = heldout_cases(predictor, args.model_file, definition)
    else:
        ids = dataset_cases(definition, args.split, args.folds, args.split_seed)
    labels = model_file.object_labels if model_file.is_interactive else model_file.label_names
    if model_file.is_interactive and not labels:  # a class-agnostic model: every label is an object
        labels = {value: name for value, name in definition.labels.items() if value != 0}
    unknown = sorted(set(labels) - set(definition.labels))
    if unknown:
        raise AttentionSegError(f"{args.model_file}: label(s) {unknown} are not labels of {args.dataset_json}")

    def make_tool(case, value):
        if model_file.is_interactive:
            return InteractiveSession.for_predictor(predictor, _one_channel(case.images, predictor, args.channel))
        return ComponentClicks(predictor, case.images, value)

    bar = ProgressBar("clicking")
    cases = _LazyCases(definition, ids, load_case)
    try:
        results = evaluate_cases(
            make_tool,
            cases,
            labels,
            args.clicks,
            args.initial,
            args.nsd_tolerance,
            on_object=lambda done, total, result: bar(done / total, f"{result.case_id} {result.name}"),
        )
    finally:
        bar.close()
    summary = summarize_objects(results)
    kind = "interactive" if model_file.is_interactive else "automatic (window and component)"
    print(f"{args.model_file} ({kind}) on {definition.name}, {args.split}: {len(ids)} cases")
    print(format_summary(summary, args.initial))
    if args.json:
        _write(
            args.json,
            json.dumps(
                _json_safe(
                    {
                        "model": str(args.model_file),
                        "kind": kind,
                        "split": args.split,
                        "initial": args.initial,
                        "summary": summary,
                        "objects": [r.to_dict() for r in results],
                    }
                ),
                indent=2,
            ),
        )
    if args.csv:
        _write(args.csv, _csv(results))
    return EXIT_OK


def _one_channel(images, predictor, channel: int):
    """The case's images, or only channel ``channel`` of them for a one-channel model (the
    generalist) on a dataset with several."""
    from AttentionSegLib.errors import AttentionSegError

    if len(predictor.channel_names) != 1:
        return images
    import numpy as np

    array = np.concatenate([image.array if image.has_channels else image.array[None] for image in images])
    if len(array) == 1:
        return images
    if not 0 <= channel < len(array):
        raise AttentionSegError(f"--channel {channel}: the case has channels 0 to {len(array) - 1}")
    return [images[0].with_array(array[channel], has_channels=False)]


class _LazyCases:
    """Cases read one at a time, as the protocol reaches them (a dataset need not fit in memory)."""

    def __init__(self, definition, ids, load) -> None:
        self.definition, self.ids, self.load = definition, list(ids), load

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        return (self.load(self.definition, case_id) for case_id in self.ids)


def format_summary(summary: dict, initial: str) -> str:
    """The report's table: mean Dice and NSD after each interaction, then the per-object means."""
    if not summary.get("objects"):
        return "no objects: no label of the model is in these cases"
    lines = ["interaction  kind            Dice     NSD"]
    for number, (dice, nsd) in enumerate(zip(summary["dice_per_interaction"], summary["nsd_per_interaction"]), 1):
        kind = ("click" if initial == "point" else initial) if number == 1 else "click"
        lines.append(f"{number:>11}  {kind:<10}  {dice:.4f}  {nsd:.4f}")
    drops = summary["mean_dice_drops"]
    lines += [
        f"objects {summary['objects']}; DSC-AUC {summary['dice_auc']:.3f}, NSD-AUC {summary['nsd_auc']:.3f} "
        "(trapezoid, one unit per interaction)",
        f"final Dice {summary['final_dice']:.4f}; NoC@85 {summary['noc85']:.2f}, NoC@90 {summary['noc90']:.2f} "
        "(N + 1 when not reached)",
        f"latency per interaction: p50 {summary['latency_p50_s']:.3f} s, p95 {summary['latency_p95_s']:.3f} s",
        "mean Dice never lower after an interaction"
        if not drops
        else f"mean Dice lower after interaction(s) {', '.join(map(str, drops))}",
    ]
    return "\n".join(lines)


def _csv(results) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["case", "value", "name", "interaction", "kind", "dice", "nsd", "seconds"])
    for result in results:
        for number, step in enumerate(result.interactions, start=1):
            writer.writerow(
                [
                    result.case_id,
                    result.value,
                    result.name,
                    number,
                    step.kind,
                    f"{step.dice:.6f}",
                    f"{step.nsd:.6f}",
                    f"{step.seconds:.4f}",
                ]
            )
    return buffer.getvalue()


def _json_safe(document):
    from AttentionSegLib.evaluation.report import json_safe

    return json_safe(document)


def _write(path: Path, text: str) -> None:
    from AttentionSegLib.io.atomic import write_text_atomic

    write_text_atomic(path, text)
