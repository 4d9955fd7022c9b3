"""Joint Preservation (JP), DANIE's aggregation of its two attention streams: ES, EH and the aggregation.

DANIE (ECAI 2024) names three parts; the summary gives no formulas, so the ones below are our reading:

- ES, "enhancing self-attentional perceptron": after self-attention, model the channel dimension of
  every token to capture the channel dependencies self-attention misses. A pre-norm channel-mixing
  perceptron with a residual, ``t + W2 GELU(W1 LN(t) + b1) + b2`` (MONAI's ``MLPBlock``); together with
  the SAP self-attention before it this is a standard transformer block, split because the paper
  places ES in JP rather than in the encoder.
- EH, "enhancing hierarchical-attentional perceptron": non-local interaction added to the local
  (HAP) stream. The embedded-Gaussian non-local block (Wang et al., CVPR 2018) with a residual,
  ``x + W_z softmax(theta(x)^T phi(P(x)) / sqrt(C')) g(P(x))``, where theta, phi, g are 1x1
  convolutions to ``C' = C // 2`` channels, W_z a 1x1 convolution back to C, and P a max pooling of
  the keys and values (the non-local paper's subsampling), so the cost is N x N / pool**dims rather
  than N x N. The 1/sqrt(C') scale (our choice) keeps the softmax out of saturation in wide stages.
- Aggregation: "features from the two perceptrons are processed by convolution blocks and added":
  ``conv_block_s(U(t)) + conv_block_h(h)``, each conv block a 3x3(x3) convolution, normalisation and
  activation (MONAI ``Convolution``); ``U`` a transposed convolution (kernel = stride = the SAP patch
  size) that brings the SAP tokens back to the local stream's grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution, MLPBlock

from .common import conv_transpose_type, conv_type, max_pool_type

__all__ = ["EnhancingSelfAttentionalPerceptron", "EnhancingHierarchicalAttentionalPerceptron", "JointAggregation"]


class EnhancingSelfAttentionalPerceptron(nn.Module):
    """ES on tokens (B, N, C) -> (B, N, C): ``t + MLP(LN(t))``.

    Args:
        hidden_size: C, features per token.
        mlp_ratio: hidden width of the perceptron is ``int(C * mlp_ratio)``; default 4.0 (ViT), positive.

    Example::

        >>> es = EnhancingSelfAttentionalPerceptron(32)
        >>> es(torch.randn(2, 49, 32)).shape
        torch.Size([2, 49, 32])
    """

    def __init__(self, hidden_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if hidden_size < 1 or int(hidden_size * mlp_ratio) < 1:
            raise ValueError(
                f"EnhancingSelfAttentionalPerceptron: hidden_size and mlp_ratio must be positive, got "
                f"{hidden_size}, {mlp_ratio}"
            )
        self.norm = nn.LayerNorm(hidden_size)
        self.mlp = MLPBlock(hidden_size, int(hidden_size * mlp_ratio), act="GELU")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.mlp(self.norm(tokens))


class EnhancingHierarchicalAttentionalPerceptron(nn.Module):
    """EH on feature maps (B, C, *spatial): a residual embedded-Gaussian non-local block.

    Args:
        spatial_dims: 2 or 3.
        channels: C.
        pool_size: keys and values are max-pooled by this factor on every axis (1: no pooling);
            every spatial axis of the input must be divisible by it; default 1.

    Example::

        >>> eh = EnhancingHierarchicalAttentionalPerceptron(2, channels=16, pool_size=2)
        >>> eh(torch.randn(1, 16, 8, 8)).shape
        torch.Size([1, 16, 8, 8])
    """

    def __init__(self, spatial_dims: int, channels: int, pool_size: int = 1) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(
                f"EnhancingHierarchicalAttentionalPerceptron: spatial_dims must be 2 or 3, got {spatial_dims!r}"
            )
        if channels < 2 or pool_size < 1:
            raise ValueError(
                f"EnhancingHierarchicalAttentionalPerceptron: channels must be at least 2 and pool_size "
                f"positive, got {channels}, {pool_size}"
            )
        inner = channels // 2
        conv = conv_type(spatial_dims)
        self.theta = conv(channels, inner, 1)
        self.phi = conv(channels, inner, 1)
        self.g = conv(channels, inner, 1)
        self.out = conv(inner, channels, 1)
        self.pool = max_pool_type(spatial_dims)(pool_size) if pool_size > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 1, positions, C'): one head; SDPA keeps the N x M map out of memory where a fused kernel exists
        pooled = self.pool(x)
        query = self.theta(x).flatten(2).transpose(1, 2).unsqueeze(1)
        key = self.phi(pooled).flatten(2).transpose(1, 2).unsqueeze(1)
        value = self.g(pooled).flatten(2).transpose(1, 2).unsqueeze(1)
        interaction = F.scaled_dot_product_attention(query, key, value).squeeze(1).transpose(1, 2)
        return x + self.out(interaction.reshape(x.shape[0], -1, *x.shape[2:]))


class JointAggregation(nn.Module):
    """Aggregation of the SAP (token) and HAP (local) streams: ``conv_block(U(s)) + conv_block(h)``.

    Args:
        spatial_dims: 2 or 3.
        channels: C of both streams and of the output.
        sap_patch_size: the SAP token grid is the local grid divided by this on every axis; ``U`` is a
            transposed convolution with kernel = stride = it (a 1x1 projection when 1).
        norm_name: MONAI normalisation name or (name, args); default ``"instance"``.
        act_name: MONAI activation name or (name, args); default leaky ReLU, slope 0.01.

    Example::

        >>> aggregate = JointAggregation(2, channels=16, sap_patch_size=2)
        >>> aggregate(torch.randn(1, 16, 4, 4), torch.randn(1, 16, 8, 8)).shape
        torch.Size([1, 16, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        sap_patch_size: int = 1,
        norm_name: str | Sequence = "instance",
        act_name: str | Sequence = ("leakyrelu", {"negative_slope": 0.01}),
    ) -> None:
        super().__init__()
        if sap_patch_size < 1:
            raise ValueError(f"JointAggregation: sap_patch_size must be positive, got {sap_patch_size!r}")
        self.unpatchify = conv_transpose_type(spatial_dims)(channels, channels, sap_patch_size, stride=sap_patch_size)
        self.sap_block = Convolution(spatial_dims, channels, channels, kernel_size=3, norm=norm_name, act=act_name)
        self.hap_block = Convolution(spatial_dims, channels, channels, kernel_size=3, norm=norm_name, act=act_name)

    def forward(self, sap_features: torch.Tensor, hap_features: torch.Tensor) -> torch.Tensor:
        return self.sap_block(self.unpatchify(sap_features)) + self.hap_block(hap_features)
