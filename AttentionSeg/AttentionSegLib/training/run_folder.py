"""Every path of a training run folder, in one place (no PyTorch needed).

A run folder holds ``model.pt`` (the model file, rewritten at every new best validation Dice),
``checkpoints/last.pt`` and ``checkpoints/best.pt``, ``progress.jsonl`` (progress events, see
:mod:`AttentionSegLib.progress`) and ``config.json`` (the run's
:class:`~AttentionSegLib.training.config.TrainingConfig`), ``plan.json`` and ``fingerprint.json``
(the experiment plan and the dataset fingerprint it came from). The trainer's console output goes to
``<run folder>.log`` beside it: the trainer starts a new run only in a missing or empty folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODEL_FILE_NAME", "RunFolder"]

MODEL_FILE_NAME = "model.pt"


@dataclass(frozen=True)
class RunFolder:
    """The files of one training run.

    Example:
        >>> RunFolder("runs/liver").last_checkpoint.as_posix()
        'runs/liver/checkpoints/last.pt'
    """

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE_NAME

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def progress_file(self) -> Path:
        return self.path / "progress.jsonl"

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def plan_file(self) -> Path:
        """The experiment plan the run took its unset settings from, with the reasons."""
        return self.path / "plan.json"

    @property
    def fingerprint_file(self) -> Path:
        """The dataset fingerprint the plan was made from."""
        return self.path / "fingerprint.json"

    @property
    def log_file(self) -> Path:
        """The trainer's standard output and error, beside the folder."""
        return self.path.with_name(f"{self.path.name}.log")

    def can_resume(self) -> bool:
        return self.last_checkpoint.is_file()

    def holds_files_other_than(self, *allowed: Path) -> bool:
        """Whether the folder exists and holds anything besides ``allowed`` (a new run needs an empty folder,
        except for the ``config.json`` it was started from)."""
        if not self.path.is_dir():
            return False
        keep = {Path(p).resolve() for p in allowed}
        return any(entry.resolve() not in keep for entry in self.path.iterdir())
