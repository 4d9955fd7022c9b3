"""Prompts of one object and their encoding as network input channels.

An interactive network sees the image channel(s) followed by four prompt channels, in this order:
positive clicks, negative clicks, the object's previous mask, and a box (each 0 or 1, empty when
not given). A click is a ball of ``click_radius_mm`` around its voxel, drawn in physical units, so
that an anisotropic volume gets the same prompt size in mm along every axis; the box is filled
(nnInteractive's encoding; DeepEdit draws Gaussians instead, a ball keeps the channel binary like
the mask channel beside it). Clicks and boxes are voxel indices in array order on the grid the
channels are drawn on.

The encoding's parameters travel in the model file (``PromptEncoding.to_dict``), so inference draws
exactly what training drew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from AttentionSegLib.errors import AttentionSegError

__all__ = [
    "PROMPT_CHANNELS",
    "PromptEncoding",
    "ObjectPrompts",
    "encode_prompts",
    "draw_balls",
    "default_click_radius_mm",
    "checked_voxel",
]

PROMPT_CHANNELS = ("positive_clicks", "negative_clicks", "previous_mask", "box")


@dataclass(frozen=True)
class PromptEncoding:
    """How prompts become channels.

    Attributes:
        click_radius_mm: radius of the ball drawn for each click (mm).
        channels: names of the prompt channels, in input order after the image channels.
    """

    click_radius_mm: float
    channels: tuple[str, ...] = PROMPT_CHANNELS

    def __post_init__(self) -> None:
        if not (isinstance(self.click_radius_mm, (int, float)) and self.click_radius_mm > 0):
            raise AttentionSegError(f"click radius must be a positive number of mm, got {self.click_radius_mm!r}")
        if tuple(self.channels) != PROMPT_CHANNELS:
            raise AttentionSegError(f"unknown prompt channels {list(self.channels)}; expected {list(PROMPT_CHANNELS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"click_radius_mm": float(self.click_radius_mm), "channels": list(self.channels), "click_shape": "ball"}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PromptEncoding:
        try:
            return cls(float(values["click_radius_mm"]), tuple(values.get("channels", PROMPT_CHANNELS)))
        except (KeyError, TypeError, ValueError) as error:
            raise AttentionSegError(f"bad prompt encoding {values!r}: {error}") from None


@dataclass
class ObjectPrompts:
    """What the user has said about one object, on one grid (voxel indices, array order).

    Attributes:
        positive, negative: click voxels.
        box: ``(start, stop)`` voxel corners (stop exclusive), or None.
        previous_mask: the object's current mask on the grid (bool), or None (empty).
    """

    positive: list[tuple[int, ...]] = field(default_factory=list)
    negative: list[tuple[int, ...]] = field(default_factory=list)
    box: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    previous_mask: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return not self.positive and not self.negative and self.box is None


def checked_voxel(index: Sequence[float], shape: Sequence[int]) -> tuple[int, ...]:
    """``index`` rounded to a voxel of a grid of ``shape``.

    Raises:
        AttentionSegError: the voxel is outside the grid (or has another number of axes).
    """
    index = tuple(int(round(v)) for v in index)
    if len(index) != len(shape) or any(not 0 <= v < n for v, n in zip(index, shape)):
        raise AttentionSegError(f"the voxel {index} is outside the image {tuple(shape)}")
    return index


def draw_balls(
    shape: Sequence[int], spacing: Sequence[float], points: Sequence[Sequence[float]], radius_mm: float
) -> np.ndarray:
    """A boolean array of ``shape`` with a ball of ``radius_mm`` around each point (voxel indices;
    points outside the array draw the part of their ball inside it). Every point inside the array
    marks at least its own voxel, however coarse the spacing."""
    out = np.zeros(tuple(shape), dtype=bool)
    spacing = np.asarray(spacing, dtype=float)
    half = np.ceil(radius_mm / spacing).astype(int)
    for point in points:
        center = np.round(np.asarray(point, dtype=float)).astype(int)
        low = np.maximum(center - half, 0)
        high = np.minimum(center + half + 1, shape)
        if np.any(high <= low):
            continue
        grids = np.meshgrid(
            *[(np.arange(lo, hi) - c) * s for lo, hi, c, s in zip(low, high, center, spacing)], indexing="ij"
        )
        ball = sum(g**2 for g in grids) <= radius_mm**2
        region = tuple(slice(lo, hi) for lo, hi in zip(low, high))
        out[region] |= ball
        if np.all(center >= 0) and np.all(center < shape):
            out[tuple(center)] = True
    return out


def encode_prompts(
    shape: Sequence[int], spacing: Sequence[float], prompts: ObjectPrompts, encoding: PromptEncoding
) -> np.ndarray:
    """The four prompt channels ``(4, *shape)`` float32 of ``prompts`` on a grid of ``shape`` and
    ``spacing`` (mm, array order).

    Raises:
        AttentionSegError: the previous mask does not have ``shape``.
    """
    shape = tuple(int(v) for v in shape)
    channels = np.zeros((len(PROMPT_CHANNELS), *shape), dtype=np.float32)
    channels[0] = draw_balls(shape, spacing, prompts.positive, encoding.click_radius_mm)
    channels[1] = draw_balls(shape, spacing, prompts.negative, encoding.click_radius_mm)
    if prompts.previous_mask is not None:
        if tuple(prompts.previous_mask.shape) != shape:
            raise AttentionSegError(
                f"the previous mask has shape {prompts.previous_mask.shape}, the prompt grid {shape}"
            )
        channels[2] = prompts.previous_mask
    if prompts.box is not None:
        start, stop = prompts.box
        region = tuple(slice(max(0, int(a)), min(n, int(b))) for a, b, n in zip(start, stop, shape))
        channels[(3, *region)] = 1.0
    return channels


def default_click_radius_mm(target_spacing: Sequence[float]) -> float:
    """Two voxels of the coarsest axis of the model's grid, at least 1 mm: a click covers a few
    voxels whatever the spacing (and stays a click, not a region, on fine grids)."""
    return float(max(1.0, 2.0 * max(target_spacing)))
