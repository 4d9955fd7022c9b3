"""Training losses on logits and (B, 1, ...) class-index targets.

- ``dice_ce``: MONAI's DiceCELoss (soft Dice over the foreground classes + cross-entropy);
- ``dice_focal_ce``: :class:`DiceFocalCELoss` (nnY-Net's three-term loss);
- ``bce_dice``: :class:`BCEDiceLoss` (sigmoid outputs, the integrated-attention CNN's loss).

Example:
    >>> loss = build_loss("dice_ce", deep_supervision=False)
    >>> loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8))).shape
    torch.Size([])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DiceFocalCELoss", "BCEDiceLoss", "build_loss"]


class DiceFocalCELoss(nn.Module):
    """Dice + focal + cross-entropy (nnY-Net's loss). MONAI 1.6 has DiceCE and DiceFocal but no
    three-term loss, so this adds plain cross-entropy to MONAI's DiceFocalLoss. Dice and focal
    terms cover the foreground classes, as in :func:`build_loss`."""

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceFocalLoss

        self.dice_focal = DiceFocalLoss(to_onehot_y=True, softmax=True, include_background=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice_focal(logits, target) + F.cross_entropy(logits, target[:, 0].long())


class BCEDiceLoss(nn.Module):
    """Binary cross-entropy + soft Dice on sigmoid outputs (the integrated-attention CNN's loss).
    One output channel: binary target; several: one-hot targets, one sigmoid per class. MONAI's
    DiceCELoss uses softmax cross-entropy as soon as there is more than one channel."""

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            target = (target > 0).to(logits.dtype)
        else:
            target = F.one_hot(target[:, 0].long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        return self.dice(logits, target) + F.binary_cross_entropy_with_logits(logits, target)


def build_loss(name: str, deep_supervision: bool) -> Callable[..., torch.Tensor]:
    """The recipe's loss on logits and (B, 1, ...) class-index targets; with deep supervision,
    MONAI's DeepSupervisionLoss over the list of outputs (exponentially decreasing weights).

    The soft Dice term averages the foreground classes only (nnU-Net's convention): with the
    background in the average, the large, easy background class dilutes the gradient of small
    structures. Cross-entropy covers every class.
    """
    from monai.losses import DeepSupervisionLoss, DiceCELoss

    losses = {
        "dice_ce": lambda: DiceCELoss(to_onehot_y=True, softmax=True, include_background=False),
        "dice_focal_ce": DiceFocalCELoss,
        "bce_dice": BCEDiceLoss,
    }
    loss = losses[name]()
    if not deep_supervision:
        return loss
    supervised = DeepSupervisionLoss(loss, weight_mode="exp")
    # MONAI resizes the target to each output with nearest-exact interpolation, which needs floats.
    return lambda outputs, target: supervised(outputs, target.float())
