"""Memory and compute of one training step of a network spec, estimated without allocating it.

Training and inference both use it, so it sits with the networks, below both: the experiment
planner fits the patch and batch size to a device budget with it (:func:`fits`; :func:`estimate_step`
gives the figures), the trainer refuses a step that will not fit, and inference sizes the windows of
one forward pass. The network is built on PyTorch's meta device and run forward once, in training
mode, on fake tensors: nothing is allocated and no arithmetic is done, so an estimate takes a
fraction of a second (a second for the largest default 3D networks on a busy CPU).

Example:
    >>> spec = {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
    ...         "patch_size": [96, 96, 96]}
    >>> estimate = estimate_step(spec, batch_size=2)
    >>> estimate.training_bytes("adamw") < 8 * 2**30
    True
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils import flop_counter
from torch.utils._pytree import tree_leaves

from AttentionSegLib.models.spec import OPTIMIZERS

__all__ = [
    "time_cpu_step",
    "StepEstimate",
    "estimate_step",
    "fits",
    "OPTIMIZER_STATES",
    "BACKWARD_PEAK_PER_ACTIVATION_BYTE",
    "STEP_OVERHEAD_BYTES",
]

# Tensors an optimiser keeps per parameter besides the weights and their gradients.
OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "sgd": 1}  # Adam: first and second moments; SGD: momentum

# A step peaks early in backward: most saved activations are still held while each layer's input
# gradients, the gradients waiting at skip connections and the kernels' scratch buffers are allocated.
# Measured peak / saved activations on the CPU (one AdamW step, batch 2, compact networks): unet 2.6,
# dynunet 2.0, iacnn 1.9, danie 1.8, segresnet 1.8, unetrpp 2.3, 2D unet 1.6, axunet 1.3, swinnext 1.2.
BACKWARD_PEAK_PER_ACTIVATION_BYTE = 2

# What a step needs beyond its tensors on a GPU: the CUDA context, cuDNN workspaces and the caching
# allocator's slack.
STEP_OVERHEAD_BYTES = 512 * 2**20

# How many multiply-adds a training step costs per forward one: backward computes the gradients of
# the inputs and of the weights, each about as costly as the forward pass.
STEP_MACS_PER_FORWARD_MAC = 3


@dataclass(frozen=True)
class StepEstimate:
    """One training step of one network at one patch and batch size.

    Attributes:
        parameters: trainable parameters.
        parameter_bytes: bytes of those parameters (the weights alone).
        activation_bytes: bytes of the tensors the forward pass keeps for backward (counted once per
            storage, the parameters excluded) plus the logits the loss reads.
        forward_macs: multiply-adds of the forward pass (convolutions, matrix products, attention;
            elementwise operations are not counted).
    """

    parameters: int
    parameter_bytes: int
    activation_bytes: int
    forward_macs: int

    def training_bytes(self, optimizer: str = "adamw", overhead_bytes: int = STEP_OVERHEAD_BYTES) -> int:
        """Peak bytes of one step: weights, gradients and the optimiser's state per parameter,
        :data:`BACKWARD_PEAK_PER_ACTIVATION_BYTE` times the activations, and ``overhead_bytes``
        (default :data:`STEP_OVERHEAD_BYTES`; 0 for the tensors alone).

        Raises:
            ValueError: an optimiser not in :data:`OPTIMIZER_STATES`.
        """
        if optimizer not in OPTIMIZER_STATES:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        per_parameter_tensors = 2 + OPTIMIZER_STATES[optimizer]
        activation_peak = BACKWARD_PEAK_PER_ACTIVATION_BYTE * self.activation_bytes
        return self.parameter_bytes * per_parameter_tensors + activation_peak + overhead_bytes

    @property
    def step_macs(self) -> int:
        """Multiply-adds of forward and backward."""
        return STEP_MACS_PER_FORWARD_MAC * self.forward_macs


def estimate_step(spec: dict[str, Any], batch_size: int, deep_supervision: bool | None = None) -> StepEstimate:
    """Estimate one training step of the network ``spec`` describes.

    Activations are the tensors autograd saves for backward, seen through
    ``torch.autograd.graph.saved_tensors_hooks`` during one forward pass: the memory a step holds at
    the end of its forward pass (within a few percent of a profiled CPU step). The pass runs on fake
    CPU tensors (``FakeTensorMode``) rather than meta ones, for two reasons: PyTorch picks kernels by
    device, and on the meta device ``scaled_dot_product_attention`` takes the math kernel, which keeps
    the whole attention matrix where CPU and CUDA run a fused kernel that does not; and
    ``torch.autocast`` refuses the meta device (IACNN's affinity attention enters it). Activations
    are counted in float32, as on the CPU; mixed precision on CUDA keeps most of them in half.

    Args:
        spec: the network, as a model file or a training plan stores it: ``{"name", "spatial_dims",
            "in_channels", "out_channels", "patch_size", "clinical_features", "options"}`` (see
            :func:`AttentionSegLib.models.build_from_spec`).
        batch_size: patches per step.
        deep_supervision: switch the network's auxiliary outputs on or off; ``None`` keeps the
            spec's option.

    Raises:
        ValueError: a batch size below 1, or a spec the registry refuses.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    spec = _with_deep_supervision(spec, deep_supervision)
    network = build_without_weights(spec).train()
    trainable = [p for p in network.parameters() if p.requires_grad]
    saved_bytes: dict[int, int] = {}
    with FakeTensorMode(allow_non_fake_inputs=True):
        state = {
            name: torch.empty(tensor.shape, dtype=tensor.dtype).requires_grad_(tensor.requires_grad)
            for name, tensor in (*network.named_parameters(), *network.named_buffers())
        }
        resident = {_storage_key(tensor) for tensor in state.values()}
        inputs = _fake_inputs(spec, batch_size)

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            key = _storage_key(tensor)
            if key not in resident:
                saved_bytes[key] = tensor.untyped_storage().nbytes()
            return tensor

        counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
        with counter, torch.autograd.graph.saved_tensors_hooks(keep, _unchanged):
            outputs = torch.func.functional_call(network, state, inputs)
        for logits in tree_leaves(outputs):
            saved_bytes[_storage_key(logits)] = logits.untyped_storage().nbytes()
    return StepEstimate(
        parameters=sum(p.numel() for p in trainable),
        parameter_bytes=sum(p.numel() * p.element_size() for p in trainable),
        activation_bytes=sum(saved_bytes.values()),
        forward_macs=counter.get_total_flops() // 2,
    )


def fits(spec: dict[str, Any], batch_size: int, budget_bytes: int, optimizer: str = "adamw") -> bool:
    """Whether one training step of ``spec`` at ``batch_size`` fits in ``budget_bytes`` (see
    :meth:`StepEstimate.training_bytes`)."""
    return estimate_step(spec, batch_size).training_bytes(optimizer) <= budget_bytes


def _with_deep_supervision(spec: dict[str, Any], deep_supervision: bool | None) -> dict[str, Any]:
    """The spec with deep supervision set; switching it off leaves a network without it untouched."""
    if deep_supervision is None:
        return spec
    options = dict(spec.get("options", {}))
    if deep_supervision or "deep_supervision" in options:
        options["deep_supervision"] = deep_supervision
    return {**spec, "options": options}


def build_without_weights(spec: dict[str, Any]) -> nn.Module:
    """The network on the meta device; on the CPU when its constructor reads tensor values
    (MONAI's Swin Transformer computes its drop-path rates with ``.item()``)."""
    from AttentionSegLib.models import build_from_spec

    try:
        with torch.device("meta"):
            return build_from_spec(spec)
    except (RuntimeError, NotImplementedError):
        return build_from_spec(spec)


def _fake_inputs(spec: dict[str, Any], batch_size: int) -> tuple[torch.Tensor, ...]:
    """(B, C, *patch), and (B, F) clinical features when the network takes them."""
    image = torch.empty(batch_size, spec["in_channels"], *spec["patch_size"])
    clinical_features = spec.get("clinical_features", 0)
    return (image, torch.empty(batch_size, clinical_features)) if clinical_features else (image,)


def _storage_key(tensor: torch.Tensor) -> int:
    """Identifies the memory behind a tensor, so views and tensors saved twice count once."""
    return tensor.untyped_storage()._cdata


def _unchanged(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _fused_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


# PyTorch's flop counter knows the CUDA attention kernels, not the CPU one the fake pass runs.
_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _fused_attention_flops}


def time_cpu_step(spec: dict[str, Any], batch_size: int = 2, steps: int = 3) -> float:
    """Seconds of one real training step (forward, backward, AdamW update) of the network ``spec``
    describes on the CPU with the present threads: the fastest of ``steps`` after one warm-up step
    (kernel selection).
    The loss is the outputs' mean: its cost is negligible, the gradient flows through every layer."""
    from AttentionSegLib.models import build_from_spec

    torch.manual_seed(0)
    network = build_from_spec(spec).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-6)
    inputs = _fake_inputs(spec, batch_size)
    inputs = tuple(torch.randn(tensor.shape) for tensor in inputs)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        outputs = network(*inputs)
        loss = sum(output.float().mean() for output in tree_leaves(outputs) if torch.is_tensor(output))
        loss.backward()
        optimizer.step()

    step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)  # the least disturbed by other work on the machine
