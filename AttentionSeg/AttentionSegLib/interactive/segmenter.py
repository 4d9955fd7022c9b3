"""An interactive network run on windows that follow one object.

The window (the network's patch) is centred on the object: on the first click, then on the box
around the current mask, the clicks and the box prompt. A structure larger than one window is
followed along its border: wherever the predicted mask reaches a face of the window and the image
goes on beyond it, another window is run half a patch further that way, with the mask so far as its
previous mask (up to ``max_windows``). Windows after the first only add territory the earlier ones
did not cover, so a negative click near the centre is never undone by a neighbour. This keeps the
cost of a click bounded by a few forward passes whatever the volume's size (a coarse whole-image
pass, the other option, would cost a resampling of the volume at every click).

:class:`ObjectSegmenter` works on one grid (voxel indices, array order): the model's own in
training, the user's image in a session. :class:`NetworkWindow` runs the network on one window of
that grid, resampling the crop and its prompts to the model's spacing and the answer back when the
grids differ (clicks are balls in mm on the model's grid, as in training).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from AttentionSegLib.data.preprocessing import resample_array
from AttentionSegLib.inference.window import WindowSegmenter
from AttentionSegLib.interactive.prompts import ObjectPrompts, PromptEncoding, encode_prompts
from AttentionSegLib.interactive.robot import bounding_box

__all__ = ["ObjectSegmenter", "NetworkWindow", "window_around", "object_center"]


def window_around(center: Sequence[float], patch: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    """The patch-sized region centred on ``center``, moved inside the image (smaller where the
    image is smaller than the patch)."""
    region = []
    for c, p, n in zip(center, patch, shape):
        start = int(round(c - p / 2))
        start = min(max(start, 0), max(n - p, 0))
        region.append(slice(start, min(start + p, n)))
    return tuple(region)


def object_center(prompts: ObjectPrompts, shape: Sequence[int]) -> np.ndarray:
    """Where the window goes: the centre of the box around the current mask, the positive clicks
    and the box prompt; the last click when there is nothing else; the image centre otherwise."""
    corners = []
    if prompts.previous_mask is not None:
        box = bounding_box(prompts.previous_mask)
        if box is not None:
            corners += [box[0], tuple(v - 1 for v in box[1])]
    corners += list(prompts.positive)
    if prompts.box is not None:
        corners += [prompts.box[0], tuple(v - 1 for v in prompts.box[1])]
    if not corners and prompts.negative:
        corners = [prompts.negative[-1]]
    if not corners:
        return (np.asarray(shape) - 1) / 2.0
    points = np.asarray(corners, dtype=float)
    return (points.min(axis=0) + points.max(axis=0)) / 2.0


class NetworkWindow:
    """The interactive network on one crop: ``window(crop, prompts, crop_spacing)`` -> the object's
    mask on the crop (bool).

    Args:
        network: image channels + prompt channels in; eval mode, on ``device``.
        patch_size: its window on the model's grid (array order).
        encoding: how prompts are drawn.
        model_spacing: mm of the model's grid.
        sigmoid: one sigmoid output rather than a softmax over (background, object).
        mirror_axes: flip test-time augmentation axes (empty for none: a click should answer fast).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        patch_size: Sequence[int],
        encoding: PromptEncoding,
        model_spacing: Sequence[float],
        sigmoid: bool = False,
        mirror_axes: Sequence[int] = (),
        device: torch.device | str = "cpu",
    ) -> None:
        self.patch_size = tuple(int(v) for v in patch_size)
        self.encoding, self.model_spacing = encoding, tuple(float(v) for v in model_spacing)
        self.windows = WindowSegmenter(network, self.patch_size, overlap=0.0, mirror_axes=mirror_axes, sigmoid=sigmoid)
        self.device = torch.device(device)

    def extent(self, spacing: Sequence[float]) -> tuple[int, ...]:
        """The window's size in voxels of a grid of ``spacing``: the patch in mm, rounded down so
        that the crop, resampled to the model's spacing, fits one window."""
        return tuple(
            max(1, int(np.floor(p * t / s + 1e-6))) for p, t, s in zip(self.patch_size, self.model_spacing, spacing)
        )

    @torch.no_grad()
    def __call__(self, crop: np.ndarray, prompts: ObjectPrompts, spacing: Sequence[float]) -> np.ndarray:
        shape = crop.shape[1:]
        ratio = np.asarray(spacing, dtype=float) / np.asarray(self.model_spacing)
        if np.allclose(ratio, 1.0, atol=1e-3):
            image, model_prompts = crop, prompts
        else:
            image, _ = resample_array(crop, tuple(spacing), self.model_spacing)
            model_prompts = _resampled_prompts(prompts, shape, image.shape[1:])
        channels = encode_prompts(image.shape[1:], self.model_spacing, model_prompts, self.encoding)
        inputs = torch.from_numpy(np.concatenate([image, channels]).astype(np.float32)[None]).to(self.device)
        logits = self.windows.one_window_logits(inputs)
        return self.windows.classes(logits, shape).astype(bool)


