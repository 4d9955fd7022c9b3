"""AXUNet's blocks equal their formulas computed directly from their own weights; the network's
attention sits where ``attention_levels`` says, its shapes, parameter count and argument errors."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from AttentionSegLib.models import axunet, build_model
from AttentionSegLib.models.axunet import MODEL_INFO, AXUNet, patch_multiple
from AttentionSegLib.models.blocks.separable_conv import SeparableConv, XceptionBlock

DTYPE = torch.float64


def randomize_batch_norm(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters, so eval-mode BN is not the identity."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            n = layer.num_features
            layer.running_mean.copy_(torch.randn(n, generator=generator, dtype=DTYPE))
            layer.running_var.copy_(torch.rand(n, generator=generator, dtype=DTYPE) + 0.5)
            layer.weight.data.copy_(torch.randn(n, generator=generator, dtype=DTYPE))
            layer.bias.data.copy_(torch.randn(n, generator=generator, dtype=DTYPE))


def batch_norm_eval(x, layer):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
    return (x - layer.running_mean.reshape(shape)) * scale.reshape(shape) + layer.bias.reshape(shape)


def depthwise_conv(x, weight):
    """Per-channel 'same' convolution by explicit shifted products (kernel (C, 1, k, ...))."""
    k = weight.shape[-1]
    pad = k // 2
    spatial = x.shape[2:]
    padded = F.pad(x, (pad,) * (2 * len(spatial)))
    out = torch.zeros_like(x)
    for offset in itertools.product(range(k), repeat=len(spatial)):
        window = padded[(slice(None), slice(None)) + tuple(slice(o, o + s) for o, s in zip(offset, spatial))]
        out += window * weight[(slice(None), 0) + offset].reshape((1, -1) + (1,) * len(spatial))
    return out


def pointwise_conv(x, weight, bias=None, stride=1):
    """1x1 convolution as a channel contraction (kernel (O, I, 1, ...))."""
    x = x[(slice(None), slice(None)) + (slice(None, None, stride),) * (x.dim() - 2)]
    out = torch.einsum("oi,bi...->bo...", weight.flatten(1), x)
    return out if bias is None else out + bias.reshape((1, -1) + (1,) * (x.dim() - 2))


def max_pool_3_stride_2(x):
    """3x3(x3) max-pool, stride 2, padding 1, by the maximum over shifted strided views."""
    spatial = x.shape[2:]
    padded = F.pad(x, (1,) * (2 * len(spatial)), value=-math.inf)
    views = [
        padded[(slice(None), slice(None)) + tuple(slice(o, o + s, 2) for o, s in zip(offset, spatial))]
        for offset in itertools.product(range(3), repeat=len(spatial))
    ]
    return torch.stack(views).amax(dim=0)


def separable_direct(x, conv: SeparableConv):
    return pointwise_conv(depthwise_conv(x, conv.depthwise.weight), conv.pointwise.weight, conv.pointwise.bias)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kernel_size, bias", [(3, False), (5, True)])
def test_separable_conv_is_depthwise_then_pointwise(spatial_dims, kernel_size, bias):
    torch.manual_seed(0)
    conv = SeparableConv(spatial_dims, 4, 6, kernel_size=kernel_size, bias=bias).to(DTYPE)
    x = torch.randn(2, 4, *(7, 6, 5)[:spatial_dims], dtype=DTYPE)
    conv_fn = (F.conv2d, F.conv3d)[spatial_dims - 2]
    expected = conv_fn(
        conv_fn(x, conv.depthwise.weight, padding=kernel_size // 2, groups=4),
        conv.pointwise.weight,
        conv.pointwise.bias,
    )
    torch.testing.assert_close(conv(x), expected)
    # and the same again from explicit shifted products, without torch's convolution
    torch.testing.assert_close(conv(x), separable_direct(x, conv))
    assert conv.depthwise.weight.shape == (4, 1) + (kernel_size,) * spatial_dims
    assert (conv.pointwise.bias is not None) == bias


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(
    "in_channels, out_channels, num_convs, downsample",
    [
        (3, 5, 2, True),  # entry flow: 1x1 stride-2 conv + BN shortcut
        (4, 4, 3, False),  # middle flow: identity shortcut
        (6, 3, 2, False),  # decoder: width change without down-sampling, 1x1 conv + BN shortcut
    ],
)
def test_xception_block_equals_its_formula(spatial_dims, in_channels, out_channels, num_convs, downsample):
    torch.manual_seed(1)
    generator = torch.Generator().manual_seed(2)
    block = XceptionBlock(spatial_dims, in_channels, out_channels, num_convs=num_convs, downsample=downsample).to(DTYPE)
    randomize_batch_norm(block, generator)
    block.eval()
    x = torch.randn(2, in_channels, *(6, 8, 4)[:spatial_dims], dtype=DTYPE)

    convs = [m for m in block.main if isinstance(m, SeparableConv)]
    norms = [m for m in block.main if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(convs) == len(norms) == num_convs
    main = x
    for conv, norm in zip(convs, norms):
        main = batch_norm_eval(separable_direct(torch.clamp(main, min=0), conv), norm)
    if downsample:
        main = max_pool_3_stride_2(main)
    if downsample or in_channels != out_channels:
        shortcut_conv, shortcut_norm = block.shortcut
        shortcut = batch_norm_eval(
            pointwise_conv(x, shortcut_conv.weight, stride=2 if downsample else 1), shortcut_norm
        )
    else:
        shortcut = x
    expected = main + shortcut
    with torch.no_grad():
        actual = block(x)
    torch.testing.assert_close(actual, expected)
    factor = 2 if downsample else 1
    assert actual.shape == (2, out_channels, *(s // factor for s in x.shape[2:]))


def attention_direct(x, block):
    """y = x + W_o MHSA(GroupNorm(x)) + b_o with MHSA = softmax(Q K^T / sqrt(d)) V per head."""
    b, c = x.shape[:2]
    groups = block.norm.num_groups
    grouped = x.reshape(b, groups, -1)
    mean = grouped.mean(dim=2, keepdim=True)
    var = grouped.var(dim=2, unbiased=False, keepdim=True)
    normed = ((grouped - mean) / torch.sqrt(var + block.norm.eps)).reshape(b, c, -1)
    normed = normed * block.norm.weight[None, :, None] + block.norm.bias[None, :, None]
    tokens = normed.transpose(1, 2)  # (B, N, C)
    attn = block.attn
    heads = attn.num_heads
    d = c // heads

    def project(linear):
        return (torch.einsum("bnc,oc->bno", tokens, linear.weight) + linear.bias).reshape(b, -1, heads, d)

    q, k, v = project(attn.to_q), project(attn.to_k), project(attn.to_v)
    weights = torch.softmax(torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(d), dim=-1)
    mixed = torch.einsum("bhnm,bmhd->bnhd", weights, v).reshape(b, -1, c)
    out = torch.einsum("bnc,oc->bno", mixed, attn.out_proj.weight) + attn.out_proj.bias
    return x + out.transpose(1, 2).reshape(x.shape)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_self_attention_equals_scaled_dot_product_formula(spatial_dims):
    torch.manual_seed(3)
    net = (
        AXUNet(
            spatial_dims,
            2,
            3,
            (4,) * spatial_dims,
            features=(4, 8, 16),
            middle_blocks=0,
            attention_levels=(1, 2),
            attention_heads=2,
            attention_norm_groups=4,
        )
        .to(DTYPE)
        .eval()
    )
    for level, channels in (("1", 8), ("2", 16)):
        block = net.attention[level]
        with torch.no_grad():  # non-trivial norm affine parameters
            block.norm.weight.normal_()
            block.norm.bias.normal_()
        x = torch.randn(2, channels, *(3, 4, 2)[:spatial_dims], dtype=DTYPE)
        with torch.no_grad():
            torch.testing.assert_close(block(x), attention_direct(x, block))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_attention_sits_at_the_requested_levels(spatial_dims):
    patch = (8, 12, 16)[:spatial_dims]
    features = (4, 8, 16)
    net = AXUNet(
        spatial_dims,
        1,
        2,
        patch,
        features=features,
        middle_blocks=1,
        attention_levels=(0, -1),
        attention_heads=2,
        attention_norm_groups=2,
    )
    assert sorted(net.attention) == ["0", "2"]
    seen = {}

    def record(level):
        def hook(module, args, output):
            seen[level] = args[0].shape

        return hook

    for level, block in net.attention.items():
        block.register_forward_hook(record(level))
    net(torch.randn(1, 1, *patch))
    assert seen["0"] == (1, features[0], *patch)  # the full-resolution skip
    assert seen["2"] == (1, features[2], *(s // 4 for s in patch))  # the bottleneck


def test_default_attention_is_bottleneck_and_deepest_skip():
    with torch.device("meta"):
        net = AXUNet(2, 3, 4, (192, 192))
    assert sorted(net.attention) == ["3", "4"]
    assert net.attention["4"].attn.num_heads == 8
    assert len(net.middle) == 2


def test_plain_xception_unet_without_attention():
    net = AXUNet(2, 3, 4, (8, 8), features=(4, 8), attention_levels=(), middle_blocks=0)
    assert len(net.attention) == 0
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 4, 8, 8)


@pytest.mark.parametrize("spatial_dims, patch", [(2, (8, 12)), (3, (4, 8, 12))])
def test_compact_shapes(spatial_dims, patch):
    torch.manual_seed(0)
    net = AXUNet(spatial_dims, 3, 4, patch, **MODEL_INFO.compact_options)
    assert net(torch.randn(2, 3, *patch)).shape == (2, 4, *patch)
    assert patch_multiple(spatial_dims, MODEL_INFO.compact_options) == (4,) * spatial_dims


def test_default_parameter_count_matches_docstring():
    config = MODEL_INFO.default_config
    with torch.device("meta"):
        net = AXUNet(
            config["spatial_dims"],
            config["in_channels"],
            config["out_channels"],
            MODEL_INFO.default_patch_size[config["spatial_dims"]],
        )
    count = sum(p.numel() for p in net.parameters())
    assert count == 4_795_204
    assert f"{count:,}" in axunet.__doc__
    assert patch_multiple(2, {}) == (16, 16)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"features": (8,)}, "features must be at least 2"),
        ({"features": (8, 0)}, "features must be at least 2"),
        ({"middle_blocks": -1}, "middle_blocks"),
        ({"attention_levels": (3,)}, "attention_levels must be integers in"),
        ({"attention_levels": (-4,)}, "attention_levels must be integers in"),
        ({"attention_levels": (2, -1)}, "must not name a level twice"),
        ({"attention_heads": 3}, "attention_heads must be a positive divisor"),
        ({"attention_norm_groups": 3}, "attention_norm_groups must be a positive divisor"),
        ({"norm": "layer"}, "norm must be one of"),
    ],
)
def test_bad_options_raise(options, message):
    settings = {"features": (8, 16, 32), "attention_heads": 2, "attention_norm_groups": 4, **options}
    with pytest.raises(ValueError, match=message):
        AXUNet(2, 3, 4, (8, 8), **settings)


def test_bad_patch_and_clinical_features_raise():
    with pytest.raises(ValueError, match="multiple of 4"):
        AXUNet(2, 3, 4, (8, 6), **MODEL_INFO.compact_options)
    with pytest.raises(ValueError, match="clinical"):
        build_model("axunet", 2, 3, 4, (8, 8), clinical_features=2, **MODEL_INFO.compact_options)
    with pytest.raises(ValueError, match="kernel_size"):
        SeparableConv(2, 4, 4, kernel_size=4)
    with pytest.raises(ValueError, match="num_convs"):
        XceptionBlock(2, 4, 4, num_convs=0)
