"""The Training module's form -> a :class:`~AttentionSegLib.training.config.TrainingConfig`.

A form cannot say "not set" with a spin box: 0 (or empty text) there means the network's recipe
default. The patch size is free text, an empty run folder asks for a new folder, and the extra
options line is split like a shell and read by the same ``attentionseg train`` flags as the
command line (:func:`~AttentionSegLib.training.config.add_arguments`). Extra options may not repeat
what the form sets: those are the form's fields of the schema, not a list kept here.

Example:
    >>> config = config_from_form("Task04/dataset.json", "unet", "", epochs=50, patch_size="32x32x32")  # doctest: +SKIP
    >>> config.patch_size  # doctest: +SKIP
    [32, 32, 32]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path

from AttentionSegLib.devices import DEVICE_CHOICES
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.training.config import TrainingConfig, add_arguments

__all__ = [
    "DEVICES",
    "FORM_FIELDS",
    "config_from_form",
    "default_run_folder",
    "parse_extra_options",
    "parse_patch_size",
]

DEVICES = DEVICE_CHOICES
# The TrainingConfig fields the form sets: the parameters of config_from_form, and the split seed,
# which follows the form's one seed (so "Show folds" shows the folds the run trains on).
FORM_FIELDS = (
    "split_seed",
    "dataset",
    "model",
    "run_dir",
    "epochs",
    "time_limit_min",
    "patch_size",
    "batch_size",
    "learning_rate",
    "fold",
    "n_folds",
    "seed",
    "device",
    "interactive",
    "init",
)
_FLAGS = {item.name: item.metadata["flag"] or "DATASET_JSON" for item in fields(TrainingConfig)}


def parse_patch_size(text: str) -> tuple[int, ...] | None:
    """``"96 96 96"``, ``"96x96x96"`` or ``"96,96,96"`` (array order, 2 or 3 sizes) -> a tuple;
    empty text -> None (the network's default patch).

    Raises:
        AttentionSegError: not 2 or 3 positive integers.
    """
    parts = [part for part in re.split(r"[\s,x×]+", text.strip().lower()) if part]
    if not parts:
        return None
    try:
        sizes = tuple(int(part) for part in parts)
    except ValueError:
        sizes = ()
    if len(sizes) not in (2, 3) or min(sizes) < 1:
        raise AttentionSegError(f"patch size {text!r}: expected 2 or 3 positive integers, like 96 96 96")
    return sizes


def default_run_folder(dataset: str | os.PathLike, model: str, now: datetime | None = None) -> Path:
    """``~/.attentionseg/runs/<dataset folder>-<model>-<YYYYmmdd-HHMMSS>``: a new folder per run."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path.home() / ".attentionseg" / "runs" / f"{Path(dataset).resolve().parent.name}-{model}-{stamp}"


class _ExtraOptionsParser(argparse.ArgumentParser):
    """The ``attentionseg train`` flags, reporting a bad option as an error instead of exiting."""

    def error(self, message: str):
        raise AttentionSegError(f"extra options: {message}")


def parse_extra_options(text: str) -> dict:
    """The settings an extra options line gives (field name -> value), read by the ``train`` flags.

    Raises:
        AttentionSegError: the line does not split, an option is unknown or has a bad value, or
            an option repeats what the form sets (named by its flag).
    """
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise AttentionSegError(f"extra options {text!r}: {error}") from None
    parser = _ExtraOptionsParser(prog="extra options", add_help=False)
    add_arguments(parser)
    values = vars(parser.parse_args(words))
    repeated = [_FLAGS[name] for name in FORM_FIELDS if name in values]
    if repeated:
        raise AttentionSegError(f"extra options repeat what the form sets: {', '.join(repeated)}")
    return values


def config_from_form(
    dataset: str | os.PathLike,
    model: str,
    run_dir: str | os.PathLike | None,
    epochs: int = 0,
    time_limit_min: float = 0,
    patch_size: str = "",
    batch_size: int = 0,
    learning_rate: float = 0.0,
    fold: int = 0,
    n_folds: int = 5,
    seed: int = 0,
    device: str = "auto",
    interactive: bool = False,
    init: str | os.PathLike | None = None,
    extra_options: str = "",
) -> TrainingConfig:
    """The configuration the form describes (not yet validated: the Training logic does that).

    0 (or empty text) means the recipe's default; an empty run folder (or ``.``) a new folder from
    :func:`default_run_folder`; ``init`` (empty or ``.``: none) a model file to fine-tune, whose
    network then replaces ``model`` and ``interactive``; ``extra_options`` is one line of further
    ``attentionseg train`` flags (see :func:`parse_extra_options`). Paths become absolute.

    Raises:
        AttentionSegError: no dataset definition, a bad patch size or bad extra options.
    """
    if not str(dataset).strip() or str(dataset) == ".":
        raise AttentionSegError("choose a dataset definition (dataset.json)")
    extra = parse_extra_options(extra_options)
    has_run_dir = run_dir is not None and str(run_dir).strip() not in ("", ".")
    if init is not None and str(init).strip() not in ("", "."):
        init = str(Path(init).expanduser().resolve())
        model, interactive = "", False  # the model file's network (fine_tune.settings_from_model)
    else:
        init = None
    patch = parse_patch_size(patch_size)
    config = TrainingConfig(
        dataset=str(Path(dataset).expanduser().resolve()),
        model=model,
        run_dir=str(
            Path(run_dir).expanduser().resolve()
            if has_run_dir
            else default_run_folder(dataset, model or f"{Path(init).stem}-tuned")
        ),
        epochs=epochs or None,
        time_limit_min=float(time_limit_min) if time_limit_min else None,
        patch_size=list(patch) if patch else None,
        batch_size=batch_size or None,
        learning_rate=learning_rate or None,
        fold=fold,
        n_folds=n_folds,
        split_seed=seed,
        seed=seed,
        device=device,
        interactive=bool(interactive),
        init=init,
    )
    return replace(config, **extra)
