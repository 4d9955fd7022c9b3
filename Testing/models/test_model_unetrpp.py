"""UNETR++: the EPA block against its equations written out by hand, the transformer block's
wiring, and sizes that follow the patch size."""

from __future__ import annotations

import pytest
import torch

from AttentionSegLib.models.blocks.paired_attention import EfficientPairedAttention, EPATransformerBlock
from AttentionSegLib.models.unetrpp import UNETRPlusPlus


def epa_by_hand(epa: EfficientPairedAttention, x: torch.Tensor) -> torch.Tensor:
    """The paper's EPA, head by head, from the block's weights."""
    batch, tokens, channels = x.shape
    heads = epa.num_heads
    d = channels // heads
    qkvv = x @ epa.qkvv.weight.T
    projection_w, projection_b = epa.token_projection.weight, epa.token_projection.bias  # (p, N), (p,)
    channel_out = torch.zeros(batch, tokens, channels, dtype=x.dtype)
    spatial_out = torch.zeros(batch, tokens, channels, dtype=x.dtype)
    for h in range(heads):
        # slot s of the 4C outputs, head h: features s*C + h*d ... + d, as (B, d, N)
        q, k, v_channel, v_spatial = (
            qkvv[:, :, slot * channels + h * d : slot * channels + (h + 1) * d].transpose(1, 2) for slot in range(4)
        )
        q_hat = q / q.norm(dim=2, keepdim=True)
        k_hat = k / k.norm(dim=2, keepdim=True)
        # channel branch: (d x d) map over features
        logits = torch.einsum("bin,bjn->bij", q_hat, k_hat) * epa.temperature_channel[h, 0, 0]
        channel_map = torch.softmax(logits, dim=-1)
        channel_out[:, :, h * d : (h + 1) * d] = torch.einsum("bij,bjn->bni", channel_map, v_channel)
        # spatial branch: keys and values projected along tokens to p, then an (N x p) map
        k_projected = torch.einsum("bjn,pn->bjp", k, projection_w) + projection_b
        v_projected = torch.einsum("bjn,pn->bjp", v_spatial, projection_w) + projection_b
        logits = torch.einsum("bjn,bjp->bnp", q_hat, k_projected) * epa.temperature_spatial[h, 0, 0]
        spatial_map = torch.softmax(logits, dim=-1)
        spatial_out[:, :, h * d : (h + 1) * d] = torch.einsum("bnp,bjp->bnj", spatial_map, v_projected)
    spatial_half = spatial_out @ epa.spatial_out.weight.T + epa.spatial_out.bias
    channel_half = channel_out @ epa.channel_out.weight.T + epa.channel_out.bias
    return torch.cat((spatial_half, channel_half), dim=-1)


def test_epa_channel_and_spatial_branches_follow_the_equations():
    torch.manual_seed(0)
    epa = EfficientPairedAttention(num_tokens=12, hidden_size=8, proj_size=5, num_heads=2).double().eval()
    with torch.no_grad():
        epa.temperature_channel.copy_(torch.tensor([0.7, 1.9]).view(2, 1, 1))
        epa.temperature_spatial.copy_(torch.tensor([1.3, 0.4]).view(2, 1, 1))
    x = torch.randn(3, 12, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(epa(x), epa_by_hand(epa, x), rtol=1e-10, atol=1e-10)


def test_epa_spatial_branch_cost_is_linear_in_tokens():
    """The spatial map is N x p: doubling the tokens doubles its size (a full N x N map would quadruple)."""
    maps = []
    for tokens in (64, 128):
        epa = EfficientPairedAttention(num_tokens=tokens, hidden_size=8, proj_size=4, num_heads=2).eval()
        epa.spatial_dropout.register_forward_hook(lambda module, inputs, output: maps.append(output.shape))
        with torch.no_grad():
            epa(torch.randn(1, tokens, 8))
    assert maps == [torch.Size([1, 2, 64, 4]), torch.Size([1, 2, 128, 4])]


def test_transformer_block_is_layer_scaled_epa_then_residual_convolutions():
    torch.manual_seed(0)
    block = EPATransformerBlock(3, (2, 3, 2), hidden_size=8, proj_size=4, num_heads=2).double().eval()
    with torch.no_grad():
        block.layer_scale.fill_(0.5)
        block.position_embedding.normal_()
    x = torch.randn(2, 8, 2, 3, 2, dtype=torch.float64)
    tokens = x.flatten(2).transpose(1, 2) + block.position_embedding
    attended = tokens + 0.5 * block.attention(block.norm(tokens))
    feature_map = attended.transpose(1, 2).reshape(x.shape)
    expected = feature_map + block.pointwise[1](block.conv_block(feature_map))
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)


def test_transformer_block_refuses_another_spatial_size():
    block = EPATransformerBlock(2, (4, 4), hidden_size=8, proj_size=4, num_heads=2)
    with pytest.raises(ValueError, match="spatial size"):
        block(torch.zeros(1, 8, 4, 8))


@pytest.mark.parametrize(
    "dims,patch,stage0", [(3, (32, 64, 32), (16, 16, 8)), (3, (16, 32, 32), (8, 8, 8)), (2, (64, 32), (16, 8))]
)
def test_token_counts_and_embeddings_follow_the_patch_size(dims, patch, stage0):
    network = UNETRPlusPlus(
        dims,
        1,
        2,
        patch,
        feature_sizes=(8, 16),
        depths=(1, 1),
        proj_sizes=(4, 4),
        decoder_depth=1,
        decoder_proj_size=4,
        num_heads=2,
        full_resolution_features=4,
    )
    first = network.encoder_stages[0][0]
    tokens = 1
    for size in stage0:
        tokens *= size
    assert first.spatial_size == stage0
    assert first.position_embedding.shape == (1, tokens, 8)
    assert first.attention.token_projection.in_features == tokens
    with torch.no_grad():
        assert network.eval()(torch.zeros(1, 1, *patch)).shape == (1, 2, *patch)


def test_deep_supervision_outputs_are_full_then_coarser():
    network = UNETRPlusPlus(
        3,
        1,
        3,
        (16, 32, 32),
        feature_sizes=(8, 16, 32),
        depths=(1, 1, 1),
        proj_sizes=(4, 4, 4),
        decoder_depth=1,
        decoder_proj_size=4,
        num_heads=2,
        full_resolution_features=4,
        deep_supervision=True,
    ).train()
    outputs = network(torch.randn(2, 1, 16, 32, 32))
    assert [tuple(o.shape[2:]) for o in outputs] == [(16, 32, 32), (8, 8, 8), (4, 4, 4)]
    assert network.eval()(torch.zeros(1, 1, 16, 32, 32)).shape == (1, 3, 16, 32, 32)


def test_synapse_stem_uses_anisotropic_patches():
    network = UNETRPlusPlus(3, 1, 14, (64, 128, 128))
    stem = network.downsample[0][0]
    assert stem.kernel_size == (2, 4, 4) and stem.stride == (2, 4, 4)
    assert [stage[0].spatial_size for stage in network.encoder_stages] == [
        (32, 32, 32),
        (16, 16, 16),
        (8, 8, 8),
        (4, 4, 4),
    ]
    with pytest.raises(ValueError, match="multiple of \\(16, 32, 32\\)"):
        UNETRPlusPlus(3, 1, 14, (64, 128, 112))
