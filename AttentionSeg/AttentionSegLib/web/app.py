"""The AttentionSeg web page: trame-slicer views over the workspace's scene, and one panel per
job (:mod:`AttentionSegLib.web.panels`) calling the same logic classes as the Slicer modules
(through :class:`~.workspace.Workspace` and the Training module's
:class:`~AttentionSegLib.slicer.training_logic.TrainingLogic`).

This shell holds the layout, the page-wide error line and progress, and the polling loop. Long
work never blocks the page: Segment and training run in processes of their own, polled every half
second; Compare runs its networks in a worker thread. Every panel callback is guarded: a bad file
or a failed job shows one line in the page and the server keeps its scene.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from pathlib import Path

from trame.app import TrameApp, asynchronous
from trame.widgets import client, html
from trame.widgets import vuetify3 as v3
from trame_slicer.app.logic import SegmentEditorLogic
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories

from AttentionSegLib.slicer.segments import show_in_3d
from AttentionSegLib.web.panels.case import CasePanel
from AttentionSegLib.web.panels.clicks import ClickPanel
from AttentionSegLib.web.panels.compare import ComparePanel
from AttentionSegLib.web.panels.correction import CorrectionPanel
from AttentionSegLib.web.panels.metrics import MetricsPanel
from AttentionSegLib.web.panels.segment import SegmentPanel
from AttentionSegLib.web.panels.training import TrainingPanel
from AttentionSegLib.web.workspace import DEFAULT_MAX_UPLOAD_MB, Workspace

__all__ = ["AttentionSegWebApp"]

log = logging.getLogger("attentionseg.web")

POLL_INTERVAL_S = 0.5
SIDE_PANEL_WIDTH_PX = 620  # room for the metric table's ten columns at a compact size
# Tables in the side panel: compact cells on one line each; wider tables scroll sideways.
TABLE_STYLE = (
    ".as-table td, .as-table th { white-space: nowrap; padding: 0 5px !important; font-size: 0.75rem; }"
    ".as-table .v-table__wrapper { overflow-x: auto; }"
)


class AttentionSegWebApp(TrameApp):
    """The page. ``images`` (and ``reference``) are loaded at start when given.

    Args:
        server: a trame server (default: a new one).
        workspace_folder: the server's working folder (uploads, exports).
        models_folder: a folder of model files besides the default one.
        max_upload_mb: the size limit of one upload.
        server_url: a segmentation server whose models join the list (token: ATTENTIONSEG_TOKEN).
    """

    def __init__(
        self,
        server=None,
        workspace_folder: str | Path = "attentionseg-web",
        models_folder: str | Path | None = None,
        max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
        images: list[str] | None = None,
        reference: str | None = None,
        series_uid: str | None = None,
        server_url: str | None = None,
    ) -> None:
        super().__init__(server, client_type="vue3")
        self.slicer_app = SlicerApp()
        self.workspace = Workspace(self.slicer_app.scene, workspace_folder, models_folder, max_upload_mb, server_url)
        register_rca_factories(self.slicer_app.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout_dict(LayoutManager.default_grid_configuration())
        self.layout_manager.set_layout("Quad View")
        self.editor_logic = SegmentEditorLogic(self.server, self.slicer_app)
        self.cancel_requested = threading.Event()  # Cancel, read by a comparison in its worker thread
        self._segments_changed_at: float | None = None
        self.case = CasePanel(self)
        self.segment = SegmentPanel(self)
        self.compare = ComparePanel(self)
        self.clicks = ClickPanel(self)
        self.metrics = MetricsPanel(self)
        self.correction = CorrectionPanel(self)
        self.training = TrainingPanel(self)
        self.panels = [self.case, self.segment, self.compare, self.clicks, self.metrics, self.correction, self.training]
        self._initial_state(max_upload_mb)
        self._build_ui()
        self.editor_logic.set_ui(self.correction.editor_ui)
        self.slicer_app.segmentation_editor.segmentation_modified.connect(self._on_segmentation_edited)
        self.ctrl.on_server_ready.add(self._on_server_ready)
        if images:
            self.case.load_volume(images[0], series_uid)
            if reference:
                self.case.load_reference(reference)
        self.segment.refresh_models()

    # ------------------------------------------------------------------------------ state
    def _initial_state(self, max_upload_mb: float) -> None:
        state = self.state
        state.trame__title = "AttentionSeg"
        state.as_error = ""
        state.as_message = ""
        state.as_max_upload_mb = max_upload_mb
        state.as_busy = False  # a Segment or a Compare is running (the Cancel button's)
        state.as_progress = 0.0
        state.as_job = ""
        for panel in self.panels:
            state.update(panel.initial_state())

    # ----------------------------------------------------------------------------- layout
    def _build_ui(self) -> None:
        from trame.ui.vuetify3 import VAppLayout

        with VAppLayout(self.server, full_height=True) as self.ui:
            self.ui.root.theme = "dark"
            client.Style(TABLE_STYLE)
            with v3.VAppBar(density="compact"):
                v3.VToolbarTitle("AttentionSeg")
                v3.VSpacer()
                html.Span("{{ as_message }}", classes="text-caption mr-4 as-message")
                v3.VProgressCircular(indeterminate=("as_busy || !!trame__busy",), size=18, width=2, classes="mr-4")
            with v3.VNavigationDrawer(permanent=True, width=SIDE_PANEL_WIDTH_PX, location="left"):
                v3.VAlert(
                    text=("as_error",),
                    v_if=("as_error",),
                    type="error",
                    density="compact",
                    closable=True,
                    classes="ma-2 as-error",
                    click_close="as_error = ''",
                )
                with v3.VExpansionPanels(multiple=True, model_value=("as_panels", [0, 1, 2]), variant="accordion"):
                    # Segment and Compare share the Models panel: both run the chosen models.
                    for panels in ([self.case], [self.segment, self.compare], [self.clicks], [self.metrics],
                                   [self.correction], [self.training]):  # fmt: skip
                        with v3.VExpansionPanel(title=panels[0].title), v3.VExpansionPanelText():
                            for panel in panels:
                                panel.build()
            with v3.VMain(), html.Div(style="height: calc(100vh - 48px); display: flex;"):
                self.layout_manager.initialize_layout_grid(self.ui)

    # --------------------------------------------------------------------- page-wide helpers
    def clear_error(self) -> None:
        with self.state:
            self.state.as_error = ""

    def show_error(self, message: str) -> None:
        with self.state:
            self.state.as_error = message.splitlines()[0] if message else "error"
            self.state.as_busy = False

    def centre_views(self, ras) -> None:
        """Centre the three slice views on a point (mm, RAS)."""
        for view in self.slicer_app.view_manager.get_slice_views():
            view.get_view_node().JumpSliceByCentering(*ras)

    def say(self, message: str) -> None:
        with self.state:
            self.state.as_message = message

    def job_started(self, text: str) -> None:
        """A Segment or Compare began: the progress bar and Cancel are for it."""
        self.cancel_requested.clear()
        with self.state:
            self.state.as_busy, self.state.as_progress, self.state.as_job = True, 0.0, text

    def job_ended(self, text: str, cancelled: bool = False) -> None:
        if cancelled:
            self.cancel_requested.set()
        with self.state:
            self.state.as_busy, self.state.as_job = False, text

    def edit(self, segmentation_node) -> None:
        """Make ``segmentation_node`` the one the Segment Editor edits, its segments shown as
        surfaces in the 3D view too (kept up to date by MRML with every change)."""
        show_in_3d(segmentation_node)
        editor = self.slicer_app.segmentation_editor
        editor.deactivate_effect()
        editor.set_active_segmentation(segmentation_node, self.workspace.volume)
        for view in self.slicer_app.view_manager.get_threed_views():
            view.reset_view()  # the camera on what the 3D view shows now
            view.schedule_render()

    def case_loaded(self) -> None:
        """A new case: every panel forgets the old one's results; the segment list is recounted."""
        for panel in self.panels:
            panel.case_loaded()
        self.segments_changed(now=True)

    def models_changed(self) -> None:
        self.segment.refresh_models()

    def segments_changed(self, now: bool = False) -> None:
        """The working segmentation changed: recount its segments now, or half a second after the
        last change (a Paint stroke modifies the segmentation many times)."""
        if now:
            self._segments_changed_at = None
            self.clicks.show_segments()
        else:
            self._segments_changed_at = time.monotonic()

    def _on_segmentation_edited(self, *_) -> None:
        self.segments_changed()

    # ------------------------------------------------------------------------ life cycle
    def _on_server_ready(self, **_):
        self.clicks.install_view_observers()
        asynchronous.create_task(self._poll_loop())

    async def _poll_loop(self) -> None:
        """Follow the background segmentation and the training run, and recount edited segments."""
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            try:
                for panel in self.panels:
                    panel.poll()
                changed = self._segments_changed_at
                if changed is not None and time.monotonic() - changed > POLL_INTERVAL_S:
                    self.segments_changed(now=True)
            except Exception:  # noqa: BLE001 - keep polling; the failure is in the log and the page
                log.error("polling failed:\n%s", traceback.format_exc())
                self.show_error("internal error while following a job; see the server log")
