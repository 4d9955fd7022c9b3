"""Integrated-attention CNN (``iacnn``): each attention block against the paper's formula computed
by hand from the block's own weights, the U-Net wiring of figure 1, shapes, parameter count and
argument errors. Generic registry checks (gradients, determinism, invalid patches) live in
``test_models_registry.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from AttentionSegLib.models.blocks.affinity_attention import AffinityAttention
from AttentionSegLib.models.blocks.scale_feature_attention import ScaleFeatureAttention
from AttentionSegLib.models.iacnn import IACNN, MODEL_INFO, PRESETS

COMPACT = dict(MODEL_INFO.compact_options)


def randomise_norm_statistics(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Non-trivial affine weights and running statistics, so eval-mode batch norm is not an identity."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.weight.data = torch.rand(layer.weight.shape, generator=generator, dtype=layer.weight.dtype) + 0.5
            layer.bias.data = torch.randn(layer.bias.shape, generator=generator, dtype=layer.bias.dtype)
            layer.running_mean = torch.randn(layer.running_mean.shape, generator=generator, dtype=layer.weight.dtype)
            layer.running_var = torch.rand(layer.running_var.shape, generator=generator, dtype=layer.weight.dtype) + 0.5


def conv_unit_reference(x: torch.Tensor, unit: torch.nn.Module, norm: str) -> torch.Tensor:
    """Conv (no bias, 'same' padding) - Norm - ReLU written out with functional calls."""
    weight = unit.conv.weight
    convolve = F.conv2d if x.dim() == 4 else F.conv3d
    y = convolve(x, weight, padding=weight.shape[-1] // 2)
    batch_norm = unit.adn.N
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if norm == "batch":
        mean, var = batch_norm.running_mean.reshape(shape), batch_norm.running_var.reshape(shape)
        y = (y - mean) / torch.sqrt(var + batch_norm.eps) * batch_norm.weight.reshape(shape) + batch_norm.bias.reshape(
            shape
        )
    else:
        axes = tuple(range(2, x.dim()))
        mean, var = y.mean(dim=axes, keepdim=True), y.var(dim=axes, unbiased=False, keepdim=True)
        y = (y - mean) / torch.sqrt(var + batch_norm.eps)
    return torch.clamp(y, min=0)


@pytest.mark.parametrize("spatial_dims,norm", [(2, "batch"), (3, "instance"), (3, "batch")])
def test_sfa_is_the_sum_of_its_three_branches(spatial_dims, norm):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    sfa = ScaleFeatureAttention(spatial_dims, 3, 5, norm=norm).double().eval()
    randomise_norm_statistics(sfa, generator)
    x = torch.randn(2, 3, *(7,) * spatial_dims, generator=generator, dtype=torch.float64)

    # B1 = Conv3x3(Conv3x3(Conv1x1(X))), B2 = Conv3x3(Conv1x1(X)), B3 = Conv1x1(X): each 1x1 its own layer.
    b1 = conv_unit_reference(
        conv_unit_reference(conv_unit_reference(x, sfa.branch1[0], norm), sfa.branch1[1], norm), sfa.branch1[2], norm
    )
    b2 = conv_unit_reference(conv_unit_reference(x, sfa.branch2[0], norm), sfa.branch2[1], norm)
    b3 = conv_unit_reference(x, sfa.branch3, norm)
    kernels = [unit.conv.weight.shape[2:] for unit in (*sfa.branch1, *sfa.branch2, sfa.branch3)]
    assert kernels == [
        (1,) * spatial_dims,
        (3,) * spatial_dims,
        (3,) * spatial_dims,
        (1,) * spatial_dims,
        (3,) * spatial_dims,
        (1,) * spatial_dims,
    ]
    with torch.no_grad():
        torch.testing.assert_close(sfa(x), b1 + b2 + b3, atol=1e-10, rtol=1e-10)


def affinity_reference(x: torch.Tensor, mode: str) -> torch.Tensor:
    """alpha = Sigmoid(X X^T), out = X + alpha X, with X's rows the channels or the voxels."""
    flat = x.flatten(2)  # (B, C, N)
    if mode == "channel":
        alpha = torch.sigmoid(torch.einsum("bcn,bdn->bcd", flat, flat))
        out = flat + torch.einsum("bcd,bdn->bcn", alpha, flat)
    else:
        alpha = torch.sigmoid(torch.einsum("bcn,bcm->bnm", flat, flat))
        out = flat + torch.einsum("bnm,bcm->bcn", alpha, flat)
    return out.reshape(x.shape)


@pytest.mark.parametrize("mode", ["channel", "spatial"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_sa_matches_the_affinity_formula(mode, spatial_dims):
    generator = torch.Generator().manual_seed(1)
    # Small values keep the sigmoid away from saturation, so alpha's entries differ.
    x = 0.3 * torch.randn(2, 6, *(4,) * spatial_dims, generator=generator, dtype=torch.float64)
    sa = AffinityAttention(mode)
    assert not list(sa.parameters())
    expected = affinity_reference(x, mode)
    torch.testing.assert_close(sa(x), expected, atol=1e-10, rtol=1e-10)
    other = affinity_reference(x, "spatial" if mode == "channel" else "channel")
    assert not torch.allclose(expected, other, atol=1e-3), "the two readings must differ on this input"


def test_sa_stays_finite_in_float16_when_the_dot_products_exceed_its_range():
    x = torch.full((1, 8, 16, 16), 20.0, dtype=torch.float16)  # dot products 400 * 256 = 102400 > 65504
    out = AffinityAttention("channel")(x)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), affinity_reference(x.double(), "channel"), atol=0.2, rtol=1e-3)


def test_sa_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        AffinityAttention("pixel")


