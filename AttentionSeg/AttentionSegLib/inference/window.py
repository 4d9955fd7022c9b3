"""The sliding-window segmenter: the one inference path, used by the predictor and by the trainer's
validation.

An image on the model's grid, (1, C, *grid), is covered by windows of the patch size (MONAI's
``sliding_window_inference``: windows overlapping by ``overlap``, ``windows_per_batch`` per
forward pass, blended with a Gaussian weight that trusts window centres more than borders). Each
window yields logits in float32, under mixed precision on CUDA; with flip test-time augmentation
they are averaged over the mirrored copies along the axes the training mirrored. A clinical
vector (1, F) is repeated for every window of a batch.

Logits rather than probabilities are blended (and later resampled), as nnU-Net does: the argmax
is the same kind of decision, and no softmax runs over every voxel of every window.
:func:`logits_to_classes` makes the decision: argmax over the channels, or logit > 0
(probability > 0.5) for a single sigmoid output.

Example:
    >>> segmenter = WindowSegmenter(network, (16, 16, 16), overlap=0.5, windows_per_batch=4)
    >>> logits = segmenter.logits(image)  # (C, *grid)
    >>> classes = logits_to_classes(logits, logits.shape[1:])  # uint8 class indices
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from AttentionSegLib.devices import autocast
from AttentionSegLib.errors import AttentionSegError

__all__ = ["PredictionCancelled", "WindowSegmenter", "logits_to_classes", "slab_rows", "window_count"]


class PredictionCancelled(AttentionSegError):
    """``cancel()`` returned true between two batches of windows."""


def window_count(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's sliding window visits on ``shape`` (after padding to the patch)."""
    from monai.data.utils import dense_patch_slices

    shape = [max(s, p) for s, p in zip(shape, patch)]
    interval = [p if s == p else max(int(p * (1 - overlap)), 1) for s, p in zip(shape, patch)]
    return len(dense_patch_slices(shape, patch, interval))


