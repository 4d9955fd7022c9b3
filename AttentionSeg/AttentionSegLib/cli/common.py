"""What the commands share: exit codes, checks of output paths, inference options, JSON arguments."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from AttentionSegLib.devices import DEVICE_CHOICES
from AttentionSegLib.errors import AttentionSegError

__all__ = [
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_BAD_INPUT",
    "check_output_path",
    "check_new_output",
    "json_value",
    "add_inference_options",
    "inference_options",
    "predictor_from_arguments",
]

# 0: done; 1: the command ran but found problems (``dataset validate``, a failed training);
# 2: bad input, reported as one line on stderr with no file changed.
EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2


def check_output_path(path: Path | None, inputs: list[Path], overwrite: bool | None = None) -> None:
    """Refuse an output that would replace one of ``inputs``, whose folder does not exist, that is
    a folder, or (when ``overwrite`` is given and false) that exists already.

    Raises:
        AttentionSegError: naming ``path`` and the reason.
    """
    if path is None:
        return
    inputs = [p for p in inputs if isinstance(p, Path)]  # a server model's URL is no file here
    if any(path.resolve() == p.resolve() for p in inputs if p.exists()):
        raise AttentionSegError(f"{path}: output would overwrite an input file")
    if path.parent.exists() and not path.parent.is_dir():
        raise AttentionSegError(f"{path}: {path.parent} is a file, not a folder")
    if not path.parent.resolve().is_dir():
        raise AttentionSegError(f"{path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise AttentionSegError(f"{path}: is a folder; give a file name")
    if overwrite is not None:
        check_new_output(path, overwrite)


def check_new_output(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing file unless ``--overwrite`` was given."""
    if path.exists() and not overwrite:
        raise AttentionSegError(f"{path}: file exists; use --overwrite to replace it")


def json_value(text: str):
    """An argparse type: any JSON value."""
    try:
        return json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--tta``, ``--overlap`` and ``--keep-largest`` of the commands that segment."""
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto: CUDA when present")
    parser.add_argument("--tta", action="store_true", help="average over mirrored copies (slower, often better)")
    parser.add_argument(
        "--overlap", type=float, default=0.5, help="fraction of a window shared with its neighbours (default 0.5)"
    )
    parser.add_argument(
        "--keep-largest", action="store_true", help="keep only the largest connected component of each label"
    )


def inference_options(args: argparse.Namespace) -> dict:
    """The predictor options of :func:`add_inference_options`' flags, checked.

    Raises:
        AttentionSegError: an overlap outside [0, 1).
    """
    if not 0 <= args.overlap < 1:
        raise AttentionSegError(f"--overlap must be in [0, 1), got {args.overlap}")
    return {"device": args.device, "tta": args.tta, "overlap": args.overlap, "keep_largest": args.keep_largest}


def predictor_from_arguments(path, args: argparse.Namespace):
    """A :class:`~AttentionSegLib.inference.predictor.Predictor` of the model file ``path`` (or a
    server model's URL) with the options of :func:`add_inference_options`."""
    from AttentionSegLib.inference.model_source import open_predictor

    return open_predictor(path, **inference_options(args))
