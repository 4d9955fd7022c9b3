"""Every registered network, in every dimensionality it supports: shapes, gradients, determinism and
argument errors, through the registry (compact configurations, smallest valid patches)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from AttentionSegLib.models import (
    build_model,
    build_preset,
    count_parameters,
    describe_model,
    get_model_info,
    list_models,
    list_presets,
)

EXPECTED_MODELS = {
    "axunet",
    "iacnn",
    "danie",
    "swinnext",
    "unetrpp",
    "unet",
    "attention_unet",
    "unetr",
    "swin_unetr",
    "segresnet",
    "dynunet",
    "mednext",
}
CASES = [(name, dims) for name in sorted(EXPECTED_MODELS) for dims in get_model_info(name).spatial_dims]
CLINICAL_FEATURES = 3


def smallest_patch(name: str, dims: int) -> tuple[int, ...]:
    info = get_model_info(name)
    """The patch multiple, doubled where it is small: a patch of exactly one small multiple leaves a 1-voxel
    bottleneck, which instance normalisation refuses in training mode."""
    factor = max(info.min_patch_multiples, 1)
    return tuple(m * max(factor, 1 if m >= 16 else 2) for m in info.patch_multiple(dims, info.compact_options))


def compact_network(name: str, dims: int, in_channels: int = 2, out_channels: int = 3, **extra):
    info = get_model_info(name)
    options = dict(info.compact_options)
    if info.deep_supervision:
        options["deep_supervision"] = True
    options.update(extra)
    clinical = CLINICAL_FEATURES if info.clinical_input else 0
    return build_model(
        name, dims, in_channels, out_channels, smallest_patch(name, dims), clinical_features=clinical, **options
    )


def run(network, name: str, x: torch.Tensor):
    if get_model_info(name).clinical_input:
        generator = torch.Generator().manual_seed(1)
        return network(x, torch.randn(x.shape[0], CLINICAL_FEATURES, generator=generator))
    return network(x)


def test_registry_lists_the_twelve_networks_and_the_synapse_preset():
    assert set(list_models()) == EXPECTED_MODELS
    assert set(list_models("attention")) == {"axunet", "iacnn", "danie", "swinnext", "unetrpp"}
    assert "unetrpp_synapse" in list_presets()


@pytest.mark.parametrize("name,dims", CASES)
def test_output_shape_for_a_valid_patch(name, dims):
    torch.manual_seed(0)
    network = compact_network(name, dims).eval()
    patch = smallest_patch(name, dims)
    with torch.no_grad():
        output = run(network, name, torch.randn(2, 2, *patch))
    assert isinstance(output, torch.Tensor)
    assert output.shape == (2, 3, *patch)
    assert torch.isfinite(output).all()


@pytest.mark.parametrize("name,dims", CASES)
def test_gradients_reach_every_parameter(name, dims):
    torch.manual_seed(0)
    network = compact_network(name, dims).train()
    patch = smallest_patch(name, dims)
    outputs = run(network, name, torch.randn(2, 2, *patch))
    outputs = outputs if isinstance(outputs, list) else [outputs]
    assert outputs[0].shape == (2, 3, *patch)
    if get_model_info(name).deep_supervision:
        assert len(outputs) > 1, "deep supervision in training mode must return auxiliary outputs"
        for auxiliary in outputs[1:]:
            assert auxiliary.shape[:2] == (2, 3) and auxiliary.dim() == dims + 2
    sum(output.square().mean() for output in outputs).backward()
    missing = [n for n, p in network.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:10]}"
    assert all(torch.isfinite(p.grad).all() for p in network.parameters() if p.grad is not None)


@pytest.mark.parametrize("name,dims", CASES)
def test_same_seed_same_output_other_seed_other_output(name, dims):
    patch = smallest_patch(name, dims)
    x = torch.randn(1, 2, *patch, generator=torch.Generator().manual_seed(5))
    outputs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        network = compact_network(name, dims).eval()
        with torch.no_grad():
            outputs.append(run(network, name, x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    assert not torch.equal(outputs[0], outputs[2])


@pytest.mark.parametrize("name,dims", CASES)
def test_invalid_patch_size_and_channels_are_refused(name, dims):
    info = get_model_info(name)
    patch = list(smallest_patch(name, dims))
    bad_patch = [patch[0] + 1, *patch[1:]]
    with pytest.raises(ValueError, match="patch_size"):
        build_model(name, dims, 1, 2, bad_patch, **info.compact_options)
    with pytest.raises(ValueError, match="patch_size"):
        build_model(name, dims, 1, 2, patch[:-1], **info.compact_options)
    with pytest.raises(ValueError, match="in_channels"):
        build_model(name, dims, 0, 2, patch, **info.compact_options)
    with pytest.raises(ValueError, match="out_channels"):
        build_model(name, dims, 1, 0, patch, **info.compact_options)
    with pytest.raises(ValueError, match="spatial_dims"):
        build_model(name, 4, 1, 2, patch + [patch[-1]], **info.compact_options)


def test_a_patch_leaving_a_one_voxel_normalised_bottleneck_is_refused():
    with pytest.raises(ValueError, match="at least \\(32, 32, 32\\)"):
        build_model("unet", 3, 1, 2, (16, 16, 16))
    build_model("unet", 3, 1, 2, (32, 48, 32))
    assert describe_model("unet")["min_patch_size"]["3"] == [32, 32, 32]


def test_unknown_name_and_misplaced_clinical_features_are_refused():
    with pytest.raises(ValueError, match="did you mean 'unetrpp'"):
        build_model("unetr_pp", 3, 1, 2)
    with pytest.raises(ValueError, match="takes no clinical features"):
        build_model("unet", 3, 1, 2, clinical_features=4, **get_model_info("unet").compact_options)
    with pytest.raises(ValueError, match="no deep supervision"):
        build_model("iacnn", 2, 1, 2, deep_supervision=True, **get_model_info("iacnn").compact_options)


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_description_is_plain_json_with_the_promised_fields(name):
    description = json.loads(json.dumps(describe_model(name)))
    for key in (
        "description",
        "spatial_dims",
        "default_patch_size",
        "patch_multiple",
        "parameters",
        "deep_supervision",
        "recipe",
    ):
        assert key in description
    assert description["parameters"] > 0
    for dims, size in description["default_patch_size"].items():
        multiple = description["patch_multiple"][dims]
        assert all(s % m == 0 for s, m in zip(size, multiple)), (name, size, multiple)
    for field in ("loss", "optimizer", "learning_rate", "schedule", "epochs"):
        assert field in description["recipe"]


def test_parameter_count_matches_a_built_network():
    torch.manual_seed(0)
    network = build_model("unet", 2, 3, 4, (32, 32), **get_model_info("unet").compact_options)
    expected = sum(p.numel() for p in network.parameters())
    assert count_parameters("unet", 2, 3, 4, (32, 32), **get_model_info("unet").compact_options) == expected


def test_unetrpp_synapse_preset_matches_the_paper_parameters_and_multiply_adds():
    """Paper: 42.96 M parameters, 47.98 G FLOPs counted by fvcore, i.e. multiply-adds, at 1x1x64x128x128.
    torch.utils.flop_counter counts 2 FLOPs per multiply-add of convolutions and matrix products."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        network = build_preset("unetrpp_synapse").eval()
        parameters = sum(p.numel() for p in network.parameters())
        counter = FlopCounterMode(display=False)
        with counter:
            output = network(torch.zeros(1, 1, 64, 128, 128))
    multiply_adds = counter.get_total_flops() / 2
    assert output.shape == (1, 14, 64, 128, 128)
    assert math.isclose(parameters, 42.96e6, rel_tol=0.01), parameters
    assert math.isclose(multiply_adds, 47.98e9, rel_tol=0.03), multiply_adds
