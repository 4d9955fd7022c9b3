"""One object segmented click by click with an interactive model, with undo (no Qt, no Slicer).

The session works on the user's image grid: clicks and boxes are voxel indices of the image (the
Logic converts RAS points), the mask is the object's on that grid. Each call runs the network on
the windows that follow the object (:class:`~AttentionSegLib.interactive.segmenter.ObjectSegmenter`),
with every click and the box so far and the current mask as the previous mask, and returns the
region that changed, so that a caller rewrites only that part of a segment. ``set_mask`` takes a
mask edited elsewhere (the Segment Editor) as the previous mask of the next click.

Undo restores the mask and the prompts exactly as they were before the last call.

Example:
    >>> session = InteractiveSession.for_predictor(Predictor("hippocampus-interactive.pt"), [image])
    >>> region = session.add_click((17, 25, 18), positive=True)
    >>> session.mask[region].sum()
    412
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.interactive.prompts import ObjectPrompts, checked_voxel
from AttentionSegLib.interactive.segmenter import ObjectSegmenter

__all__ = ["InteractiveSession", "SessionStep"]


@dataclass
class SessionStep:
    """What one call changed: the region (slices of the image grid) and how long it took (s)."""

    region: tuple[slice, ...]
    seconds: float


class InteractiveSession:
    """Clicks, a box and undo for one object on one image.

    Args:
        segmenter: the :class:`~AttentionSegLib.interactive.segmenter.ObjectSegmenter` of the
            image's grid.
        image: (C, *grid) float32, normalised as the network was trained.
        mask: the object's present mask on that grid (bool), e.g. a segment being refined.
        max_undo: steps kept for undo.

    :meth:`for_predictor` builds one from a predictor of an interactive model file and images.
    """

    def __init__(
        self, segmenter: ObjectSegmenter, image: np.ndarray, mask: np.ndarray | None = None, max_undo: int = 100
    ):
        self.segmenter, self.image = segmenter, image
        self.spacing = segmenter.spacing
        self.shape = tuple(image.shape[1:])
        self.prompts = ObjectPrompts()
        self.mask = np.zeros(self.shape, dtype=bool)
        if mask is not None:
            self.set_mask(mask)
        self.max_undo = max_undo
        self._history: list[tuple[tuple[slice, ...], np.ndarray, ObjectPrompts]] = []

    @classmethod
    def for_predictor(
        cls, predictor, images, mask: np.ndarray | None = None, max_undo: int = 100
    ) -> InteractiveSession:
        """A session of ``predictor`` (a :class:`~AttentionSegLib.inference.predictor.Predictor` of
        an interactive model file, or a :class:`~AttentionSegLib.serve.client.RemotePredictor` of
        one on a server) on ``images`` (one per model channel, or one holding all, on one grid).

        Raises:
            AttentionSegError: the model is automatic, or the images do not fit it.
        """
        if not predictor.model_file.is_interactive:
            raise AttentionSegError(f"{predictor.source}: an automatic model; clicks need an interactive model")
        segmenter, image = predictor.object_segmenter(predictor.stack_channels(images))
        return cls(segmenter, image, mask, max_undo)

    # ------------------------------------------------------------------------------ prompts
    def add_click(self, index: Sequence[int], positive: bool = True) -> SessionStep:
        """A positive (object here) or negative (not the object) click at voxel ``index``.

        Raises:
            AttentionSegError: the voxel is outside the image.
        """
        index = self._checked_index(index)
        prompts = self._prompts_copy()
        (prompts.positive if positive else prompts.negative).append(index)
        return self._run(prompts)

    def set_box(self, start: Sequence[int], stop: Sequence[int]) -> SessionStep:
        """A box prompt: voxel corners ``start`` (inclusive) and ``stop`` (exclusive), array order.

        Raises:
            AttentionSegError: an empty box, or one outside the image.
        """
        start = tuple(max(0, int(v)) for v in start)
        stop = tuple(min(n, int(v)) for v, n in zip(stop, self.shape))
        if len(start) != len(self.shape) or any(b <= a for a, b in zip(start, stop)):
            raise AttentionSegError(f"the box {start}-{stop} is empty or outside the image {self.shape}")
        prompts = self._prompts_copy()
        prompts.box = (start, stop)
        return self._run(prompts)

    def add_scribble(self, voxels: Sequence[Sequence[int]], positive: bool = True) -> SessionStep:
        """A scribble: the voxels of a stroke (:func:`~AttentionSegLib.interactive.strokes.stroke_voxels`),
        each a positive (object) or negative (not the object) click, in one step.

        Raises:
            AttentionSegError: no voxel, or one outside the image.
        """
        checked = [self._checked_index(voxel) for voxel in voxels]
        if not checked:
            raise AttentionSegError("the scribble has no voxel")
        prompts = self._prompts_copy()
        (prompts.positive if positive else prompts.negative).extend(checked)
        return self._run(prompts)

    def add_lasso(self, inside: np.ndarray) -> SessionStep:
        """A lasso: ``inside`` (the image's grid) marks the voxels of one slice inside a closed
        contour (:func:`~AttentionSegLib.interactive.strokes.lasso_mask`). On that slice the object
        lies inside the contour; the network sees a positive click at the contour's interior-most
        voxel and a box around it as deep as its larger side (the object goes on through the
        slices), and on that slice the result is cut to the contour.

        Raises:
            AttentionSegError: a mask not on the image grid, or an empty one.
        """
        from AttentionSegLib.interactive.strokes import box_through_slice, on_slice
        from AttentionSegLib.regions import interior_point

        if tuple(inside.shape) != self.shape or not inside.any():
            raise AttentionSegError(f"the lasso is empty or not on the image grid {self.shape}")
        corners = np.argwhere(inside)
        start, stop = corners.min(axis=0), corners.max(axis=0) + 1
        plane = tuple(slice(0, n) for n in self.shape)
        if len(self.shape) == 3:  # the slice's axis: where the contour is one voxel thick
            axis = int(np.argmin(stop - start))
            at = int(start[axis])
            start, stop = (np.asarray(v) for v in box_through_slice(start, stop, axis, self.shape))
            plane = tuple(slice(at, at + 1) if d == axis else whole for d, whole in enumerate(plane))
            # The interior-most voxel of the contour within its slice (in 3D a one-voxel slab
            # would make every voxel equally near the border).
            in_plane = interior_point(inside[plane].squeeze(axis), np.delete(np.asarray(self.spacing), axis))
            click = on_slice(in_plane, axis, at)
        else:
            click = interior_point(inside, self.spacing)
        prompts = self._prompts_copy()
        prompts.positive.append(tuple(int(v) for v in click))
        prompts.box = (tuple(int(v) for v in start), tuple(int(v) for v in stop))
        return self._run(prompts, keep_only=(plane, inside[plane]))

    def set_mask(self, mask: np.ndarray) -> None:
        """Take ``mask`` (edited elsewhere) as the object's mask; the next click builds on it. Not
        an undo step: the edit was the editor's.

        Raises:
            AttentionSegError: the mask is not on the image grid.
        """
        if tuple(mask.shape) != self.shape:
            raise AttentionSegError(f"the mask has shape {tuple(mask.shape)}, the image {self.shape}")
        self.mask = mask.astype(bool, copy=True)

    def undo(self) -> SessionStep | None:
        """Restore the mask and prompts of before the last click or box; None when there is nothing to undo."""
        if not self._history:
            return None
        region, previous, prompts = self._history.pop()
        self.mask[region] = previous
        self.prompts = prompts
        self.segmenter.uncertain = []  # it described the prediction undone
        return SessionStep(region, 0.0)

    def reset(self) -> None:
        """Forget the prompts, the mask and the undo history."""
        self.prompts, self._history = ObjectPrompts(), []
        self.mask = np.zeros(self.shape, dtype=bool)
        self.segmenter.uncertain = []

    def suggest_click(self) -> tuple[tuple[int, ...], bool] | None:
        """Where the network was least sure of the object in its last prediction
        (:meth:`~AttentionSegLib.interactive.segmenter.ObjectSegmenter.least_certain`): the voxel
        and whether a click there would add (it is outside the mask now) or remove. None before
        the first prompt and after an undo (until the next prompt)."""
        found = getattr(self.segmenter, "least_certain", lambda: None)()
        if found is None:
            return None
        index = found[0]
        return index, not bool(self.mask[index])

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    # ------------------------------------------------------------------------------ internals
    def _run(self, prompts: ObjectPrompts, keep_only=None) -> SessionStep:
        """Run the network with ``prompts``; ``keep_only``: (a region, the mask there) outside
        which the result is cleared (a lasso's slice). Returns the region that changed."""
        started = time.perf_counter()
        prompts.previous_mask = self.mask
        predicted_region, predicted = self.segmenter.predict(self.image, prompts)
        prompts.previous_mask = None
        region = predicted_region
        if keep_only is not None:
            region = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(region, keep_only[0]))
        self._history.append((region, self.mask[region].copy(), self.prompts))
        del self._history[: -self.max_undo]
        self.mask[predicted_region] = predicted
        if keep_only is not None:
            self.mask[keep_only[0]] &= keep_only[1]
        self.prompts = prompts
        return SessionStep(region, time.perf_counter() - started)

    def _prompts_copy(self) -> ObjectPrompts:
        prompts = copy.deepcopy(self.prompts)
        prompts.previous_mask = None
        return prompts

    def _checked_index(self, index: Sequence[int]) -> tuple[int, ...]:
        return checked_voxel(index, self.shape)
