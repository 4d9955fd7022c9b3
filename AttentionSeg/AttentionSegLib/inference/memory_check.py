"""Will this segmentation fit? The memory it needs, estimated before any work and compared with
what is free, so that a too-large image is refused in one line with the figures instead of the
kernel (or CUDA) killing the run half-way.

What a segmentation holds at its peak (see :meth:`Predictor.predict`):

- the input as read (its own type) and, while it is resampled, a float32 copy of it;
- the image on the model's grid (float32, C channels), twice while it is normalised;
- the blended logits on the model's grid (float32, K classes) and MONAI's count map (one float32
  channel), where the windows are stitched;
- the windows of one forward pass (the network's activations, estimated by
  :func:`AttentionSegLib.models.memory.estimate_step` with gradients off: an upper bound) and
  the weights;
- the class map and the label map on the input grid (one byte each).

On CUDA the model-grid image, the logits and the windows live on the GPU; when those do not fit
the free GPU memory but the windows alone do, the logits are stitched in host memory instead
(MONAI's ``device``), which is slower but finishes. On the CPU, when the logits do not fit beside
the rest, the image is segmented in slabs along its first axis (each with a halo of one window on
both sides, so that every window a slab keeps saw the same context), the logits of one slab at a
time, each decided into classes before the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.io.image import Image
from AttentionSegLib.resources import available_memory_bytes, format_bytes

__all__ = ["MemoryEstimate", "estimate_segmentation_memory", "check_segmentation_memory", "free_device_memory"]

# Below this share of the free memory, the windows' activations are not estimated (a network
# forward pass on fake tensors costs about a second): the data arrays dominate by far.
_QUICK_SHARE = 0.5


@dataclass
class MemoryEstimate:
    """Peak bytes on the host and on the device (0 on the CPU), and what they are made of."""

    host_bytes: int
    device_bytes: int
    model_grid: tuple[int, ...]
    parts: dict[str, int] = field(default_factory=dict)
    stitch_on_host: bool = False
    slabs: int = 1  # > 1: the logits are made and decided slab by slab along the first axis
    model_image_bytes: int = 0  # the image on the model's grid (float32, all channels)

    def describe(self) -> str:
        shown = ", ".join(f"{name} {format_bytes(size)}" for name, size in self.parts.items() if size)
        grid = "x".join(str(n) for n in reversed(self.model_grid))
        return f"{shown}; the model's grid is {grid} voxels"


def _model_grid(image: Image, target_spacing) -> tuple[int, ...]:
    """The shape the predictor resamples to (the same rounding as ``resample_array``)."""
    return tuple(
        max(1, int(round(n * s / t))) for n, s, t in zip(image.spatial_shape, image.spacing_array_order, target_spacing)
    )


def free_device_memory(device) -> int | None:
    """Free bytes on a CUDA device, None on the CPU."""
    if getattr(device, "type", str(device)) != "cuda":
        return None
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def _window_bytes(predictor) -> int:
    """Activations and weights of one forward pass over a batch of windows (cached per predictor)."""
    cached = getattr(predictor, "_window_bytes", None)
    if cached is not None:
        return cached
    from AttentionSegLib.models.memory import estimate_step

    # Test-time augmentation runs the mirrored copies one after another: one batch at a time.
    estimate = estimate_step(predictor.model_file.network, predictor.sw_batch_size)
    value = int(estimate.activation_bytes + estimate.parameter_bytes)
    predictor._window_bytes = value
    return value


def estimate_segmentation_memory(predictor, image: Image, with_windows: bool = True) -> MemoryEstimate:
    """The peak memory of ``predictor.predict`` on ``image`` (all channels stacked)."""
    n_input = int(np.prod(image.spatial_shape, dtype=np.int64))
    channels = image.n_channels
    grid = _model_grid(image, predictor.target_spacing)
    n_model = int(np.prod(grid, dtype=np.int64))
    classes = 1 if predictor.sigmoid else len(predictor.label_values)
    input_bytes = n_input * channels * image.array.itemsize
    resampling = n_input * channels * 4 + 2 * n_model * channels * 4
    stitching = n_model * (classes + 1) * 4
    model_image = n_model * channels * 4
    outputs = 2 * n_input
    windows = _window_bytes(predictor) if with_windows else 0
    on_cuda = getattr(predictor.device, "type", "cpu") == "cuda"
    parts = {"input": input_bytes, "resampling": resampling, "logits": stitching, "windows": windows, "labels": outputs}
    if not on_cuda:
        host = input_bytes + max(resampling, model_image + stitching + windows) + outputs
        return MemoryEstimate(host, 0, grid, parts, model_image_bytes=model_image)
    host = input_bytes + resampling + outputs
    device = model_image + stitching + windows
    return MemoryEstimate(host, device, grid, parts, model_image_bytes=model_image)


def _plan_slabs(estimate: MemoryEstimate, predictor, host_free: int) -> None:
    """On the CPU, the fewest slabs along the first axis (each with a halo of one window) whose
    logits fit beside the rest; the estimate is updated when some number fits."""
    if len(estimate.model_grid) != 3:
        return
    rows, halo = estimate.model_grid[0], int(predictor.patch[0])
    parts = estimate.parts
    model_image = estimate.model_image_bytes
    for slabs in range(2, max(2, rows // max(2 * halo, 1)) + 1):
        share = min(1.0, (rows / slabs + 2 * halo + 2) / rows)
        host = parts["input"] + max(parts["resampling"], model_image + int(parts["logits"] * share) + parts["windows"])
        host += parts["labels"]
        if host <= host_free:
            estimate.slabs, estimate.host_bytes = slabs, host
            estimate.parts["logits"] = int(parts["logits"] * share)
            return


def check_segmentation_memory(
    predictor,
    image: Image,
    what: str,
    available_host: int | None = None,
    available_device: int | None = None,
) -> MemoryEstimate:
    """Refuse a segmentation that will not fit, in one line with the figures and what to change.
    On CUDA, sets ``stitch_on_host`` when only the windows fit the GPU.

    Raises:
        AttentionSegError: naming ``what``, the memory needed and what is free.
    """
    host_free = available_memory_bytes() if available_host is None else available_host
    quick = estimate_segmentation_memory(predictor, image, with_windows=False)
    device_free = free_device_memory(predictor.device) if available_device is None else available_device
    if quick.host_bytes < _QUICK_SHARE * host_free and (
        device_free is None or quick.device_bytes < _QUICK_SHARE * device_free
    ):
        return quick
    estimate = estimate_segmentation_memory(predictor, image)
    if device_free is not None and estimate.device_bytes > device_free:
        windows_only = estimate.parts["windows"] + int(np.prod(estimate.model_grid)) * image.n_channels * 4
        if windows_only <= device_free:
            # The logits are stitched in host memory: they move from the device's bill to the host's.
            estimate.stitch_on_host = True
            estimate.host_bytes += estimate.parts["logits"]
            estimate.device_bytes = windows_only
        else:
            raise AttentionSegError(
                f"{what}: segmenting needs about {format_bytes(estimate.device_bytes)} of GPU memory "
                f"({estimate.describe()}), {format_bytes(device_free)} are free: use --device cpu, or a "
                "smaller window batch"
            )
    if estimate.host_bytes > host_free and not estimate.device_bytes:
        _plan_slabs(estimate, predictor, host_free)
    if estimate.host_bytes > host_free:
        raise AttentionSegError(
            f"{what}: segmenting needs about {format_bytes(estimate.host_bytes)} of memory "
            f"({estimate.describe()}), {format_bytes(host_free)} are available: segment a crop of the "
            "image, close other programs, or use a machine with more memory"
        )
    return estimate
