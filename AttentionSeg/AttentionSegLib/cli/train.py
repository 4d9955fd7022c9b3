"""``attentionseg train``: its flags come from the training configuration's schema
(:func:`AttentionSegLib.training.config.add_arguments`) plus ``--config``, ``--resume``, ``--json``
and ``--quiet``.

On the terminal a run shows its progress events as lines (:func:`format_training_event`) and its
steps as the one progress bar (:class:`TrainingDisplay`); ``attentionseg demo`` shows its training
the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from AttentionSegLib.cli.common import EXIT_OK, EXIT_PROBLEMS
from AttentionSegLib.cli.progress_bar import ProgressBar
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.config import add_arguments as add_training_arguments

__all__ = ["add_parser", "TrainingDisplay", "format_training_event", "train_with_display"]


def add_parser(commands: argparse._SubParsersAction) -> None:
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
    parser.set_defaults(run=run)


def _format(value, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def _start_line(event: dict) -> str:
    return (
        f"training {event['model']} on {event['dataset']}: {event['n_train']} train / {event['n_val']} "
        f"validation cases, patch {'x'.join(map(str, event['patch_size']))}, batch {event['batch_size']}, "
        f"device {event['device']}"
        + (f", resumed at epoch {event['start_epoch']}" if event["resumed"] else "")
        + (f", starting from {event['initialised_from']}" if event.get("initialised_from") else "")
        + (
            f" (new output channels for labels {event['new_label_channels']})"
            if event.get("new_label_channels")
            else ""
        )
    )


def _epoch_line(event: dict) -> str:
    return (
        f"epoch {event['epoch']}/{event['epochs']}  loss {_format(event['loss'], '.4f')}  lr {event['lr']:.2e}  "
        f"{event['seconds']:.1f} s" + ("  (cut short by the time limit)" if event.get("truncated") else "")
    )


def _validation_line(event: dict) -> str:
    dice = "  ".join(
        f"{value}: {score:.3f}" if score is not None else f"{value}: -" for value, score in event["dice"].items()
    )
    mean = event["mean_dice"]
    line = f"  validation Dice {dice}  mean {mean:.4f}" if mean is not None else f"  validation Dice {dice}"
    return line + ("  (best)" if event["is_best"] else "")


def _end_line(event: dict) -> str:
    best = event["best_mean_dice"]
    line = (
        f"done ({event['reason']}): {event['epochs_done']} epochs in {event['elapsed_s']:.0f} s, best mean "
        f"Dice {best:.4f} at epoch {event['best_epoch']}"
        if best is not None
        else f"done ({event['reason']}): {event['epochs_done']} epochs"
    )
    return line + (f"\nmodel file: {event['model_file']}" if event["model_file"] else "")


_EVENT_LINES: dict[str, Callable[[dict], str]] = {
    "start": _start_line,
    "epoch": _epoch_line,
    "validation": _validation_line,
    "end": _end_line,
    "error": lambda event: f"error: {event['message']}",
}


def format_training_event(event: dict) -> str | None:
    """The terminal line(s) of a training progress event, or None for kinds not shown (checkpoints)."""
    formatter = _EVENT_LINES.get(event["event"])
    return formatter(event) if formatter is not None else None


class TrainingDisplay:
    """A training run on the terminal: each progress event as line(s) on stderr, and the steps of
    the current epoch as the progress bar ``  epoch E [####....] step/iterations loss X.XXXX``
    (only when stderr is a terminal); every printed line first wipes the bar."""

    def __init__(self) -> None:
        self.bar = ProgressBar()

    def event(self, event: dict) -> None:
        """The trainer's ``echo``: print the event's line(s)."""
        line = format_training_event(event)
        if line is not None:
            self.bar.close()
            print(line, file=sys.stderr, flush=True)

    def step(self, epoch: int, step: int, iterations: int, mean_loss: float) -> None:
        """The trainer's ``step_progress``: called after every training step (on rank 0)."""
        self.bar.draw(step / iterations, f"{step}/{iterations} loss {mean_loss:.4f}", label=f"  epoch {epoch}")

    def close(self) -> None:
        self.bar.close()


def train_with_display(train: Callable[..., dict], config: TrainingConfig, resume: bool, quiet: bool) -> dict:
    """Run ``train`` (:func:`AttentionSegLib.training.trainer.train`) showing the progress on the
    terminal unless ``quiet``; returns the trainer's summary."""
    if quiet:
        return train(config, resume=resume)
    display = TrainingDisplay()
    try:
        return train(config, resume=resume, echo=display.event, step_progress=display.step)
    finally:
        display.close()


def run(args: argparse.Namespace) -> int:
    from AttentionSegLib.training.trainer import train

    config = TrainingConfig.from_arguments(args)
    try:
        summary = train_with_display(train, config, resume=args.resume, quiet=args.quiet)
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
