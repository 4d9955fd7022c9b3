"""Efficient Paired Attention (EPA) and the UNETR++ transformer block built around it.

Shaker et al., "UNETR++: Delving into Efficient and Accurate 3D Medical Image Segmentation",
IEEE TMI 2024 (arXiv 2212.04497). EPA runs a channel branch and a spatial branch that share the
query and key projections:

- one linear layer maps every token (C features) to ``q, k, v_channel, v_spatial`` (4C);
- channel branch, per head: ``softmax(norm(q)^T norm(k) * tau_c)`` is a (C/h x C/h) map over the
  feature axis applied to ``v_channel``; ``norm`` is L2 along the tokens;
- spatial branch, per head: ``k`` and ``v_spatial`` are projected along the token axis from N to
  ``proj_size`` p by one linear layer shared by both (E = F in the paper), so the map
  ``softmax(norm(q) E(k)^T * tau_s)`` is (N x p): linear in N instead of quadratic;
- each branch goes through ``Linear(C, C/2)``; the two halves are concatenated back to C.

Differences from the official code, on purpose: the official spatial branch reshapes its
(B, heads, N, C/h) output with ``permute(0, 3, 1, 2).reshape(B, N, C)``, which interleaves tokens
and feature channels; we keep each token's features together, as the paper's equations do.
Parameter and multiply-add counts are unchanged by this.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks.dynunet_block import UnetResBlock

__all__ = ["EfficientPairedAttention", "EPATransformerBlock"]


class EfficientPairedAttention(nn.Module):
    """EPA on a token sequence (B, N, C) -> (B, N, C).

    Args:
        num_tokens: N, the number of tokens (voxels of the stage); fixes the spatial projection.
        hidden_size: C, features per token; must be divisible by ``num_heads`` and even.
        proj_size: p, the length keys and values are projected to in the spatial branch.
        num_heads: attention heads; default 4.
        qkv_bias: bias in the shared q/k/v linear layer; default False (as the official code).
        attention_dropout: dropout on both attention maps; default 0.15 (Synapse setting).
    """

    def __init__(
        self,
        num_tokens: int,
        hidden_size: int,
        proj_size: int,
        num_heads: int = 4,
        qkv_bias: bool = False,
        attention_dropout: float = 0.15,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads or hidden_size % 2:
            raise ValueError(
                f"EfficientPairedAttention: hidden_size ({hidden_size}) must be even and divisible by "
                f"num_heads ({num_heads})"
            )
        if not 0 <= attention_dropout <= 1:
            raise ValueError(f"EfficientPairedAttention: attention_dropout must be in [0, 1], got {attention_dropout}")
        if num_tokens < 1 or proj_size < 1:
            raise ValueError(
                f"EfficientPairedAttention: num_tokens and proj_size must be positive, got {num_tokens}, {proj_size}"
            )
        self.num_heads = num_heads
        self.temperature_channel = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.temperature_spatial = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkvv = nn.Linear(hidden_size, 4 * hidden_size, bias=qkv_bias)
        # One projection for keys and values (E = F in the paper), along the token axis.
        self.token_projection = nn.Linear(num_tokens, proj_size)
        self.channel_dropout = nn.Dropout(attention_dropout)
        self.spatial_dropout = nn.Dropout(attention_dropout)
        self.spatial_out = nn.Linear(hidden_size, hidden_size // 2)
        self.channel_out = nn.Linear(hidden_size, hidden_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, channels = x.shape
        head_dim = channels // self.num_heads
        # (4, B, heads, head_dim, N): features on the second-to-last axis, tokens last.
        qkvv = self.qkvv(x).reshape(batch, tokens, 4, self.num_heads, head_dim).permute(2, 0, 3, 4, 1)
        query, key, value_channel, value_spatial = qkvv.unbind(0)
        key_projected = self.token_projection(key)  # (B, h, d, p)
        value_projected = self.token_projection(value_spatial)  # (B, h, d, p)
        query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)

        channel_map = (query @ key.transpose(-2, -1) * self.temperature_channel).softmax(dim=-1)  # (B, h, d, d)
        channel_out = self.channel_dropout(channel_map) @ value_channel  # (B, h, d, N)
        channel_out = channel_out.permute(0, 3, 1, 2).reshape(batch, tokens, channels)

        spatial_map = (query.transpose(-2, -1) @ key_projected * self.temperature_spatial).softmax(dim=-1)  # (B,h,N,p)
        spatial_out = self.spatial_dropout(spatial_map) @ value_projected.transpose(-2, -1)  # (B, h, N, d)
        spatial_out = spatial_out.transpose(1, 2).reshape(batch, tokens, channels)

        return torch.cat((self.spatial_out(spatial_out), self.channel_out(channel_out)), dim=-1)


class EPATransformerBlock(nn.Module):
    """The UNETR++ stage block on a feature map (B, C, *spatial) -> same shape.

    ``t = x + pos; a = t + gamma * EPA(LayerNorm(t)); out = a + Conv1x1(ResBlock3x3(a))``
    with a learnable positional embedding per token, layer scale ``gamma`` (initialised to 1e-6),
    a residual 3x3 convolution block with batch norm and a 1x1 convolution after channel dropout.

    Args:
        spatial_dims: 2 or 3.
        spatial_size: the feature map's spatial size at this stage (fixes tokens and embedding).
        hidden_size: C.
        proj_size: EPA spatial projection length p.
        num_heads: EPA heads.
        attention_dropout: EPA attention dropout.
        feature_dropout: channel dropout before the 1x1 convolution; default 0.1 (official code).
    """

    def __init__(
        self,
        spatial_dims: int,
        spatial_size: tuple[int, ...],
        hidden_size: int,
        proj_size: int,
        num_heads: int = 4,
        attention_dropout: float = 0.15,
        feature_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        num_tokens = 1
        for size in spatial_size:
            num_tokens *= size
        self.spatial_size = tuple(spatial_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.layer_scale = nn.Parameter(1e-6 * torch.ones(hidden_size))
        self.position_embedding = nn.Parameter(torch.zeros(1, num_tokens, hidden_size))
        self.attention = EfficientPairedAttention(
            num_tokens, hidden_size, proj_size, num_heads, attention_dropout=attention_dropout
        )
        self.conv_block = UnetResBlock(
            spatial_dims, hidden_size, hidden_size, kernel_size=3, stride=1, norm_name="batch"
        )
        channel_dropout = (nn.Dropout2d, nn.Dropout3d)[spatial_dims - 2]
        conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
        self.pointwise = nn.Sequential(channel_dropout(feature_dropout), conv(hidden_size, hidden_size, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.spatial_size:
            raise ValueError(
                f"EPATransformerBlock: expected spatial size {self.spatial_size}, got {tuple(x.shape[2:])}"
                " (UNETR++ runs on the patch size it was built for)"
            )
        batch, channels = x.shape[:2]
        tokens = x.flatten(2).transpose(1, 2) + self.position_embedding
        attended = tokens + self.layer_scale * self.attention(self.norm(tokens))
        feature_map = attended.transpose(1, 2).reshape(batch, channels, *self.spatial_size)
        return feature_map + self.pointwise(self.conv_block(feature_map))
