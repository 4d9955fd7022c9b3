"""Clicks with an automatic model: one window of the model around the click, and connected
components.

A positive click runs the model on the window centred on it and adds the connected component of
the object's label under the click (or nearest to it, in mm) to the mask; a negative click removes
the connected part of the mask under it, inside that window. A click can thus only add what the
automatic model finds, and a negative click removes a whole component: the behaviour interactive
models are compared with (``attentionseg interactive-eval`` runs both through one protocol).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.interactive.session import SessionStep

__all__ = ["ComponentClicks", "component_at"]


def component_at(mask: np.ndarray, index: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """The connected component (face connectivity) of ``mask`` holding voxel ``index``, or the one
    nearest to it in mm; all False for an empty mask."""
    components, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    index = tuple(int(v) for v in index)
    under = components[index]
    if under == 0:
        nearest = ndimage.distance_transform_edt(components == 0, sampling=spacing, return_indices=True)[1]
        under = components[tuple(nearest[(slice(None), *index)])]
    return components == under


class ComponentClicks:
    """The automatic model's click tool for one object (label ``value``) on one image.

    Args:
        predictor: a :class:`~AttentionSegLib.inference.predictor.Predictor` of an automatic model.
        images: the image(s) of the case.
        value: the label value of the object.
    """

    def __init__(self, predictor, images, value: int) -> None:
        self.predictor, self.images, self.value = predictor, images, int(value)
        grid = predictor.stack_channels(images)
        self.spacing = tuple(float(v) for v in grid.spacing_array_order)
        self.shape = tuple(grid.spatial_shape)
        self.mask = np.zeros(self.shape, dtype=bool)

    def add_click(self, index: Sequence[int], positive: bool = True) -> SessionStep:
        started = time.perf_counter()
        labels, region = self.predictor.predict_window(self.images, index)
        local = tuple(int(i - r.start) for i, r in zip(index, region))
        if positive:
            self.mask[region] |= component_at(labels == self.value, local, self.spacing)
        else:
            window = self.mask[region]
            if window[local]:
                window &= ~component_at(window, local, self.spacing)
        return SessionStep(region, time.perf_counter() - started)

    def set_box(self, start: Sequence[int], stop: Sequence[int]) -> SessionStep:
        """The model's label inside the box, from the window centred on the box."""
        started = time.perf_counter()
        center = [(a + b - 1) / 2 for a, b in zip(start, stop)]
        labels, region = self.predictor.predict_window(self.images, center)
        box = tuple(slice(max(a, r.start), min(b, r.stop)) for a, b, r in zip(start, stop, region))
        if any(s.stop <= s.start for s in box):
            raise AttentionSegError("the box lies outside the model's window")
        local = tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(box, region))
        self.mask[box] |= labels[local] == self.value
        return SessionStep(region, time.perf_counter() - started)
