"""Cross-attention from a patient's clinical vector to a feature map, fused back by FiLM (nnY-Net's "Y").

Liu, Tao, Dong, Sun, "nnY-Net: Swin-NeXt with Cross-Attention for 3D Medical Images Segmentation",
arXiv 2501.01406. The paper puts a cross-attention module at the bottleneck: the patient's clinical
features (pathology, treatment), mapped "to an appropriate dimension through fully connected layers",
are the Query; the lowest encoder feature map is Key and Value. With ``c`` the clinical vector,
``X`` the map flattened to N tokens of C channels and h heads of width d = C / h:

- ``q = FC(c)``: ``Linear(n, C) -> GELU -> Linear(C, C)``, one query token per patient (our choice:
  the layer count, the width C and GELU, the decoder's activation);
- per head: ``a = softmax(W_q q (W_k X)^T / sqrt(d)) W_v X``, then ``a = W_o a``: MONAI's
  ``CrossAttentionBlock`` (no q/k/v bias, MONAI's default);
- the attended result has the query's length (one token of C channels), so it has to be brought back
  onto the N voxels. Our choice, FiLM (Perez et al., AAAI 2018): ``(gamma, beta) = Linear(a)`` and
  ``y = X * (1 + gamma) + beta``, per channel, broadcast over the voxels. A plain broadcast add
  (``X + a``) could only shift each channel; FiLM lets the patient's context also rescale it. At
  ``gamma = beta = 0`` the block is the identity, which is what the network does without a clinical vector.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import CrossAttentionBlock

__all__ = ["ClinicalCrossAttention"]


class ClinicalCrossAttention(nn.Module):
    """Clinical-vector query, feature-map keys and values, FiLM fusion; for 2D or 3D maps.

    Args:
        clinical_features: n, the length of the clinical vector; at least 1.
        channels: C, channels of the feature map (and width of the query and attention); at least 1.
        num_heads: attention heads; must divide ``channels``; default 8.

    Example::

        >>> block = ClinicalCrossAttention(clinical_features=8, channels=64, num_heads=4)
        >>> block(torch.randn(2, 64, 3, 3, 3), torch.randn(2, 8)).shape
        torch.Size([2, 64, 3, 3, 3])
    """

    def __init__(self, clinical_features: int, channels: int, num_heads: int = 8) -> None:
        super().__init__()
        if not isinstance(clinical_features, int) or clinical_features < 1:
            raise ValueError(
                f"ClinicalCrossAttention: clinical_features must be a positive integer, got {clinical_features!r}"
            )
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"ClinicalCrossAttention: channels must be a positive integer, got {channels!r}")
        if not isinstance(num_heads, int) or num_heads < 1 or channels % num_heads:
            raise ValueError(
                f"ClinicalCrossAttention: num_heads must be a positive divisor of channels={channels}, "
                f"got {num_heads!r}"
            )
        self.clinical_features = clinical_features
        self.query = nn.Sequential(nn.Linear(clinical_features, channels), nn.GELU(), nn.Linear(channels, channels))
        self.attention = CrossAttentionBlock(hidden_size=channels, num_heads=num_heads)
        self.film = nn.Linear(channels, 2 * channels)

    def check_clinical(self, clinical: torch.Tensor, batch_size: int) -> None:
        """Raise ``ValueError`` unless ``clinical`` is (batch_size, clinical_features)."""
        if clinical.dim() != 2 or clinical.shape != (batch_size, self.clinical_features):
            raise ValueError(
                f"clinical must have shape (batch={batch_size}, clinical_features="
                f"{self.clinical_features}), got {tuple(clinical.shape)}"
            )

    def attend(self, x: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        """The attended result ``a``: (B, 1, C), one token per patient."""
        self.check_clinical(clinical, x.shape[0])
        query = self.query(clinical.to(x.dtype)).unsqueeze(1)  # (B, 1, C)
        context = x.flatten(2).transpose(1, 2)  # (B, N, C): keys and values
        return self.attention(query, context=context)

    def forward(self, x: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, *spatial) feature map; ``clinical``: (B, n). Returns a map shaped like ``x``."""
        gamma, beta = self.film(self.attend(x, clinical).squeeze(1)).chunk(2, dim=-1)
        broadcast = (*gamma.shape, *([1] * (x.dim() - 2)))
        return x * (1 + gamma.reshape(broadcast)) + beta.reshape(broadcast)
