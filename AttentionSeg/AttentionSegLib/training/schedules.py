"""Learning-rate schedules and the optimiser of a recipe.

Example:
    >>> round(learning_rate_factor("poly", 0.5), 4)
    0.5359
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from AttentionSegLib.models import get_model_info
from AttentionSegLib.training.config import TrainingConfig

__all__ = ["learning_rate_factor", "build_optimizer"]


def learning_rate_factor(schedule: str, progress: float) -> float:
    """The learning rate as a fraction of the base rate at ``progress`` in [0, 1] of the run.

    Schedules are functions of progress rather than of step counts so that a time-limited run
    still decays to its end: poly (1 - p)^0.9 (nnU-Net), cosine, cosine after a linear warm-up over
    the first 5 %, or constant.
    """
    p = min(max(progress, 0.0), 1.0)
    if schedule == "poly":
        return (1 - p) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "warmup_cosine":
        warmup = 0.05
        return max(p / warmup, 0.01) if p < warmup else 0.5 * (1 + math.cos(math.pi * (p - warmup) / (1 - warmup)))
    return 1.0


def build_optimizer(config: TrainingConfig, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The configuration's optimiser at its base learning rate: SGD with Nesterov momentum (the
    network's recipe momentum), AdamW or Adam."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=config.learning_rate,
            momentum=get_model_info(config.model).recipe.momentum,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
    optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
