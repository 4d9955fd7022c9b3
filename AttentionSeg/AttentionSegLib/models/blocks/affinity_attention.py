"""The integrated-attention CNN's "spatial attention" (SA): a parameter-free affinity attention.

The paper (eq. 5-6, fig. 3)::

    alpha = Sigmoid(x . x^T)
    out = x + x . alpha

``x`` is the feature map written as a matrix, ``x . x^T`` the matrix of dot products between its
rows, and ``x . alpha`` applies that affinity back to ``x``. Which axis the rows run over is not
said, and the two readings differ greatly in cost, so ``mode`` picks one (the formula is the same):

- ``"channel"``: rows are the ``C`` channels, ``x`` is ``C x N`` (``N`` = number of voxels),
  ``alpha`` is ``C x C``; cheap at any resolution. The paper's sentence "gives every feature map
  a different importance" fits this reading.
- ``"spatial"``: rows are the ``N`` voxels, ``x`` is ``N x C``, ``alpha`` is ``N x N``; memory is
  quadratic in ``N`` (a 128 x 128 map gives a 16384 x 16384 matrix per sample), so use it only on
  coarse feature maps. The module's name, "spatial attention", fits this reading.

In both, with ``X`` the row matrix: ``out = X + Sigmoid(X X^T) X``. ``alpha`` is symmetric, so
applying it from the left (``alpha X``) equals the paper's right product up to a transpose. There
is no ``1 / sqrt(d)`` scaling and no learned weight: the formula has none. Because the products
are unscaled, their magnitude grows with ``N`` (channel mode) or ``C`` (spatial mode) and exceeds
float16's range, so the block computes in float32 (or float64 for float64 input) even under
autocast. MONAI's attention blocks all use softmax and learned query/key/value projections, so
none implements this formula.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["AffinityAttention", "AFFINITY_MODES"]

AFFINITY_MODES = ("channel", "spatial")


class AffinityAttention(nn.Module):
    """``out = X + Sigmoid(X X^T) X`` over channels or over voxels; no parameters.

    Works for any number of spatial axes: (B, C, H, W) or (B, C, D, H, W) in, same shape out.

    Args:
        mode: ``"channel"`` (default; ``C x C`` affinity) or ``"spatial"`` (``N x N`` affinity over
            the ``N = prod(spatial shape)`` voxels; quadratic memory).

    Raises:
        ValueError: when ``mode`` is not one of the two.

    Example::

        sa = AffinityAttention("spatial")
        y = sa(torch.randn(2, 256, 16, 16))  # (2, 256, 16, 16), through a 256 x 256 affinity
    """

    def __init__(self, mode: str = "channel") -> None:
        super().__init__()
        if mode not in AFFINITY_MODES:
            raise ValueError(f"AffinityAttention: mode must be one of {AFFINITY_MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.flatten(2).to(torch.promote_types(x.dtype, torch.float32))  # (B, C, N)
            rows = flat if self.mode == "channel" else flat.transpose(1, 2)
            alpha = torch.sigmoid(rows @ rows.transpose(1, 2))
            attended = rows + alpha @ rows
            if self.mode == "spatial":
                attended = attended.transpose(1, 2)
        return attended.reshape(x.shape).to(x.dtype)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
