"""An interactive network run on windows that follow one object.

The window (the network's patch) is centred on the object: on the first click, then on the box
around the current mask, the clicks and the box prompt. A structure larger than one window is
followed along its border: wherever the predicted mask reaches a face of the window and the image
goes on beyond it, another window is run half a patch further that way, with the mask so far as its
previous mask (up to ``max_windows``). Windows after the first only add territory the earlier ones
did not cover, so a negative click near the centre is never undone by a neighbour. This keeps the
cost of a click bounded by a few forward passes whatever the volume's size (a coarse whole-image
pass, the other option, would cost a resampling of the volume at every click).

A model that works at the image's own spacing (the promptable generalist; its model file gives
zoom levels instead of a target spacing) zooms out instead: the window first covers the object at
the smallest zoom level that holds the mask so far and the prompts (the rule of training,
:func:`object_zoom`), and while the predicted mask
reaches a face of the window where the image goes on, the same window is run again at the next
level (twice the spacing, twice the field of view). One to three forward passes of one window
whatever the object's size; ``bench/bench_large_objects.py`` measures it against following.

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
from AttentionSegLib.inference.uncertainty import normalized_entropy
from AttentionSegLib.inference.window import WindowSegmenter
from AttentionSegLib.interactive.prompts import ObjectPrompts, PromptEncoding, encode_prompts
from AttentionSegLib.interactive.robot import bounding_box

__all__ = [
    "ObjectSegmenter",
    "NetworkWindow",
    "window_around",
    "object_center",
    "object_zoom",
    "zoomed_spacing",
    "ZOOM_LEVELS",
]

# The zoom levels of a model that works at the image's spacing: windows at 1, 2, 4 or 8 times it.
ZOOM_LEVELS = (1, 2, 4, 8)
_OBJECT_FILL = 0.8  # the whole object fills at most this much of the window at its zoom level


def object_zoom(extent_voxels: Sequence[float], patch: Sequence[int], levels: Sequence[int] = ZOOM_LEVELS) -> int:
    """The smallest zoom level at which an object of ``extent_voxels`` (its box, voxels of the
    image) fills at most ``_OBJECT_FILL`` of the window along every axis (the coarsest level when
    none does). The one rule of training (the generalist's samples) and inference."""
    for level in levels:
        if all(e <= _OBJECT_FILL * p * level for e, p in zip(extent_voxels, patch)):
            return int(level)
    return int(levels[-1])


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
    corners = _object_corners(prompts, prompts.previous_mask)
    if not corners and prompts.negative:
        corners = [prompts.negative[-1]]
    if not corners:
        return (np.asarray(shape) - 1) / 2.0
    points = np.asarray(corners, dtype=float)
    return (points.min(axis=0) + points.max(axis=0)) / 2.0


def zoomed_spacing(
    spacing: Sequence[float], shape: Sequence[int], level: float, patch: Sequence[int]
) -> tuple[float, ...]:
    """The working spacing of zoom ``level`` on a grid of ``spacing`` and ``shape``: the spacing
    times the level, except along an axis with few voxels (3 slices of a CT), which keeps at least
    a quarter of the patch's voxels (or all of its own) in the window. The one rule of training
    and inference."""
    caps = [max(1.0, n / min(n, p / 4)) for n, p in zip(shape, patch)]
    return tuple(float(s * min(level, cap)) for s, cap in zip(spacing, caps))


class NetworkWindow:
    """The interactive network on one crop: ``window(crop, prompts, crop_spacing)`` -> the object's
    mask on the crop (bool).

    Args:
        network: image channels + prompt channels in; eval mode, on ``device``.
        patch_size: its window on the model's grid (array order).
        encoding: how prompts are drawn.
        model_spacing: mm of the model's grid; None for a model that works at the grid's own
            spacing (each call then says which, see ``working_spacing``).
        sigmoid: one sigmoid output rather than a softmax over (background, object).
        mirror_axes: flip test-time augmentation axes (empty for none: a click should answer fast).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        patch_size: Sequence[int],
        encoding: PromptEncoding,
        model_spacing: Sequence[float] | None,
        sigmoid: bool = False,
        mirror_axes: Sequence[int] = (),
        device: torch.device | str = "cpu",
    ) -> None:
        self.patch_size = tuple(int(v) for v in patch_size)
        self.encoding = encoding
        self.model_spacing = None if model_spacing is None else tuple(float(v) for v in model_spacing)
        self.windows = WindowSegmenter(network, self.patch_size, overlap=0.0, mirror_axes=mirror_axes, sigmoid=sigmoid)
        self.device = torch.device(device)

    def extent(self, spacing: Sequence[float], working_spacing: Sequence[float] | None = None) -> tuple[int, ...]:
        """The window's size in voxels of a grid of ``spacing``: the patch in mm, rounded down so
        that the crop, resampled to the model's spacing (or ``working_spacing``), fits one window."""
        model_spacing = self._working(spacing, working_spacing)
        return tuple(
            max(1, int(np.floor(p * t / s + 1e-6))) for p, t, s in zip(self.patch_size, model_spacing, spacing)
        )

    def _working(self, spacing, working_spacing) -> tuple[float, ...]:
        if working_spacing is not None:
            return tuple(float(v) for v in working_spacing)
        return self.model_spacing if self.model_spacing is not None else tuple(float(v) for v in spacing)

    @torch.no_grad()
    def __call__(
        self,
        crop: np.ndarray,
        prompts: ObjectPrompts,
        spacing: Sequence[float],
        working_spacing: Sequence[float] | None = None,
    ) -> np.ndarray:
        """The object's mask on ``crop`` (grid of ``spacing``), the network run at the model's
        spacing, or at ``working_spacing`` for a model that works at any."""
        shape = crop.shape[1:]
        model_spacing = self._working(spacing, working_spacing)
        ratio = np.asarray(spacing, dtype=float) / np.asarray(model_spacing)
        if np.allclose(ratio, 1.0, atol=1e-3):
            image, model_prompts = crop, prompts
        else:
            image, _ = resample_array(crop, tuple(spacing), model_spacing)
            model_prompts = _resampled_prompts(prompts, shape, image.shape[1:])
        channels = encode_prompts(image.shape[1:], model_spacing, model_prompts, self.encoding)
        inputs = torch.from_numpy(np.concatenate([image, channels]).astype(np.float32)[None]).to(self.device)
        logits = self.windows.one_window_logits(inputs)
        # Kept (on the network's grid, no copy) for the suggested next click; its entropy is only
        # computed when a suggestion is asked for, never on a click's path.
        self.last_logits = logits
        return self.windows.classes(logits, shape).astype(bool)

    @property
    def last_entropy(self) -> np.ndarray | None:
        """The normalised entropy of the last call's object probabilities, on the network's grid."""
        logits = getattr(self, "last_logits", None)
        return None if logits is None else entropy_map(logits, self.windows.sigmoid)


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
        zoom_levels: for a model that works at the grid's own spacing: the window's zoom levels
            (multiples of ``spacing``); the window zooms out instead of following.
    """

    def __init__(
        self,
        window: NetworkWindow,
        spacing: Sequence[float],
        max_windows: int = 8,
        zoom_levels: Sequence[int] | None = None,
    ) -> None:
        self.window, self.spacing = window, tuple(float(v) for v in spacing)
        self.zoom_levels = tuple(int(v) for v in zoom_levels) if zoom_levels else None
        self.extent = window.extent(self.spacing)
        self.max_windows = max_windows
        self.uncertain: list[tuple[tuple[slice, ...], torch.Tensor]] = []  # (region, logits) of the last prediction

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
        self.uncertain = []
        if self.zoom_levels:
            return self._zoomed(image, prompts, current)
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
            self._keep_uncertainty(region)
            new = ~covered[region]
            current[region][new] = mask[new]
            covered[region] = True
            pending += self._neighbours(mask, region, shape)
        union = tuple(slice(a, b) for a, b in zip(*bounding_box(covered)))
        return union, current[union]

    def _zoomed(self, image: np.ndarray, prompts: ObjectPrompts, current: np.ndarray):
        """One window centred on the object, zoomed out until the mask stays inside it."""
        shape = image.shape[1:]
        center = object_center(prompts, shape)
        patch = self.window.patch_size
        first = object_zoom(_prompted_extent(prompts, current), patch, self.zoom_levels)
        levels = [level for level in self.zoom_levels if level >= first]
        for level in levels:
            working = zoomed_spacing(self.spacing, shape, level, patch)
            extent = self.window.extent(self.spacing, working)
            region = window_around(center, extent, shape)
            crop_prompts = _crop_prompts(prompts, current, region)
            mask = self.window(image[(slice(None), *region)], crop_prompts, self.spacing, working)
            if level == levels[-1] or not self._neighbours(mask, region, shape, extent):
                break
        self._keep_uncertainty(region)
        current[region] = mask
        return region, current[region]

    def _keep_uncertainty(self, region: tuple[slice, ...]) -> None:
        logits = getattr(self.window, "last_logits", None)
        if logits is not None:
            self.uncertain.append((region, logits))

    def least_certain(self) -> tuple[tuple[int, ...], float] | None:
        """``(voxel index on the grid, uncertainty 0-1)`` where the last prediction was least sure
        (the entropy of the object's probability, on the network's grid, mapped to the voxel whose
        region it covers): the suggested place for the next click. None before any prediction."""
        best = None
        for region, logits in self.uncertain:
            entropy = entropy_map(logits, self.window.windows.sigmoid)
            flat = int(np.argmax(entropy))
            value = float(entropy.flat[flat])
            if best is None or value > best[1]:
                index = np.unravel_index(flat, entropy.shape)
                sizes = [r.stop - r.start for r in region]
                voxel = tuple(
                    int(r.start + min(n - 1, np.floor((k + 0.5) * n / m)))
                    for r, k, n, m in zip(region, index, sizes, entropy.shape)
                )
                best = (voxel, value)
        return best

    def _neighbours(self, mask: np.ndarray, region: tuple[slice, ...], shape, extent=None) -> list[tuple[slice, ...]]:
        """Windows half a window beyond each face of ``region`` that the mask reaches, where the image goes on."""
        extent = self.extent if extent is None else extent
        found = []
        center = np.asarray([(r.start + r.stop) / 2.0 for r in region])
        for axis, r in enumerate(region):
            for side, at_edge in ((0, r.start == 0), (-1, r.stop == shape[axis])):
                if at_edge or not np.take(mask, [side], axis=axis).any():
                    continue
                moved = center.copy()
                moved[axis] += (-1 if side == 0 else 1) * extent[axis] / 2
                found.append(window_around(moved, extent, shape))
        return found


def entropy_map(logits: torch.Tensor, sigmoid: bool) -> np.ndarray:
    """Normalised entropy (0-1) of a window's (C, ...) logits, as a numpy array on their grid."""
    return normalized_entropy(logits, sigmoid).float().cpu().numpy()


def _object_corners(prompts: ObjectPrompts, mask: np.ndarray | None) -> list[tuple[int, ...]]:
    """The points that bound the object so far (inclusive voxel indices): the corners of the box
    around ``mask``, the positive clicks and the corners of the box prompt."""
    corners = []
    for box in (bounding_box(mask) if mask is not None else None, prompts.box):
        if box is not None:
            corners += [tuple(box[0]), tuple(v - 1 for v in box[1])]
    return corners + list(prompts.positive)


def _prompted_extent(prompts: ObjectPrompts, mask: np.ndarray) -> np.ndarray:
    """The size (voxels, per axis) of the box around the mask so far, the clicks and the box prompt
    (1 for a lone click)."""
    corners = _object_corners(prompts, mask) + list(prompts.negative)
    if not corners:
        return np.ones(mask.ndim)
    points = np.asarray(corners)
    return points.max(axis=0) - points.min(axis=0) + 1


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
