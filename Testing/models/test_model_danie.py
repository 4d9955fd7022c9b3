"""DANIE: HAP, SAP, ES, EH and the aggregation against their formulas written out by hand from the
blocks' own weights; the stage wiring; sizes, parameter counts and argument checks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from AttentionSegLib.models import build_model
from AttentionSegLib.models.blocks.hierarchical_attention import HierarchicalAttention
from AttentionSegLib.models.blocks.joint_preservation import (
    EnhancingHierarchicalAttentionalPerceptron,
    EnhancingSelfAttentionalPerceptron,
    JointAggregation,
)
from AttentionSegLib.models.danie import DANIE, MODEL_INFO, SelfAttentionalPerception, patch_multiple

COMPACT = MODEL_INFO.compact_options


def conv_same_by_hand(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Stride-1 cross-correlation with zero 'same' padding, as a sum over kernel offsets."""
    dims = x.dim() - 2
    kernel = weight.shape[2:]
    pad = [k // 2 for k in kernel]
    padded = torch.zeros(*x.shape[:2], *(s + 2 * p for s, p in zip(x.shape[2:], pad)), dtype=x.dtype)
    padded[(slice(None), slice(None), *(slice(p, p + s) for p, s in zip(pad, x.shape[2:])))] = x
    out = bias.view(1, -1, *([1] * dims)).expand(x.shape[0], -1, *x.shape[2:]).clone()
    for offset in itertools.product(*(range(k) for k in kernel)):
        window = padded[(slice(None), slice(None), *(slice(o, o + s) for o, s in zip(offset, x.shape[2:])))]
        out = out + torch.einsum("bc...,oc->bo...", window, weight[(slice(None), slice(None), *offset)])
    return out


def max_pool_by_hand(x: torch.Tensor, size: int) -> torch.Tensor:
    batch, channels, *spatial = x.shape
    split = [value for s in spatial for value in (s // size, size)]
    blocks = x.reshape(batch, channels, *split)
    return blocks.amax(dim=tuple(3 + 2 * i for i in range(len(spatial))))


def layer_norm_by_hand(t: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean = t.mean(-1, keepdim=True)
    variance = ((t - mean) ** 2).mean(-1, keepdim=True)
    return (t - mean) / torch.sqrt(variance + norm.eps) * norm.weight + norm.bias


def group_norm_by_hand(x: torch.Tensor, norm: torch.nn.GroupNorm) -> torch.Tensor:
    batch, channels = x.shape[:2]
    grouped = x.reshape(batch, norm.num_groups, -1)
    mean = grouped.mean(-1, keepdim=True)
    variance = ((grouped - mean) ** 2).mean(-1, keepdim=True)
    normalised = ((grouped - mean) / torch.sqrt(variance + norm.eps)).reshape(x.shape)
    shape = (1, channels, *([1] * (x.dim() - 2)))
    return normalised * norm.weight.view(shape) + norm.bias.view(shape)


def randomise(module: torch.nn.Module) -> None:
    """Weights away from their initial values (calibration 1, norms 1/0), so every term is exercised."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.5)


# --- HAP ------------------------------------------------------------------------------------------


def hap_by_hand(hap: HierarchicalAttention, x: torch.Tensor, order: str, calibration: bool) -> torch.Tensor:
    dims = x.dim() - 2
    first, second = hap.channel_attention.mlp[0], hap.channel_attention.mlp[2]

    def channel(f):
        def mlp(v):
            return torch.relu(v @ first.weight.T + first.bias) @ second.weight.T + second.bias

        flat = f.flatten(2)
        beta = torch.sigmoid(mlp(flat.max(dim=2).values) + mlp(flat.sum(dim=2) / flat.shape[2]))
        return f * beta.view(*beta.shape, *([1] * dims))

    def spatial(f):
        pooled = torch.stack((f.max(dim=1).values, f.sum(dim=1) / f.shape[1]), dim=1)
        conv = hap.spatial_attention.conv
        return f * torch.sigmoid(conv_same_by_hand(pooled, conv.weight, conv.bias))

    attended = spatial(channel(x)) if order == "channel_first" else channel(spatial(x))
    return x + hap.calibration * attended if calibration else attended


@pytest.mark.parametrize("dims,shape", [(2, (2, 12, 6, 5)), (3, (2, 12, 4, 3, 5))])
@pytest.mark.parametrize("order", ["channel_first", "spatial_first"])
@pytest.mark.parametrize("calibration", [True, False])
def test_hap_is_channel_then_spatial_attention_then_calibration(dims, shape, order, calibration):
    torch.manual_seed(1)
    hap = HierarchicalAttention(dims, 12, reduction=4, kernel_size=3, order=order, calibration=calibration).double()
    randomise(hap)
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(hap(x), hap_by_hand(hap, x, order, calibration), rtol=1e-10, atol=1e-10)
    assert (hap.calibration is None) is (not calibration)


def test_hap_order_matters():
    torch.manual_seed(2)
    channel_first = HierarchicalAttention(2, 8, reduction=2, kernel_size=3).double()
    spatial_first = HierarchicalAttention(2, 8, reduction=2, kernel_size=3, order="spatial_first").double()
    spatial_first.load_state_dict(channel_first.state_dict())
    x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert not torch.allclose(channel_first(x), spatial_first(x))


# --- SAP ------------------------------------------------------------------------------------------


def sap_by_hand(sap: SelfAttentionalPerception, t: torch.Tensor) -> torch.Tensor:
    """t + W_o concat_h(softmax(Q_h K_h^T / sqrt(d)) V_h) + b_o, Q, K, V from LN(t), head by head."""
    heads = sap.attention.num_heads
    batch, tokens, channels = t.shape
    d = channels // heads
    qkv = layer_norm_by_hand(t, sap.norm) @ sap.attention.qkv.weight.T + sap.attention.qkv.bias
    q, k, v = qkv.reshape(batch, tokens, 3, heads, d).unbind(dim=2)
    outputs = []
    for h in range(heads):
        logits = torch.einsum("bnd,bmd->bnm", q[:, :, h], k[:, :, h]) / math.sqrt(d)
        weights = torch.exp(logits - logits.amax(-1, keepdim=True))
        weights = weights / weights.sum(-1, keepdim=True)
        outputs.append(torch.einsum("bnm,bmd->bnd", weights, v[:, :, h]))
    concatenated = torch.cat(outputs, dim=-1)
    return t + concatenated @ sap.attention.out_proj.weight.T + sap.attention.out_proj.bias


def test_sap_is_multi_head_softmax_attention():
    torch.manual_seed(3)
    sap = SelfAttentionalPerception(12, num_heads=3).double()
    randomise(sap)
    t = torch.randn(2, 10, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(sap(t), sap_by_hand(sap, t), rtol=1e-10, atol=1e-10)


# --- ES, EH, aggregation --------------------------------------------------------------------------


def test_es_is_residual_channel_perceptron():
    torch.manual_seed(4)
    es = EnhancingSelfAttentionalPerceptron(6, mlp_ratio=3.0).double()
    randomise(es)
    t = torch.randn(2, 7, 6, dtype=torch.float64)
    hidden = layer_norm_by_hand(t, es.norm) @ es.mlp.linear1.weight.T + es.mlp.linear1.bias
    assert hidden.shape[-1] == 18
    gelu = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    expected = t + gelu @ es.mlp.linear2.weight.T + es.mlp.linear2.bias
    with torch.no_grad():
        torch.testing.assert_close(es(t), expected, rtol=1e-10, atol=1e-10)


def eh_by_hand(eh: EnhancingHierarchicalAttentionalPerceptron, x: torch.Tensor, pool: int) -> torch.Tensor:
    def conv1x1(conv, f):
        bias = conv.bias.view(1, -1, *([1] * (f.dim() - 2)))
        return torch.einsum("oc,bc...->bo...", conv.weight.flatten(1), f) + bias

    pooled = max_pool_by_hand(x, pool) if pool > 1 else x
    theta = conv1x1(eh.theta, x).flatten(2)  # (B, C', N)
    phi = conv1x1(eh.phi, pooled).flatten(2)  # (B, C', M)
    g = conv1x1(eh.g, pooled).flatten(2)
    logits = torch.einsum("bcn,bcm->bnm", theta, phi) / math.sqrt(theta.shape[1])
    weights = torch.softmax(logits, dim=-1)
    interaction = torch.einsum("bnm,bcm->bcn", weights, g).reshape(x.shape[0], -1, *x.shape[2:])
    return x + conv1x1(eh.out, interaction)


@pytest.mark.parametrize("dims,shape,pool", [(2, (2, 8, 6, 4), 2), (2, (1, 6, 3, 5), 1), (3, (2, 8, 4, 2, 6), 2)])
def test_eh_is_residual_non_local_interaction(dims, shape, pool):
    torch.manual_seed(5)
    eh = EnhancingHierarchicalAttentionalPerceptron(dims, shape[1], pool_size=pool).double()
    randomise(eh)
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(eh(x), eh_by_hand(eh, x, pool), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dims", [2, 3])
def test_aggregation_is_sum_of_two_conv_blocks(dims):
    torch.manual_seed(6)
    channels, patch = 8, 2
    aggregation = JointAggregation(dims, channels, patch, norm_name=("group", {"num_groups": 4})).double()
    randomise(aggregation)
    grid = (3, 2, 2)[:dims]
    tokens = torch.randn(2, channels, *grid, dtype=torch.float64)
    local = torch.randn(2, channels, *(s * patch for s in grid), dtype=torch.float64)

    # transposed convolution with kernel = stride: every token paints its own patch
    weight = aggregation.unpatchify.weight  # (C_in, C_out, p, p[, p])
    letters = "xyz"[:dims]
    painted = torch.einsum(
        f"bc{'ijk'[:dims]},co{letters}->bo{''.join(a + b for a, b in zip('ijk', letters))}", tokens, weight
    )
    upsampled = painted.reshape(2, channels, *(s * patch for s in grid))
    upsampled = upsampled + aggregation.unpatchify.bias.view(1, -1, *([1] * dims))

    def conv_block(block, f):
        convolved = conv_same_by_hand(f, block.conv.weight, block.conv.bias)
        return torch.nn.functional.leaky_relu(group_norm_by_hand(convolved, block.adn.N), 0.01)

    expected = conv_block(aggregation.sap_block, upsampled) + conv_block(aggregation.hap_block, local)
    with torch.no_grad():
        torch.testing.assert_close(aggregation(tokens, local), expected, rtol=1e-10, atol=1e-10)


# --- the network ----------------------------------------------------------------------------------


def test_stage_joins_token_and_local_streams():
    torch.manual_seed(7)
    network = DANIE(2, 1, 2, (16, 8), **COMPACT).double().eval()
    stage = network.stages[0]
    x = torch.randn(2, 1, 16, 8, dtype=torch.float64)
    token_map = stage.sap_embedding(x)  # stem 4, tokens of 2x2 stage voxels: (2, 1) grid
    assert tuple(token_map.shape[2:]) == (2, 1) == stage.token_grid
    tokens = token_map.flatten(2).transpose(1, 2) + stage.position_embedding
    for layer in stage.sap_layers:  # SAP then ES
        tokens = layer[1](layer[0](tokens))
    local = stage.hap_embedding(x)
    for layer in stage.hap_layers:  # conv block, HAP, EH
        local = layer[2](layer[1](layer[0](local)))
    expected = stage.aggregation(tokens.transpose(1, 2).reshape(token_map.shape), local)
    with torch.no_grad():
        torch.testing.assert_close(stage(x), expected)


@pytest.mark.parametrize("dims,patch", [(2, (16, 24)), (3, (8, 16, 24))])
def test_output_shapes_with_compact_options(dims, patch):
    network = DANIE(dims, 2, 5, patch, **COMPACT).eval()
    with torch.no_grad():
        assert network(torch.randn(1, 2, *patch)).shape == (1, 5, *patch)


def test_default_parameter_counts_match_the_docstring():
    for dims, expected in ((2, 19_651_947), (3, 46_557_579)):
        with torch.device("meta"):
            network = DANIE(dims, 1, 9, MODEL_INFO.default_patch_size[dims])
        assert sum(p.numel() for p in network.parameters()) == expected


def test_default_token_grids_stay_small():
    """2D 224x224: stages 0-2 on a 14x14 grid (196 tokens), stage 3 on 7x7; 3D never above 512 tokens."""
    with torch.device("meta"):
        network_2d = DANIE(2, 1, 9, (224, 224))
        network_3d = DANIE(3, 1, 9, (64, 128, 128))
    assert [stage.token_grid for stage in network_2d.stages] == [(14, 14)] * 3 + [(7, 7)]
    assert [stage.token_grid for stage in network_3d.stages] == [(8, 8, 8)] * 3 + [(4, 4, 4)]
    assert network_3d.stages[0].hap_layers[0][2].pool.kernel_size == 4


def test_patch_multiples():
    assert patch_multiple(2, {}) == (32, 32)
    assert patch_multiple(3, {}) == (16, 32, 32)
    assert patch_multiple(2, COMPACT) == (8, 8)
    assert patch_multiple(3, {"sap_patch_sizes": (3, 1, 1, 1)}) == (48, 96, 96)
    assert all(
        size % m == 0
        for dims in (2, 3)
        for size, m in zip(MODEL_INFO.default_patch_size[dims], patch_multiple(dims, {}))
    )
    with pytest.raises(ValueError, match="multiple of 32"):
        DANIE(2, 1, 9, (224, 208))


def test_hap_options_reach_every_stage():
    network = DANIE(2, 1, 2, (8, 8), **{**COMPACT, "hap_order": "spatial_first", "hap_calibration": False})
    haps = [layer[1] for stage in network.stages for layer in stage.hap_layers]
    assert all(hap.order == "spatial_first" and hap.calibration is None for hap in haps)


def test_another_input_size_is_refused():
    network = DANIE(2, 1, 2, (16, 16), **COMPACT)
    with pytest.raises(ValueError, match="token grid"):
        network(torch.zeros(1, 1, 32, 16))


@pytest.mark.parametrize(
    "options,message",
    [
        ({"num_heads": (3, 2)}, "num_heads entry must divide"),
        ({"depths": (1,)}, "same length"),
        ({"hap_order": "random"}, "hap_order must be one of"),
        ({"sap_patch_sizes": (2,)}, "sap_patch_sizes must be 2"),
        ({"stem_stride": 3}, "stem_stride must be 2 powers of two"),
        ({"spatial_kernel_size": 4}, "spatial_kernel_size must be a positive odd"),
        ({"mlp_ratio": 0.0}, "mlp_ratio, reduction and full_resolution_features must be positive"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        DANIE(2, 1, 2, (16, 16), **{**COMPACT, **options})


def test_clinical_features_are_refused():
    with pytest.raises(ValueError, match="no clinical features"):
        build_model("danie", 2, 1, 2, (16, 16), clinical_features=3, **COMPACT)
