"""The run's budget: epochs and, optionally, wall-clock time.

Example:
    >>> budget = RunBudget(TrainingConfig("d", "unet", "r", epochs=10), TrainingState())
    >>> budget.progress(epochs_done=2.5, epoch_seconds=0.0)
    0.25
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from AttentionSegLib.training.config import TrainingConfig

if TYPE_CHECKING:
    from AttentionSegLib.training.checkpoint import TrainingState

__all__ = ["RunBudget"]


class RunBudget:
    """Where a run stands against its epoch and time budgets.

    ``progress`` (0..1) drives the learning-rate schedule step by step: the larger of the fraction
    of epochs done and the fraction of the time budget used, so a time-limited run anneals to its
    end. The time budget keeps back the longest validation seen, for the final validation.

    Args:
        config: the resolved configuration (``epochs``, ``time_limit_min``).
        state: the run's state; its ``elapsed_s`` (seconds of completed epochs and validations)
            is read at every question, so the budget follows the run.
    """

    def __init__(self, config: TrainingConfig, state: TrainingState) -> None:
        self.epochs = config.epochs
        self.limit_s = config.time_limit_min * 60 if config.time_limit_min else None
        self.state = state
        self.validation_s = 0.0
        self._validation_estimated = False  # validation_s holds an estimate, not a measured validation

    @property
    def limited(self) -> bool:
        return self.limit_s is not None

    def progress(self, epochs_done: float, epoch_seconds: float) -> float:
        progress = epochs_done / self.epochs
        if self.limit_s is not None:
            training_s = max(self.limit_s - self.validation_s, 1e-9)
            progress = max(progress, (self.state.elapsed_s + epoch_seconds) / training_s)
        return min(progress, 1.0)

    def estimate_validation(self, seconds: float) -> None:
        """Keep back ``seconds`` for the final validation before any validation has run."""
        self.validation_s, self._validation_estimated = seconds, True

    def record_validation(self, seconds: float) -> None:
        """A validation took ``seconds``: the first replaces the estimate, later ones only raise it."""
        self.validation_s = seconds if self._validation_estimated else max(self.validation_s, seconds)
        self._validation_estimated = False

    def out_of_time(self, epoch_seconds: float) -> bool:
        if self.limit_s is None:
            return False
        return self.state.elapsed_s + epoch_seconds + self.validation_s >= self.limit_s