def channel_attention_reference(x: torch.Tensor, attention: torch.nn.Module) -> torch.Tensor:
    """beta = Sigmoid(MLP(MaxPool(X)) + MLP(AvgPool(X))) with one MLP; out = X + X * beta."""
    first, second = attention.mlp[0], attention.mlp[2]
    axes = tuple(range(2, x.dim()))

    def mlp(descriptor: torch.Tensor) -> torch.Tensor:
        hidden = torch.clamp(descriptor @ first.weight.T + first.bias, min=0)
        return hidden @ second.weight.T + second.bias

    max_pooled = x.amax(dim=axes)
    avg_pooled = x.sum(dim=axes) / x[0, 0].numel()
    beta = torch.sigmoid(mlp(max_pooled) + mlp(avg_pooled)).reshape(*x.shape[:2], *(1,) * len(axes))
    return x + x * beta


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_skip_attention_is_ca_after_sa_with_the_paper_formulas(spatial_dims):
    torch.manual_seed(2)
    patch = (32,) * spatial_dims
    net = IACNN(
        spatial_dims,
        1,
        2,
        patch,
        features=(4, 8, 16, 16, 16),
        sa_modes=("channel", "spatial", "channel"),
        ca_reduction=4,
    ).double()
    generator = torch.Generator().manual_seed(3)
    for level, (attention, mode, width) in enumerate(
        zip(net.skip_attention, ("channel", "spatial", "channel"), (8, 16, 16)), start=1
    ):
        sa, ca = attention
        assert sa.mode == mode
        assert ca.mlp[0].weight.shape == (width // 4, width)
        x = 0.2 * torch.randn(2, width, *(32 >> level,) * spatial_dims, generator=generator, dtype=torch.float64)
        expected = channel_attention_reference(affinity_reference(x, mode), ca)
        with torch.no_grad():
            torch.testing.assert_close(attention(x), expected, atol=1e-5, rtol=1e-5)


def test_default_sa_modes_use_the_voxel_affinity_only_at_the_coarsest_skip():
    with torch.device("meta"):
        net = IACNN(2, 3, 1, (256, 256))
    assert [attention[0].mode for attention in net.skip_attention] == ["channel", "channel", "spatial"]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_follows_figure_one(spatial_dims):
    """Encoder levels, SFA on the first level's output (skip and encoder path), SA+CA on skip levels 1-3,
    transposed convolution + concatenation + double convolution back up, 1x1 head."""
    torch.manual_seed(4)
    net = IACNN(spatial_dims, 2, 3, (16,) * spatial_dims, **COMPACT).eval()
    randomise_norm_statistics(net, torch.Generator().manual_seed(5))
    x = torch.randn(1, 2, *(32,) * spatial_dims)
    pool = F.max_pool2d if spatial_dims == 2 else F.max_pool3d
    with torch.no_grad():
        level0 = net.sfa(net.encoder[0](x))
        level1 = net.encoder[1][1](pool(level0, 2))
        level2 = net.encoder[2][1](pool(level1, 2))
        level3 = net.encoder[3][1](pool(level2, 2))
        y = net.encoder[4][1](pool(level3, 2))
        skips = [level0] + [net.skip_attention[i](skip) for i, skip in enumerate((level1, level2, level3))]
        for level in (3, 2, 1, 0):
            y = net.decoder[level](torch.cat([net.upsample[level](y), skips[level]], dim=1))
        torch.testing.assert_close(net(x), net.head(y))


@pytest.mark.parametrize("spatial_dims,patch", [(2, (32, 16)), (3, (16, 32, 16))])
def test_output_shape_for_non_square_patches(spatial_dims, patch):
    torch.manual_seed(0)
    net = IACNN(spatial_dims, 3, 1, patch, **COMPACT).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, *patch)).shape == (2, 1, *patch)


def test_parameter_count_of_the_default_configuration_matches_the_docstring():
    config = MODEL_INFO.default_config
    assert (config["spatial_dims"], config["in_channels"], config["out_channels"]) == (2, 3, 1)
    counts = {}
    for dims in (2, 3):
        with torch.device("meta"):
            net = IACNN(dims, config["in_channels"], config["out_channels"], MODEL_INFO.default_patch_size[dims])
        counts[dims] = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert counts == {2: 31_205_241, 3: 90_690_809}


def test_recipe_and_preset_are_the_papers():
    recipe = MODEL_INFO.recipe
    assert (recipe.loss, recipe.optimizer, recipe.learning_rate, recipe.weight_decay, recipe.batch_size) == (
        "bce_dice",
        "adam",
        1e-4,
        1e-5,
        16,
    )
    assert MODEL_INFO.default_patch_size[2] == (256, 256)
    assert MODEL_INFO.patch_multiple(2, {}) == (16, 16) and MODEL_INFO.patch_multiple(3, COMPACT) == (16, 16, 16)
    (preset,) = PRESETS
    assert (preset.in_channels, preset.out_channels, preset.patch_size) == (3, 1, (256, 256))


@pytest.mark.parametrize(
    "options,argument",
    [
        ({"features": (8, 16, 32, 64)}, "features"),
        ({"features": (8, 16, 0, 64, 128)}, "features"),
        ({"features": 64}, "features"),
        ({"sa_modes": ("channel", "spatial")}, "sa_modes"),
        ({"sa_modes": ("channel", "spatial", "pixel")}, "sa_modes"),
        ({"sa_modes": "spatial"}, "sa_modes"),
        ({"ca_reduction": 0}, "ca_reduction"),
        ({"norm": "group"}, "norm"),
    ],
)
def test_bad_options_are_refused_with_their_name(options, argument):
    with pytest.raises(ValueError, match=argument):
        IACNN(2, 3, 1, (32, 32), **options)
