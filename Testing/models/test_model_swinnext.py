"""Swin-NeXt with clinical cross-attention (nnY-Net): the cross-attention and its FiLM fusion against the
formulas written out by hand, the Swin window attention against Softmax(QK^T/sqrt(d) + B)V, where the
clinical branch sits, outputs with and without a clinical vector, the parameter count and argument errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from AttentionSegLib.models import build_model
from AttentionSegLib.models.blocks.clinical_cross_attention import ClinicalCrossAttention
from AttentionSegLib.models.swinnext import MODEL_INFO, PRESETS, ChannelLayerNorm, SwinNeXt, patch_multiple

COMPACT = dict(MODEL_INFO.compact_options)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """The paper's GELU(x) = x/2 [1 + erf(x / sqrt 2)]."""
    return x / 2 * (1 + torch.erf(x / math.sqrt(2)))


def cross_attention_by_hand(block: ClinicalCrossAttention, x: torch.Tensor, clinical: torch.Tensor):
    """softmax(Q K^T / sqrt(d)) V per head, Q from the clinical vector through the FC layers, K and V from
    the flattened map; then FiLM: x * (1 + gamma) + beta with (gamma, beta) = Linear(attended)."""
    fc1, fc2 = block.query[0], block.query[2]
    attention = block.attention
    heads = attention.num_heads
    batch, channels = x.shape[:2]
    d = channels // heads
    query_token = gelu(clinical @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias  # (B, C)
    tokens = torch.stack([x[:, :, i, j, k] for i, j, k in itertools.product(*map(range, x.shape[2:]))], dim=1)
    q = (query_token @ attention.to_q.weight.T).view(batch, heads, d)
    k = (tokens @ attention.to_k.weight.T).view(batch, -1, heads, d)
    v = (tokens @ attention.to_v.weight.T).view(batch, -1, heads, d)
    weights = torch.softmax(torch.einsum("bhd,bnhd->bhn", q, k) / math.sqrt(d), dim=-1)
    attended = torch.einsum("bhn,bnhd->bhd", weights, v).reshape(batch, channels)
    attended = attended @ attention.out_proj.weight.T + attention.out_proj.bias
    gamma, beta = (attended @ block.film.weight.T + block.film.bias).split(channels, dim=1)
    return x * (1 + gamma[:, :, None, None, None]) + beta[:, :, None, None, None]


def test_clinical_cross_attention_is_softmax_qk_v_fused_by_film():
    torch.manual_seed(0)
    block = ClinicalCrossAttention(clinical_features=5, channels=12, num_heads=3).double().eval()
    x = torch.randn(2, 12, 3, 2, 4, dtype=torch.float64)
    clinical = torch.randn(2, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(
            block(x, clinical), cross_attention_by_hand(block, x, clinical), rtol=1e-10, atol=1e-10
        )


def test_clinical_cross_attention_works_on_2d_maps_and_takes_one_query_per_patient():
    torch.manual_seed(0)
    block = ClinicalCrossAttention(clinical_features=4, channels=8, num_heads=2).double().eval()
    x2d = torch.randn(3, 8, 5, 6, dtype=torch.float64)
    clinical = torch.randn(3, 4, dtype=torch.float64)
    with torch.no_grad():
        assert block.attend(x2d, clinical).shape == (3, 1, 8)
        # a 2D map is a 3D map with one slice
        expected = cross_attention_by_hand(block, x2d.unsqueeze(-1), clinical).squeeze(-1)
        torch.testing.assert_close(block(x2d, clinical), expected, rtol=1e-10, atol=1e-10)


def window_attention_by_hand(attn, x: torch.Tensor) -> torch.Tensor:
    """Softmax(Q K^T / sqrt(d) + B) V in one cubic window, B looked up by relative offset (loops)."""
    windows, tokens, channels = x.shape
    heads, m = attn.num_heads, attn.window_size[0]
    d = channels // heads
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).split(channels, dim=-1)
    q, k, v = (t.view(windows, tokens, heads, d) for t in (q, k, v))
    coords = list(itertools.product(range(m), repeat=3))
    bias = torch.zeros(heads, tokens, tokens, dtype=x.dtype)
    for i, j in itertools.product(range(tokens), repeat=2):
        dz, dy, dx = (a - b + m - 1 for a, b in zip(coords[i], coords[j]))
        bias[:, i, j] = attn.relative_position_bias_table[(dz * (2 * m - 1) + dy) * (2 * m - 1) + dx]
    weights = torch.softmax(torch.einsum("wihd,wjhd->whij", q, k) / math.sqrt(d) + bias, dim=-1)
    out = torch.einsum("whij,wjhd->wihd", weights, v).reshape(windows, tokens, channels)
    return out @ attn.proj.weight.T + attn.proj.bias


def test_swin_window_attention_is_softmax_qk_plus_relative_bias_v_and_shifts_alternate():
    torch.manual_seed(0)
    net = SwinNeXt(3, 1, 2, (32, 32, 32), **{**COMPACT, "window_size": 2}).double().eval()
    block = net.encoder.layers2[0].blocks[0]
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()  # the default table is nearly zero
        x = torch.randn(3, 8, block.attn.dim, dtype=torch.float64)
        torch.testing.assert_close(block.attn(x, None), window_attention_by_hand(block.attn, x), rtol=1e-10, atol=1e-10)
    shifts = [blk.shift_size for blk in net.encoder.layers1[0].blocks]
    assert shifts == [(0, 0, 0), (1, 1, 1)]  # W-MSA then SW-MSA


def bottleneck_input(net: SwinNeXt, x: torch.Tensor, clinical: torch.Tensor | None) -> torch.Tensor:
    seen = []
    handle = net.bottleneck.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    net(x, clinical)
    handle.remove()
    return seen[0]


def test_clinical_vector_queries_the_lowest_encoder_map_and_is_skipped_without_one():
    torch.manual_seed(0)
    net = SwinNeXt(2, 1, 2, (64, 64), clinical_features=3, **COMPACT).double().eval()
    x = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    clinical = torch.randn(2, 3, dtype=torch.float64)
    with torch.no_grad():
        lowest = net.encoder(x, normalize=True)[-1]
        assert lowest.shape == (2, 16 * COMPACT["feature_size"], 2, 2)  # 1/32 of the patch
        expected = cross_attention_by_hand(net.clinical_attention, lowest.unsqueeze(-1), clinical).squeeze(-1)
        torch.testing.assert_close(bottleneck_input(net, x, clinical), expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(bottleneck_input(net, x, None), lowest, rtol=0, atol=0)


@pytest.mark.parametrize("dims,patch", [(2, (32, 64)), (3, (32, 64, 32))])
def test_outputs_with_and_without_clinical_vector_and_deep_supervision(dims, patch):
    torch.manual_seed(0)
    net = SwinNeXt(dims, 2, 3, patch, clinical_features=4, deep_supervision=True, **COMPACT).eval()
    x = torch.randn(2, 2, *patch)
    with torch.no_grad():
        plain = net(x)
        with_a = net(x, torch.randn(2, 4))
        with_b = net(x, torch.randn(2, 4))
    for output in (plain, with_a, with_b):
        assert output.shape == (2, 3, *patch)
    assert not torch.allclose(with_a, with_b) and not torch.allclose(with_a, plain)
    outputs = net.train()(x, torch.randn(2, 4))
    assert [tuple(o.shape[2:]) for o in outputs] == [tuple(s // 2**i for s in patch) for i in range(5)]
    image_only = SwinNeXt(dims, 2, 3, patch, **COMPACT).eval()
    assert image_only.clinical_attention is None
    with torch.no_grad():
        assert image_only(x).shape == (2, 3, *patch)


def test_decoder_layer_norm_normalises_each_voxel_over_its_channels():
    torch.manual_seed(0)
    norm = ChannelLayerNorm(6).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
        x = 3 + 2 * torch.randn(2, 6, 3, 4, dtype=torch.float64)
        mean = x.mean(dim=1, keepdim=True)
        variance = ((x - mean) ** 2).mean(dim=1, keepdim=True)
        weight, bias = norm.weight.view(1, 6, 1, 1), norm.bias.view(1, 6, 1, 1)
        expected = (x - mean) / torch.sqrt(variance + norm.eps) * weight + bias
        torch.testing.assert_close(norm(x), expected, rtol=1e-10, atol=1e-10)
    net = SwinNeXt(2, 1, 2, (32, 32), **COMPACT)
    norms = [m.norm for m in net.modules() if hasattr(m, "conv1") and hasattr(m, "norm")]
    assert norms and all(isinstance(n, ChannelLayerNorm) for n in norms)


def test_smallest_patch_runs_at_batch_one_and_mednext_group_norm_is_available():
    """With the default layer norm the one-voxel 1/32 map is fine; MedNeXt's per-channel GroupNorm needs more."""
    torch.manual_seed(0)
    with torch.no_grad():
        assert SwinNeXt(2, 1, 2, (32, 32), **COMPACT).eval()(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)
        grouped = SwinNeXt(2, 1, 2, (64, 64), decoder_norm="group", **COMPACT).eval()
        assert all(isinstance(m.norm, torch.nn.GroupNorm) for m in grouped.modules() if hasattr(m, "conv1"))
        assert grouped(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_wrong_clinical_vectors_are_refused():
    torch.manual_seed(0)
    net = SwinNeXt(2, 1, 2, (32, 32), clinical_features=3, **COMPACT).eval()
    x = torch.randn(2, 1, 32, 32)
    for bad in (torch.randn(2, 4), torch.randn(3, 3), torch.randn(3)):
        with pytest.raises(ValueError, match=r"clinical must have shape \(batch=2, clinical_features=3\)"):
            net(x, bad)
    image_only = SwinNeXt(2, 1, 2, (32, 32), **COMPACT).eval()
    with pytest.raises(ValueError, match="clinical_features=0"):
        image_only(x, torch.randn(2, 3))


def test_build_passes_clinical_features_and_the_patch_multiple_is_32():
    assert MODEL_INFO.clinical_input and MODEL_INFO.deep_supervision
    assert MODEL_INFO.recipe.loss == "dice_focal_ce"
    assert patch_multiple(3, {}) == (32, 32, 32) and patch_multiple(2, COMPACT) == (32, 32)
    net = build_model("swinnext", 2, 1, 2, (32, 32), clinical_features=6, **COMPACT)
    assert net.clinical_attention.clinical_features == 6
    assert {p.name: p.options.get("clinical_features", 0) for p in PRESETS} == {
        "swinnext_liver": 0,
        "swinnext_liver_clinical": 56,
    }


def test_default_parameter_count_is_the_documented_one():
    """17,280,597 without clinical input; the 56-variable branch adds FC (56C + C + C^2 + C), q/k/v (3C^2),
    output projection (C^2 + C) and FiLM (2C^2 + 2C) with C = 16 * 48 = 768: 4,175,616."""
    torch.manual_seed(0)
    net = SwinNeXt(3, 1, 3, (96, 96, 96))
    assert sum(p.numel() for p in net.parameters()) == 17_280_597
    c = 768
    branch = ClinicalCrossAttention(56, c, num_heads=8)
    expected_branch = 56 * c + c + c * c + c + 3 * c * c + c * c + c + 2 * c * c + 2 * c
    assert sum(p.numel() for p in branch.parameters()) == expected_branch == 4_175_616


@pytest.mark.parametrize(
    "options,message",
    [
        ({"num_heads": (3, 6, 12, 25)}, "num_heads"),
        ({"depths": (2, 2, 2)}, "depths"),
        ({"feature_size": 0}, "feature_size"),
        ({"window_size": 0}, "window_size"),
        ({"mlp_ratio": 0.0}, "mlp_ratio"),
        ({"decoder_blocks": 0}, "decoder_blocks"),
        ({"expansion_ratio": 0}, "expansion_ratio"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"decoder_norm": "batch"}, "decoder_norm"),
        ({"clinical_features": -1}, "clinical_features"),
        ({"clinical_features": 4, "clinical_heads": 5}, "clinical_heads"),
    ],
)
def test_bad_options_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        SwinNeXt(3, 1, 2, (96, 96, 96), **options)


def test_clinical_cross_attention_arguments_are_checked():
    with pytest.raises(ValueError, match="clinical_features"):
        ClinicalCrossAttention(0, 8)
    with pytest.raises(ValueError, match="num_heads"):
        ClinicalCrossAttention(3, 8, num_heads=3)
