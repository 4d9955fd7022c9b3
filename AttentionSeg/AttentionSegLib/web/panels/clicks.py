"""The Click to segment panel: what a press in a slice view does (positive, negative, a box's
corners), undo, new object, go to a point, and the working segmentation's segments.

A left button press in the axial, sagittal or coronal view is taken (before Slicer's
window/level) while the mode is not "off"; its display point becomes RAS through the slice
node's XY-to-RAS matrix and goes to the workspace, whose
:class:`~AttentionSegLib.slicer.click_object.ClickObject` decides which object it refines.
"""

from __future__ import annotations

import functools
import re
import time

import numpy as np
from trame.widgets import html
from trame.widgets import vuetify3 as v3

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.web.panels.panel import Panel, guarded

__all__ = ["ClickPanel", "box_through_slice"]


class ClickPanel(Panel):
    title = "Click to segment"

    def __init__(self, page) -> None:
        super().__init__(page)
        self._observers: list[tuple[object, int]] = []
        self._box_corner: tuple[float, float, float] | None = None  # the first corner of a box prompt
        self._stroke: list[tuple[float, float, float]] | None = None  # a scribble or lasso being drawn

    def initial_state(self) -> dict:
        return {
            "as_click_mode": "off",
            "as_click_mode_active": "off",
            "as_interactive": False,
            "as_last_click_s": None,
            "as_segments": [],
            "as_overwrite": False,
        }

    def build(self) -> None:
        html.Div(
            "{{ as_interactive ? 'Interactive model: clicks refine the object' : "
            "'Automatic model: a click adds or removes a structure' }}",
            classes="text-caption as-click-kind",
        )
        with v3.VBtnToggle(v_model=("as_click_mode",), mandatory=True, density="compact", classes="my-2"):
            v3.VBtn("Off", value="off", classes="as-click-off")
            v3.VBtn("Positive", value="positive", classes="as-click-positive")
            v3.VBtn("Negative", value="negative", classes="as-click-negative")
            v3.VBtn("Box", value="box", classes="as-click-box")
            v3.VBtn("Scribble", value="scribble", classes="as-click-scribble")
            v3.VBtn("Lasso", value="lasso", classes="as-click-lasso")
        html.Div(
            "{{ as_click_mode_active === 'off' ? 'Clicks in the views: off (window/level)' : "
            "as_click_mode_active === 'box' ? 'Clicks in the views: box (two opposite corners, "
            "interactive models)' : as_click_mode_active === 'scribble' ? 'Clicks in the views: scribble (drag a "
            "stroke on the object; a stroke after the first refines it)' : as_click_mode_active === 'lasso' ? "
            "'Clicks in the views: lasso (drag a closed loop around the object on this slice)' : "
            "'Clicks in the views: ' + as_click_mode_active }}",
            classes="text-caption as-click-mode",
        )
        with html.Div(classes="d-flex ga-2 align-center"):
            v3.VTextField(label="Go to R, A, S (mm)", v_model=("as_goto", ""), density="compact", classes="as-goto")
            # The text goes with the click: a v_model update may not have reached the server yet.
            v3.VBtn("Go", click=(self._go_to, "[as_goto]"), classes="as-goto-button")
            v3.VBtn("Suggest next click", click=self._suggest, variant="text", classes="as-suggest-click")
        with html.Div(classes="d-flex ga-2"):
            v3.VBtn("Undo click", click=self._undo_click, classes="as-undo-click")
            v3.VBtn("New object", click=self._new_object, variant="text")
        html.Div(
            "last click: {{ as_last_click_s === null ? '-' : as_last_click_s.toFixed(3) + ' s' }}",
            classes="text-caption as-last-click",
        )
        v3.VCheckbox(
            label="Objects may overwrite other segments (locked ones never change)",
            v_model=("as_overwrite",),
            density="compact",
            classes="as-overwrite",
        )
        with v3.VList(density="compact", classes="as-segments"):
            with v3.VListItem(
                v_for="item in as_segments", key="item.name", title=("item.name + ': ' + item.voxels + ' voxels'",)
            ):
                with v3.Template(v_slot_append=True):
                    v3.VBtn(
                        icon=("item.locked ? 'mdi-lock' : 'mdi-lock-open-variant-outline'",),
                        size="small",
                        variant="text",
                        classes="as-segment-lock",
                        click=(self._toggle_lock, "[item.name, !item.locked]"),
                    )
        self.state.change("as_model")(self._on_model_changed)
        self.state.change("as_overwrite")(self._on_overwrite_changed)
        self.state.change("as_click_mode")(self._on_click_mode_changed)

    def install_view_observers(self) -> None:
        """Take left button presses in the slice views (once the views exist)."""
        for view in self.page.slicer_app.view_manager.get_slice_views():
            interactor = view.interactor()
            for event, handler in (
                ("LeftButtonPressEvent", self._on_press),
                ("MouseMoveEvent", self._on_move),
                ("LeftButtonReleaseEvent", self._on_release),
            ):
                tag = interactor.AddObserver(event, functools.partial(handler, view), 10.0)
                self._observers.append((interactor, tag))

    # ------------------------------------------------------------------------------ presses
    def _on_press(self, view, interactor, event) -> None:
        mode = self.state.as_click_mode_active
        if mode not in ("positive", "negative", "box", "scribble", "lasso") or self.workspace.volume is None:
            return
        ras = self._taken(view, interactor, event)
        if mode in ("scribble", "lasso"):
            self._stroke = [ras]
        elif mode != "box":
            self._click(ras, mode == "positive")
        elif self._box_corner is None:
            self._box_corner = ras
            self.say("box: now click the opposite corner")
        else:
            corner, self._box_corner = self._box_corner, None
            self._box(*box_through_slice(view.get_view_node(), corner, ras))

    def _on_move(self, view, interactor, event) -> None:
        if self._stroke is not None:
            self._stroke.append(self._taken(view, interactor, event))

    def _on_release(self, view, interactor, event) -> None:
        if self._stroke is None:
            return
        points, self._stroke = [*self._stroke, self._taken(view, interactor, event)], None
        if self.state.as_click_mode_active == "lasso":
            self._lasso(points)
        else:
            self._scribble(points)

    def _taken(self, view, interactor, event: str) -> tuple[float, float, float]:
        """The event's point (mm, RAS), the event kept from Slicer's own handling (window/level)."""
        for each, tag in self._observers:
            if each is interactor:  # VTK clears the flag before each observer: this stops the running one
                interactor.GetCommand(tag).SetAbortFlag(1)
        x, y = interactor.GetEventPosition()
        return tuple(view.get_view_node().GetXYToRAS().MultiplyPoint([float(x), float(y), 0.0, 1.0])[:3])

    @guarded
    def _scribble(self, points) -> None:
        model = self._model_for("the scribble")
        started = time.perf_counter()
        self.workspace.scribble(points, True, model, self.state.as_device)
        self._prompted(time.perf_counter() - started)
        self.say(f"scribble of {len(points)} points applied")

    @guarded
    def _lasso(self, points) -> None:
        model = self._model_for("the lasso")
        started = time.perf_counter()
        self.workspace.lasso(points, model, self.state.as_device)
        self._prompted(time.perf_counter() - started)
        self.say(f"lasso of {len(points)} points applied")

    @guarded
    def _click(self, ras, positive: bool) -> None:
        model = self._model_for("the clicks")
        started = time.perf_counter()
        self.workspace.click(ras, positive, model, self.state.as_device)
        self._prompted(time.perf_counter() - started)
        kind = "positive" if positive else "negative"
        self.say(f"{kind} click at ({', '.join(f'{v:.1f}' for v in ras)}) mm RAS")

    @guarded
    def _box(self, corner_a, corner_b) -> None:
        """A box prompt from two opposite corners (interactive models): a new object, or a
        refinement of the current one."""
        model = self._model_for("the box")
        started = time.perf_counter()
        self.workspace.box(corner_a, corner_b, model, self.state.as_device)
        self._prompted(time.perf_counter() - started)
        self.say("box prompt applied")

    def _model_for(self, what: str) -> str:
        if not self.state.as_model:
            raise AttentionSegError(f"choose a model for {what}")
        return self.state.as_model

    def _prompted(self, seconds: float) -> None:
        """After a prompt: the Segment Editor edits the working segmentation, and the segment
        list is recounted once the page is idle (the views update first)."""
        editor = self.page.slicer_app.segmentation_editor
        active = editor.active_segmentation
        if active is None or active.segmentation_node is not self.workspace.segmentation:
            self.page.edit(self.workspace.working_segmentation())
        with self.state:
            self.state.as_last_click_s = seconds
        self.page.segments_changed()

    @guarded
    def _undo_click(self) -> None:
        if not self.workspace.undo_click():
            raise AttentionSegError("nothing to undo for this object")
        self.page.segments_changed(now=True)
        self.say("click undone")

    @guarded
    def _new_object(self) -> None:
        self.workspace.new_object()
        self.say("the next click starts a new object")

    @guarded
    @guarded
    def _suggest(self) -> None:
        """Centre the views where the current object is least certain, and say which click."""
        suggestion = self.workspace.suggest_click()
        if suggestion is None:
            self.say("no suggestion: prompt an object with an interactive model first")
            return
        ras, positive = suggestion
        self.page.centre_views(ras)
        where = ", ".join(f"{v:.1f}" for v in ras)
        self.say(f"least certain at R, A, S {where} mm: a {'positive' if positive else 'negative'} click there")

    def _go_to(self, text: str = "") -> None:
        """Centre the three slice views on a point (mm, RAS): the place to click next."""
        try:
            ras = [float(v) for v in re.split(r"[,\s]+", str(text).strip()) if v]
        except ValueError:
            ras = []
        if len(ras) != 3:
            raise AttentionSegError(f"{text!r}: give three numbers R, A, S in mm")
        self.page.centre_views(ras)

    # ------------------------------------------------------------------------------ listeners
    def _on_click_mode_changed(self, as_click_mode="off", **_) -> None:
        """What a click in a view does, as the server has it (the panel shows this one)."""
        self.state.as_click_mode_active = as_click_mode
        self._box_corner = self._stroke = None

    def _on_model_changed(self, as_model=None, **_) -> None:
        """Whether the chosen model refines objects from clicks. A state listener: trame flushes
        what it sets (a ``with state`` here would flush re-entrantly)."""
        try:
            self.state.as_interactive = bool(as_model) and self.workspace.is_interactive(as_model)
        except AttentionSegError as error:
            self.state.as_error = str(error)

    def _on_overwrite_changed(self, as_overwrite=False, **_) -> None:
        self.workspace.set_overwrite(bool(as_overwrite))

    @guarded
    def _toggle_lock(self, name: str, locked: bool) -> None:
        self.workspace.set_locked(name, bool(locked))
        self.page.segments_changed(now=True)
        self.say(f"{name} {'locked' if locked else 'unlocked'}")

    def show_segments(self) -> None:
        """The working segmentation's segments: voxels (each segment counted whole) and lock."""
        states = self.workspace.segment_states()
        with self.state:
            self.state.as_segments = states


def box_through_slice(slice_node, corner_a, corner_b):
    """Two corners clicked on one slice span a flat box: give it a depth along the slice's
    normal equal to its larger in-plane side, centred on the slice."""
    matrix = slice_node.GetSliceToRAS()
    axes = np.array([[matrix.GetElement(row, column) for row in range(3)] for column in range(3)])
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    a, b = np.asarray(corner_a, float), np.asarray(corner_b, float)
    half_depth = max(abs(float((b - a) @ axes[0])), abs(float((b - a) @ axes[1]))) / 2
    return tuple(a - axes[2] * half_depth), tuple(b + axes[2] * half_depth)