def _resampled_prompts(prompts: ObjectPrompts, shape, new_shape) -> ObjectPrompts:
    """``prompts`` of a grid of ``shape`` on the same field of view sampled as ``new_shape`` (the
    voxel centres' mapping of :func:`~AttentionSegLib.data.preprocessing.resample_array`)."""
    scale = np.asarray(new_shape, dtype=float) / np.asarray(shape)
    point = lambda p: tuple(int(v) for v in np.round((np.asarray(p) + 0.5) * scale - 0.5))  # noqa: E731
    box = None
    if prompts.box is not None:
        start = tuple(int(v) for v in np.floor(np.asarray(prompts.box[0]) * scale))
        stop = tuple(int(v) for v in np.ceil(np.asarray(prompts.box[1]) * scale))
        box = (start, stop)
    previous = None
    if prompts.previous_mask is not None:
        unit = (1.0,) * len(shape)  # the spacings only matter through the shapes here
        mask = prompts.previous_mask[None].astype(np.uint8)
        previous = resample_array(mask, unit, unit, is_label=True, shape=tuple(new_shape))[0][0].astype(bool)
    return ObjectPrompts([point(p) for p in prompts.positive], [point(p) for p in prompts.negative], box, previous)


class ObjectSegmenter:
    """One object's mask from the image and the prompts, by windows that follow the object.

    Args:
        window: a :class:`NetworkWindow` (or any ``(crop, prompts, spacing) -> mask`` with an
            ``extent(spacing)``).
        spacing: mm of the grid the images and prompts are on.
        max_windows: windows a prediction may take when the object goes beyond the first.
    """

    def __init__(self, window: NetworkWindow, spacing: Sequence[float], max_windows: int = 8) -> None:
        self.window, self.spacing = window, tuple(float(v) for v in spacing)
        self.extent = window.extent(self.spacing)
        self.max_windows = max_windows

    def predict(self, image: np.ndarray, prompts: ObjectPrompts) -> tuple[tuple[slice, ...], np.ndarray]:
        """``(region, mask)``: the region of the grid the prediction covers and the object's new
        mask there (bool). Outside the region the previous mask stands.

        Args:
            image: (C, *grid) float32, normalised as the network was trained.
            prompts: the object's prompts on the grid (``previous_mask`` of the grid's shape or None).
        """
        shape = image.shape[1:]
        previous = prompts.previous_mask if prompts.previous_mask is not None else np.zeros(shape, dtype=bool)
        current = previous.astype(bool).copy()
        covered = np.zeros(shape, dtype=bool)
        pending = [window_around(object_center(prompts, shape), self.extent, shape)]
        seen: set[tuple[int, ...]] = set()
        while pending and len(seen) < self.max_windows:
            region = pending.pop(0)
            key = tuple(r.start for r in region)
            if key in seen:
                continue
            seen.add(key)
            mask = self.window(image[(slice(None), *region)], _crop_prompts(prompts, current, region), self.spacing)
            new = ~covered[region]
            current[region][new] = mask[new]
            covered[region] = True
            pending += self._neighbours(mask, region, shape)
        union = tuple(slice(a, b) for a, b in zip(*bounding_box(covered)))
        return union, current[union]

    def _neighbours(self, mask: np.ndarray, region: tuple[slice, ...], shape) -> list[tuple[slice, ...]]:
        """Windows half a window beyond each face of ``region`` that the mask reaches, where the image goes on."""
        found = []
        center = np.asarray([(r.start + r.stop) / 2.0 for r in region])
        for axis, r in enumerate(region):
            for side, at_edge in ((0, r.start == 0), (-1, r.stop == shape[axis])):
                if at_edge or not np.take(mask, [side], axis=axis).any():
                    continue
                moved = center.copy()
                moved[axis] += (-1 if side == 0 else 1) * self.extent[axis] / 2
                found.append(window_around(moved, self.extent, shape))
        return found


def _crop_prompts(prompts: ObjectPrompts, mask: np.ndarray, region: tuple[slice, ...]) -> ObjectPrompts:
    """The prompts seen from inside ``region`` (indices shifted; clicks outside it still draw the
    part of their ball inside), with ``mask`` as the previous mask."""
    offset = np.asarray([r.start for r in region])
    shift = lambda point: tuple(int(v) for v in np.asarray(point) - offset)  # noqa: E731
    box = None
    if prompts.box is not None:
        box = (shift(prompts.box[0]), shift(prompts.box[1]))
    return ObjectPrompts(
        positive=[shift(p) for p in prompts.positive],
        negative=[shift(p) for p in prompts.negative],
        box=box,
        previous_mask=mask[region],
    )