class WindowSegmenter:
    """Logits of a network over a whole image, window by window.

    Args:
        network: takes (B, C, *patch) windows (and a (B, F) clinical vector when given) and returns
            (B, K, *patch) logits; the caller puts it in eval mode and on the image's device.
        patch_size: the window, array order of the grid.
        overlap: fraction of the window that neighbouring windows share (0 <= overlap < 1).
        windows_per_batch: windows per forward pass.
        mirror_axes: grid axes (array order, no batch or channel axis) to mirror for flip
            test-time augmentation: 2^len passes per window; empty for none.
        sigmoid: one sigmoid output (threshold 0.5) rather than a softmax over classes.
    """

    def __init__(
        self,
        network: nn.Module,
        patch_size: Sequence[int],
        overlap: float = 0.5,
        windows_per_batch: int = 4,
        mirror_axes: Sequence[int] = (),
        sigmoid: bool = False,
    ) -> None:
        self.network = network
        self.patch_size = tuple(int(v) for v in patch_size)
        self.overlap, self.windows_per_batch = overlap, windows_per_batch
        self.mirror_axes = tuple(int(axis) for axis in mirror_axes)
        self.sigmoid = sigmoid

    def window_function(
        self, clinical: torch.Tensor | None, spread: bool = False
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Window batch -> logits (float32), averaged over the mirrored copies; with ``spread``, one
        more channel after them: the copies' disagreement
        (:func:`~AttentionSegLib.inference.uncertainty.mirror_spread`), blended like the logits."""
        from AttentionSegLib.inference.uncertainty import mirror_spread

        spatial_axes = [2 + axis for axis in self.mirror_axes]
        flips = [axes for n in range(len(spatial_axes) + 1) for axes in itertools.combinations(spatial_axes, n)]

        def run(window: torch.Tensor) -> torch.Tensor:
            arguments = (clinical.to(window.device).expand(window.shape[0], -1),) if clinical is not None else ()
            copies = []
            total = None
            for axes in flips:
                flipped = window.flip(axes) if axes else window
                with autocast(window.device):
                    logits = self.network(flipped, *arguments)
                logits = logits.float()
                logits = logits.flip(axes) if axes else logits
                total = logits if total is None else total + logits
                if spread:
                    copies.append(logits)
            mean = total / len(flips)
            if not spread:
                return mean
            return torch.cat([mean, mirror_spread(copies, self.sigmoid)[:, None]], dim=1)

        return run

    @torch.no_grad()
    def logits(
        self,
        image: torch.Tensor,
        clinical: torch.Tensor | None = None,
        progress: Callable[[float], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        output_device: torch.device | None = None,
        spread: bool = False,
    ) -> torch.Tensor:
        """(K, *grid) logits of a (1, C, *grid) image, blended over overlapping windows (and with
        ``spread``, the mirrored copies' disagreement as a last channel, see :meth:`window_function`).

        ``progress(fraction)`` is called after every batch of windows and ``cancel()`` asked
        before each. ``output_device`` stitches the logits there (the host, when they do not fit
        the GPU beside the windows); default: the image's device.

        Raises:
            PredictionCancelled: ``cancel()`` returned true.
        """
        from monai.inferers import sliding_window_inference

        window_function = self.window_function(clinical, spread)
        windows = window_count(image.shape[2:], self.patch_size, self.overlap)
        total = math.ceil(windows / self.windows_per_batch)
        done = 0

        def predictor(window: torch.Tensor) -> torch.Tensor:
            nonlocal done
            if cancel is not None and cancel():
                raise PredictionCancelled("segmentation cancelled")
            output = window_function(window)
            done += 1
            if progress is not None:
                progress(min(done / total, 1.0))
            return output

        return sliding_window_inference(
            image,
            self.patch_size,
            sw_batch_size=self.windows_per_batch,
            predictor=predictor,
            overlap=self.overlap,
            mode="gaussian",
            sw_device=image.device,
            device=output_device or image.device,
        )[0]

    @torch.no_grad()
    def one_window_logits(self, image: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        """(K, *grid) logits of a (1, C, *grid) image no larger than the window: one forward pass
        (MONAI pads the image to the window and crops the output back; nothing to blend)."""
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(image, self.patch_size, 1, self.window_function(clinical), overlap=0.0)[0]

    def classes(self, logits: torch.Tensor, shape: Sequence[int] | None = None) -> np.ndarray:
        """Class indices (uint8) from (K, *grid) logits, on a grid of ``shape`` (default: the
        logits' own grid); see :func:`logits_to_classes`."""
        return logits_to_classes(logits, logits.shape[1:] if shape is None else shape, self.sigmoid)


def _argmax_channels(block: torch.Tensor) -> torch.Tensor:
    """uint8 argmax over dim 1 of (n, C, ...), first maximum on ties. A running maximum over the
    channels: PyTorch's argmax over a short dimension is about 20x slower on the CPU."""
    best = block[:, 0].clone()
    classes = torch.zeros(best.shape, dtype=torch.uint8, device=block.device)
    for channel in range(1, block.shape[1]):
        classes.masked_fill_(block[:, channel] > best, channel)
        torch.maximum(best, block[:, channel], out=best)
    return classes


def logits_to_classes(
    logits: torch.Tensor,
    shape: Sequence[int],
    sigmoid: bool = False,
    slab: int = 8,
    rows: tuple[int, int] | None = None,
    source_start: int = 0,
    source_total: int | None = None,
) -> np.ndarray:
    """Class indices (uint8) on a grid of ``shape`` from (C, *grid) logits: linear interpolation
    (as ``F.interpolate(..., align_corners=False)``), then argmax, or > 0 (probability > 0.5) for
    one sigmoid channel.

    Volumes are done ``slab`` output slices at a time (linear along the first axis, bilinear in
    plane: trilinear interpolation is separable), so the logits are never held at full
    resolution: a 4-class 512x512x300 volume would need 1.26 GB for them.

    For a segmentation done in slabs along the first axis: ``rows`` (start, stop) are the output
    slices to compute (default all), and ``logits`` holds the model-grid slices from
    ``source_start`` of ``source_total`` (default: all of them), which must include every slice
    those output slices interpolate from.
    """
    shape = tuple(int(v) for v in shape)
    source = tuple(logits.shape[1:])

    def decide(block: torch.Tensor) -> torch.Tensor:  # (n, C, ...) -> (n, ...)
        return (block[:, 0] > 0).to(torch.uint8) if sigmoid else _argmax_channels(block)

    if len(shape) == 2:
        block = logits[None]
        if source != shape:
            block = F.interpolate(block, size=shape, mode="bilinear", align_corners=False)
        return decide(block)[0].cpu().numpy()
    total = source[0] if source_total is None else int(source_total)
    first, last = rows if rows is not None else (0, shape[0])
    classes = np.empty((last - first, *shape[1:]), dtype=np.uint8)
    scale = total / shape[0]
    for start in range(first, last, slab):
        stop = min(start + slab, last)
        if total == shape[0]:
            block = logits[:, start - source_start : stop - source_start]
        else:
            position = ((torch.arange(start, stop, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
            lower = position.floor().long().clamp(max=total - 1)
            upper = (lower + 1).clamp(max=total - 1)
            weight = (position - lower).to(logits.dtype).to(logits.device)[None, :, None, None]
            block = logits[:, lower - source_start] * (1 - weight) + logits[:, upper - source_start] * weight
        block = block.movedim(1, 0).contiguous()  # (n, C, h, w)
        if source[1:] != shape[1:]:
            block = F.interpolate(block, size=shape[1:], mode="bilinear", align_corners=False)
        classes[start - first : stop - first] = decide(block).cpu().numpy()
    return classes


def slab_rows(model_rows: int, output_rows: int, slabs: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Split a segmentation along the first axis into ``slabs``: for each, the output slices it
    decides and the model-grid slices their interpolation reads (``[lower, upper]`` of each)."""
    edges = np.linspace(0, model_rows, slabs + 1).round().astype(int)
    scale = model_rows / output_rows
    position = np.clip((np.arange(output_rows) + 0.5) * scale - 0.5, 0, None)
    lower = np.minimum(np.floor(position).astype(int), model_rows - 1)
    parts = []
    for a, b in zip(edges[:-1], edges[1:]):
        chosen = np.nonzero((lower >= a) & (lower < b))[0]
        if chosen.size:
            first, last = int(chosen[0]), int(chosen[-1]) + 1
            parts.append(((first, last), (int(lower[first]), min(int(lower[last - 1]) + 2, model_rows))))
    return parts
