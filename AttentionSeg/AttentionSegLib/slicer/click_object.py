"""The object being clicked: which segment the next prompt refines, and when a new object starts.

One rule for every front end (the Slicer module's Logic and the web page's workspace hold one
:class:`ClickObject` each over the module's :class:`~AttentionSegLib.slicer.click_logic.ClickLogic`):

- With an interactive model, a click or a box refines the current object; with none, a positive
  click or a box starts one (a new segment, "object N") and that becomes the current object.
- The current object ends, so that the next prompt starts a new one, when the reader asks for a
  new object, when the model or the segmentation the prompts go into changes, when its segment
  is no longer in that segmentation (deleted in the Segment Editor), and with a new case.
- An automatic model has no current object: each click adds (or removes) the structure the model
  finds under it, in the segment of that label; a later interactive prompt starts a new object.
- Undo takes back the last prompt of the current object (or of the last object, after a model
  change with no prompt since): its segment, and whatever that prompt took from other segments
  (:mod:`~AttentionSegLib.slicer.segment_overlap`), are restored.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ClickObject"]


class ClickObject:
    """The current object of a reader's prompts over ``click_logic`` (see the module docstring).

    Example:
        >>> clicks = ClickObject(jobs.click)  # doctest: +SKIP
        >>> segment_id = clicks.click(volume, "model.pt", (10.0, -4.0, 31.5), segmentation)  # doctest: +SKIP
        >>> clicks.click(volume, "model.pt", (11.0, -4.0, 31.5), segmentation, positive=False)  # doctest: +SKIP
        >>> clicks.undo()  # doctest: +SKIP
        True
    """

    def __init__(self, click_logic) -> None:
        self.click_logic = click_logic
        self._segmentation = None  # the segmentation node the object's segment is in
        self._segment_id: str | None = None
        self._model: Path | None = None  # the model file that made it (resolved)

    @property
    def segment_id(self) -> str | None:
        """The segment the next interactive prompt refines; None: the next one starts an object."""
        return self._segment_id if self._segment_exists() else None

    @property
    def segmentation(self):
        """The segmentation node of the current object (None without one)."""
        return self._segmentation if self.segment_id is not None else None

    def click(
        self, volume_nodes, model_file, point_ras, segmentation_node, positive: bool = True, device="auto"
    ) -> str:
        """One click (mm, RAS) with ``model_file`` into ``segmentation_node``; returns the segment id
        (the object's with an interactive model, the clicked label's with an automatic one)."""
        interactive = self.click_logic.is_interactive(model_file, device)
        current = self._current_for(model_file, segmentation_node) if interactive else None
        segment_id = self.click_logic.click_to_segment(
            volume_nodes, model_file, point_ras, segmentation_node, current, positive=positive, device=device
        )
        self._remember(segment_id if interactive else None, model_file, segmentation_node)
        return segment_id

    def box(self, volume_nodes, model_file, box, segmentation_node, device="auto") -> str:
        """A box prompt (a markups ROI node or two opposite corners, mm, RAS; interactive models):
        refines the current object or starts one. Returns the segment id."""
        logic = self.click_logic
        return self._refine(model_file, segmentation_node, lambda current: logic.box_to_segment(
            volume_nodes, model_file, box, segmentation_node, current, device=device
        ))  # fmt: skip

    def scribble(self, volume_nodes, model_file, points_ras, segmentation_node, positive=True, device="auto") -> str:
        """A scribble (a stroke through ``points_ras``, mm, RAS, or a curve node; interactive
        models) on the current object, or starting one. Returns the segment id."""
        logic = self.click_logic
        return self._refine(model_file, segmentation_node, lambda current: logic.scribble_to_segment(
            volume_nodes, model_file, points_ras, segmentation_node, current, positive, device
        ))  # fmt: skip

    def lasso(self, volume_nodes, model_file, contour_ras, segmentation_node, device="auto") -> str:
        """A lasso (a closed contour on one slice, mm, RAS, or a closed curve node; interactive
        models) on the current object, or starting one. Returns the segment id."""
        logic = self.click_logic
        return self._refine(model_file, segmentation_node, lambda current: logic.lasso_to_segment(
            volume_nodes, model_file, contour_ras, segmentation_node, current, device
        ))  # fmt: skip

    def undo(self) -> bool:
        """Take back the current object's last prompt; False when there is nothing to undo."""
        if self.segment_id is None:
            return False
        return self.click_logic.undo_click(self._segmentation, self._segment_id)

    def suggest(self):
        """``(RAS point, positive)`` where the current object is least certain, or None
        (:meth:`~AttentionSegLib.slicer.click_logic.ClickLogic.suggest_click`)."""
        if self.segment_id is None:
            return None
        return self.click_logic.suggest_click(self._segmentation, self._segment_id)

    @property
    def can_undo(self) -> bool:
        """Whether :meth:`undo` has a step to take back."""
        return self.segment_id is not None and self.click_logic.can_undo(self._segmentation, self._segment_id)

    def new_object(self) -> None:
        """The next prompt starts a new object (the current segment stays as it is)."""
        self._segment_id = None

    def forget(self) -> None:
        """A new case: no current object, and every object's prompt history dropped."""
        self._segmentation, self._segment_id, self._model = None, None, None
        self.click_logic.forget_sessions()

    # ------------------------------------------------------------------------------ rules
    def _refine(self, model_file, segmentation_node, prompt) -> str:
        """Run ``prompt(current segment id or None)`` (an interactive prompt) and make its segment
        the current object."""
        segment_id = prompt(self._current_for(model_file, segmentation_node))
        self._remember(segment_id, model_file, segmentation_node)
        return segment_id

    def _current_for(self, model_file, segmentation_node) -> str | None:
        """The current object's segment, if the prompt is for the same model and segmentation."""
        if self.segment_id is None or segmentation_node is not self._segmentation:
            return None
        return self._segment_id if _resolved(model_file) == self._model else None

    def _remember(self, segment_id: str | None, model_file, segmentation_node) -> None:
        self._segment_id, self._model, self._segmentation = segment_id, _resolved(model_file), segmentation_node

    def _segment_exists(self) -> bool:
        node = self._segmentation
        if self._segment_id is None or node is None:
            return False
        scene = node.GetScene()
        if scene is None or not scene.IsNodePresent(node):
            return False
        return node.GetSegmentation().GetSegment(self._segment_id) is not None


def _resolved(model_file) -> Path:
    return Path(model_file).resolve()
