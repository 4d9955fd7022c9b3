"""The AttentionSeg web page: trame-slicer views over the workspace's scene, and panels that call
the same logic classes as the Slicer modules (through :class:`~.workspace.Workspace` and the
Training module's :class:`~AttentionSegLib.slicer.training_logic.TrainingLogic`).

The page holds no logic of its own: each button is one workspace (or training logic) call, its
result written into the page's state. Long work never blocks the page: Segment and training run
in processes of their own, polled every half second; Compare runs its networks in a worker
thread. Every call is guarded: a bad file or a failed job shows one line in the page and the
server keeps its scene.

Clicks in a slice view: while the click mode is "positive" or "negative", a left button press in
the axial, sagittal or coronal view is taken (before Slicer's window/level) and its display point
turned into RAS with the slice node's XY-to-RAS matrix, then given to the Logic's
``click_to_segment``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
import time
import traceback
from pathlib import Path

from trame.app import TrameApp, asynchronous
from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_slicer.app.logic import SegmentEditorLogic
from trame_slicer.app.ui import SegmentEditorUI
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_store import model_display_name
from AttentionSegLib.inference.predictor import PredictionCancelled
from AttentionSegLib.web.workspace import DEFAULT_MAX_UPLOAD_MB, Workspace

__all__ = ["AttentionSegWebApp"]

log = logging.getLogger("attentionseg.web")

POLL_INTERVAL_S = 0.5
DEVICES = ["auto", "cpu", "cuda"]
METRIC_HEADERS = [
    {"title": "Label", "key": "value"},
    {"title": "Name", "key": "name"},
    {"title": "Dice", "key": "dice"},
    {"title": "HD95 (mm)", "key": "hd95"},
    {"title": "ASSD (mm)", "key": "assd"},
    {"title": "NSD", "key": "nsd"},
    {"title": "Volume ref (mL)", "key": "volume_reference_ml"},
    {"title": "Volume seg (mL)", "key": "volume_prediction_ml"},
]


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return str(value)


def guarded(method):
    """Run a page callback; bad input (AttentionSegError) becomes the page's one-line error, any
    other failure a one-line internal error with the traceback in the server's log. The server
    and its scene stay up either way. Keeps a callback synchronous or asynchronous as it is."""

    def report(self, error: Exception) -> None:
        if isinstance(error, AttentionSegError):
            self.show_error(str(error))
            return
        log.error("%s failed:\n%s", method.__name__, traceback.format_exc())
        self.show_error(f"internal error in {method.__name__}: {type(error).__name__}: {error}")

    if asyncio.iscoroutinefunction(method):

        @functools.wraps(method)
        async def run_async(self, *args, **kwargs):
            self.clear_error()
            try:
                return await method(self, *args, **kwargs)
            except Exception as error:  # noqa: BLE001 - a page action must never take the server down
                report(self, error)
            return None

        return run_async

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        self.clear_error()
        try:
            return method(self, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - a page action must never take the server down
            report(self, error)
        return None

    return run


class AttentionSegWebApp(TrameApp):
    """The page. ``images`` (and ``reference``) are loaded at start when given.

    Args:
        server: a trame server (default: a new one).
        workspace_folder: the server's working folder (uploads, exports).
        models_folder: a folder of model files besides the default one.
        max_upload_mb: the size limit of one upload.
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
    ) -> None:
        super().__init__(server, client_type="vue3")
        self.slicer_app = SlicerApp()
        self.workspace = Workspace(self.slicer_app.scene, workspace_folder, models_folder, max_upload_mb)
        register_rca_factories(self.slicer_app.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout_dict(LayoutManager.default_grid_configuration())
        self.layout_manager.set_layout("Quad View")
        self.editor_logic = SegmentEditorLogic(self.server, self.slicer_app)
        self.training = None  # the TrainingLogic, made on the first Start
        self._segments_changed_at: float | None = None
        self.slicer_app.segmentation_editor.segmentation_modified.connect(self._mark_segments_changed)
        self._click_observers: list[tuple[object, int]] = []
        self._box_corner: tuple[float, float, float] | None = None  # the first corner of a box prompt
        self._cancel_requested = False  # Cancel, read by a comparison running in a worker thread
        self._progress_from_thread = 0.0  # that comparison's progress
        self._initial_state(max_upload_mb)
        self._build_ui()
        self.editor_logic.set_ui(self.editor_ui)
        self.ctrl.on_server_ready.add(self._on_server_ready)
        self.state.change("as_model")(self._on_model_changed)
        self.state.change("as_click_mode")(self._on_click_mode_changed)
        self.state.change("as_volume_rendering")(self._on_volume_rendering_changed)
        if images:
            self._load_volume_file(images[0], series_uid)
            if reference:
                self.state.as_reference_name = self.workspace.load_reference(reference).GetName()
        self._refresh_models()

    # ------------------------------------------------------------------------------ state
    def _initial_state(self, max_upload_mb: float) -> None:
        state = self.state
        state.trame__title = "AttentionSeg"
        state.as_error = ""
        state.as_message = ""
        state.as_volume_name = ""
        state.as_reference_name = ""
        state.as_models = []
        state.as_model = None
        state.as_compare_models = []
        state.as_device = "auto"
        state.as_busy = False
        state.as_progress = 0.0
        state.as_job = ""
        state.as_click_mode = "off"
        state.as_click_mode_active = "off"
        state.as_volume_rendering = False
        state.as_interactive = False
        state.as_last_click_s = None
        state.as_metrics_rows = []
        state.as_compare_rows = []
        state.as_compare_headers = []
        state.as_compare_chart = ""
        state.as_dataset_json = ""
        state.as_max_upload_mb = max_upload_mb
        state.as_train_dataset = ""
        state.as_train_model = "unet"
        state.as_train_interactive = False
        state.as_train_minutes = 10.0
        state.as_train_out = ""
        state.as_train_status = ""
        state.as_train_progress = 0.0
        state.as_train_running = False
        state.as_train_curve = []
        state.as_segments = []

    def clear_error(self) -> None:
        with self.state:
            self.state.as_error = ""

    def show_error(self, message: str) -> None:
        with self.state:
            self.state.as_error = message.splitlines()[0] if message else "error"
            self.state.as_busy = False

    def _say(self, message: str) -> None:
        with self.state:
            self.state.as_message = message

    # ----------------------------------------------------------------------------- layout
    def _build_ui(self) -> None:
        from trame.ui.vuetify3 import VAppLayout

        with VAppLayout(self.server, full_height=True) as self.ui:
            self.ui.root.theme = "dark"
            with v3.VAppBar(density="compact"):
                v3.VToolbarTitle("AttentionSeg")
                v3.VSpacer()
                html.Span("{{ as_message }}", classes="text-caption mr-4 as-message")
                v3.VProgressCircular(indeterminate=("as_busy || !!trame__busy",), size=18, width=2, classes="mr-4")
            with v3.VNavigationDrawer(permanent=True, width=420, location="left"):
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
                    self._case_panel()
                    self._models_panel()
                    self._click_panel()
                    self._metrics_panel()
                    self._correction_panel()
                    self._training_panel()
            with v3.VMain(), html.Div(style="height: calc(100vh - 48px); display: flex;"):
                self.layout_manager.initialize_layout_grid(self.ui)

    def _case_panel(self) -> None:
        with v3.VExpansionPanel(title="Case"):
            with v3.VExpansionPanelText():
                html.Div("Volume: {{ as_volume_name || 'none' }}", classes="text-body-2 as-volume-name")
                v3.VFileInput(
                    label="Upload volume (.nii.gz, .nrrd, .mha; DICOM series as .zip)",
                    density="compact",
                    classes="as-upload-volume",
                    change=self._upload_js(self._upload_volume),
                )
                html.Div("Reference: {{ as_reference_name || 'none' }}", classes="text-body-2 as-reference-name")
                v3.VFileInput(
                    label="Upload reference (label map or DICOM SEG .dcm)",
                    density="compact",
                    classes="as-upload-reference",
                    change=self._upload_js(self._upload_reference),
                )
                html.Div("Uploads up to {{ as_max_upload_mb }} MB", classes="text-caption")
                v3.VCheckbox(
                    label="Volume rendering in the 3D view", v_model=("as_volume_rendering",), density="compact"
                )

    def _models_panel(self) -> None:
        with v3.VExpansionPanel(title="Models"):
            with v3.VExpansionPanelText():
                v3.VSelect(
                    label="Model",
                    items=("as_models",),
                    v_model=("as_model",),
                    density="compact",
                    classes="as-model-select",
                )
                v3.VSelect(label="Device", items=("as_devices", DEVICES), v_model=("as_device",), density="compact")
                with html.Div(classes="d-flex ga-2"):
                    # Buttons send the values they act on with the click: a v_model change may not
                    # have reached the server yet when the click does.
                    v3.VBtn(
                        "Segment",
                        click=(self._segment, "[as_model, as_device]"),
                        disabled=("as_busy || !as_model",),
                        classes="as-segment",
                    )
                    v3.VBtn("Cancel", click=self._cancel, disabled=("!as_busy",), classes="as-cancel")
                    v3.VBtn("Refresh models", click=self._refresh_models, variant="text")
                v3.VProgressLinear(
                    model_value=("as_progress * 100",), v_show=("as_busy",), height=6, classes="my-2 as-progress"
                )
                html.Div("{{ as_job }}", classes="text-caption as-job")
                v3.VSelect(
                    label="Models to compare",
                    items=("as_models",),
                    v_model=("as_compare_models",),
                    multiple=True,
                    chips=True,
                    density="compact",
                    classes="as-compare-select",
                )
                v3.VBtn(
                    "Compare selected models",
                    click=(self._compare, "[as_compare_models, as_device]"),
                    disabled=("as_busy || as_compare_models.length < 1",),
                    classes="as-compare",
                )
                html.Img(src=("as_compare_chart",), v_if=("as_compare_chart",), classes="as-compare-chart mt-2")
                v3.VDataTable(
                    headers=("as_compare_headers",),
                    items=("as_compare_rows",),
                    density="compact",
                    v_if=("as_compare_rows.length",),
                    classes="as-compare-table",
                    items_per_page=-1,
                    hide_default_footer=True,
                )

    def _click_panel(self) -> None:
        with v3.VExpansionPanel(title="Click to segment"):
            with v3.VExpansionPanelText():
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
                html.Div(
                    "{{ as_click_mode_active === 'off' ? 'Clicks in the views: off (window/level)' : "
                    "as_click_mode_active === 'box' ? 'Clicks in the views: box (two opposite corners, "
                    "interactive models)' : 'Clicks in the views: ' + as_click_mode_active }}",
                    classes="text-caption as-click-mode",
                )
                with html.Div(classes="d-flex ga-2 align-center"):
                    v3.VTextField(
                        label="Go to R, A, S (mm)", v_model=("as_goto", ""), density="compact", classes="as-goto"
                    )
                    # The text goes with the click: a v_model update may not have reached the server yet.
                    v3.VBtn("Go", click=(self._go_to, "[as_goto]"), classes="as-goto-button")
                with html.Div(classes="d-flex ga-2"):
                    v3.VBtn("Undo click", click=self._undo_click, classes="as-undo-click")
                    v3.VBtn("New object", click=self._new_object, variant="text")
                html.Div(
                    "last click: {{ as_last_click_s === null ? '-' : as_last_click_s.toFixed(3) + ' s' }}",
                    classes="text-caption as-last-click",
                )
                with v3.VList(density="compact", classes="as-segments"):
                    v3.VListItem(
                        v_for="item in as_segments",
                        key="item.name",
                        title=("item.name + ': ' + item.voxels + ' voxels'",),
                    )

    def _metrics_panel(self) -> None:
        with v3.VExpansionPanel(title="Metrics against the reference"):
            with v3.VExpansionPanelText():
                v3.VBtn("Compute metrics", click=self._metrics, classes="as-metrics")
                v3.VDataTable(
                    headers=("as_metric_headers", METRIC_HEADERS),
                    items=("as_metrics_rows",),
                    density="compact",
                    classes="as-metrics-table",
                    items_per_page=-1,
                    hide_default_footer=True,
                )

    def _correction_panel(self) -> None:
        with v3.VExpansionPanel(title="Correct and export"):
            with v3.VExpansionPanelText():
                with html.Div(style="height: 520px; display: flex;"):
                    self.editor_ui = SegmentEditorUI()
                    with html.Div(classes="d-flex flex-column"):
                        self.editor_ui.build_undo_redo_buttons()
                v3.VTextField(
                    label="Dataset definition (dataset.json) for the case",
                    v_model=("as_dataset_json",),
                    density="compact",
                    classes="as-dataset-json",
                )
                v3.VBtn(
                    "Save correction as training case",
                    click=(self._save_correction, "[as_dataset_json]"),
                    classes="as-save-correction",
                )
                with html.Div(classes="d-flex ga-2 mt-2"):
                    v3.VBtn(
                        "Export .seg.nrrd",
                        classes="as-export-seg",
                        click=self._download_js("seg.nrrd"),
                    )
                    v3.VBtn("Export NIfTI", classes="as-export-nifti", click=self._download_js("nifti"))

    def _training_panel(self) -> None:
        with v3.VExpansionPanel(title="Training"):
            with v3.VExpansionPanelText():
                v3.VTextField(
                    label="Dataset definition (dataset.json)", v_model=("as_train_dataset",), density="compact"
                )
                v3.VSelect(
                    label="Network",
                    items=("as_networks", _network_names()),
                    v_model=("as_train_model",),
                    density="compact",
                )
                v3.VCheckbox(
                    label="Interactive (click-conditioned)", v_model=("as_train_interactive",), density="compact"
                )
                v3.VTextField(
                    label="Time limit (minutes)", v_model_number=("as_train_minutes",), type="number", density="compact"
                )
                v3.VTextField(label="Run folder", v_model=("as_train_out",), density="compact")
                with html.Div(classes="d-flex ga-2"):
                    v3.VBtn("Start", click=self._train_start, disabled=("as_train_running",), classes="as-train-start")
                    v3.VBtn("Stop", click=self._train_stop, disabled=("!as_train_running",), classes="as-train-stop")
                    v3.VBtn(
                        "Resume", click=self._train_resume, disabled=("as_train_running",), classes="as-train-resume"
                    )
                v3.VProgressLinear(model_value=("as_train_progress * 100",), height=6, classes="my-2")
                html.Div("{{ as_train_status }}", classes="text-caption as-train-status")
                html.Div(
                    "epoch {{ p.epoch }}: loss {{ p.loss }}, Dice {{ p.dice }}",
                    v_for="p in as_train_curve.slice(-8)",
                    classes="text-caption",
                )

    def _upload_js(self, callback) -> str:
        """The file input's change handler: the chosen files go to ``callback``, and the input is
        emptied, so that choosing the same file again (fixed, or reloaded) is a new upload."""
        name = self.server.controller.trigger_name(callback)
        return f"trigger('{name}', [Array.from($event.target.files)]); $event.target.value = ''"

    def _download_js(self, fmt: str) -> str:
        name = self.server.controller.trigger_name(functools.partial(self._export, fmt))
        return f"utils.download('segmentation-{fmt.replace('.', '-')}', trigger('{name}'), 'application/octet-stream')"

    # ------------------------------------------------------------------------ life cycle
    def _on_server_ready(self, **_):
        self._install_click_observers()
        asynchronous.create_task(self._poll_loop())

    async def _poll_loop(self) -> None:
        """Follow the background segmentation and the training run."""
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            try:
                self._poll_segmentation()
                self._poll_training()
                self._refresh_segments_when_quiet()
            except Exception:  # noqa: BLE001 - keep polling; the failure is in the log and the page
                log.error("polling failed:\n%s", traceback.format_exc())
                self.show_error("internal error while following a job; see the server log")

    # ------------------------------------------------------------------------------ case
    def _load_volume_file(self, path, series_uid: str | None = None) -> None:
        volume = self.workspace.load_volume(path, series_uid)
        display = self.slicer_app.display_manager
        display.show_volume_in_slice_background(volume)
        display.show_volume_in_slice_foreground(None)
        display.reset_views()
        self._show_volume_rendering(self.state.as_volume_rendering)
        self._edit(self.workspace.working_segmentation())
        with self.state:
            self.state.as_volume_name = volume.GetName()
            self.state.as_reference_name = ""
            self.state.as_metrics_rows = []
            self.state.as_compare_rows = []
        self._refresh_segments()

    def _edit(self, segmentation_node) -> None:
        """Make ``segmentation_node`` the one the Segment Editor edits and the clicks refine."""
        editor = self.slicer_app.segmentation_editor
        editor.deactivate_effect()
        editor.set_active_segmentation(segmentation_node, self.workspace.volume)

    def _client_file(self, files) -> tuple[str, bytes]:
        from trame.app.file_upload import ClientFile

        if not files:
            raise AttentionSegError("no file was chosen")
        entry = files[0] if isinstance(files, list) else files
        # Refused before its bytes are joined or written.
        self.workspace.check_upload_size(str(entry.get("name")), int(entry.get("size") or 0))
        client_file = ClientFile(entry)
        return client_file.name, client_file.content

    @guarded
    def _upload_volume(self, files) -> None:
        name, content = self._client_file(files)
        path = self.workspace.save_upload(name, content)
        self._load_volume_file(path)
        self._say(f"loaded {path.name}")

    @guarded
    def _upload_reference(self, files) -> None:
        name, content = self._client_file(files)
        path = self.workspace.save_upload(name, content)
        node = self.workspace.load_reference(path)
        with self.state:
            self.state.as_reference_name = node.GetName()
        self._say(f"reference {path.name} loaded")

    # ---------------------------------------------------------------------------- models
    @guarded
    def _refresh_models(self) -> None:
        names = [model_display_name(path) for path in self.workspace.models()]
        with self.state:
            self.state.as_models = names
            if self.state.as_model not in names:
                self.state.as_model = names[0] if names else None

    def _show_volume_rendering(self, shown: bool) -> None:
        """Volume rendering in the 3D view, off by default: on a CPU (Mesa) it re-renders with
        every segment change and made each click in the page 0.3 s slower."""
        volume = self.workspace.volume
        if volume is None or volume.GetScene() is not self.slicer_app.scene:
            return
        if shown:
            self.slicer_app.display_manager.show_volume(volume)
        else:
            self.slicer_app.display_manager.hide_volume(volume)
            self.slicer_app.display_manager.show_volume_in_slice_background(volume)

    def _on_volume_rendering_changed(self, as_volume_rendering=False, **_) -> None:
        self._show_volume_rendering(bool(as_volume_rendering))

    def _on_click_mode_changed(self, as_click_mode="off", **_) -> None:
        """What a click in a view does, as the server has it (the panel shows this one)."""
        self.state.as_click_mode_active = as_click_mode
        self._box_corner = None

    def _on_model_changed(self, as_model=None, **_) -> None:
        """The click panel says whether the chosen model refines objects from clicks. A state
        listener: trame flushes what it sets (a ``with state`` here would flush re-entrantly)."""
        try:
            self.state.as_interactive = bool(as_model) and self.workspace.is_interactive(as_model)
        except AttentionSegError as error:
            self.state.as_error = str(error)

    @guarded
    def _segment(self, model: str, device: str) -> None:
        self.workspace.start_segmentation(model, device)
        with self.state:
            self.state.as_busy, self.state.as_progress = True, 0.0
            self.state.as_job = f"segmenting with {model} ..."

    @guarded
    def _cancel(self) -> None:
        self.workspace.cancel()
        self._cancel_requested = True
        with self.state:
            self.state.as_busy = False
            self.state.as_job = "cancelled"

    def _poll_segmentation(self) -> None:
        if self.workspace.background.state != "running":
            return
        state, fraction, message = self.workspace.poll_segmentation()
        with self.state:
            self.state.as_progress = fraction
            if state == "running":
                return
            self.state.as_busy = False
            self.state.as_job = message
        if state == "done":
            self._edit(self.workspace.segmentation)
            self._refresh_segments()
        elif state == "failed":
            self.show_error(message)

    @guarded
    async def _compare(self, models: list, device: str) -> None:
        models = list(models)
        self._cancel_requested = False
        with self.state:
            self.state.as_busy, self.state.as_progress = True, 0.0
            self.state.as_job = f"comparing {len(models)} model(s) ..."

        def progress(fraction: float) -> None:
            self._progress_from_thread = fraction

        self._progress_from_thread = 0.0
        task = asyncio.get_running_loop().run_in_executor(
            None, lambda: self.workspace.compare(models, device, progress, lambda: self._cancel_requested)
        )
        while not task.done():
            await asyncio.sleep(0.2)
            with self.state:
                self.state.as_progress = self._progress_from_thread
        try:
            result = task.result()
        except PredictionCancelled:  # the Logic removed what it had added: the scene is as before
            with self.state:
                self.state.as_busy, self.state.as_job = False, "comparison cancelled"
            return
        rows, headers = _comparison_rows(result["reports"])
        chart = _comparison_chart(rows)
        with self.state:
            self.state.as_compare_rows, self.state.as_compare_headers = rows, headers
            self.state.as_compare_chart = chart
            self.state.as_busy = False
            self.state.as_job = f"compared {len(models)} model(s)"

    # ----------------------------------------------------------------------------- clicks
    def _install_click_observers(self) -> None:
        for view in self.slicer_app.view_manager.get_slice_views():
            interactor = view.interactor()
            tag = interactor.AddObserver("LeftButtonPressEvent", functools.partial(self._on_press, view), 10.0)
            self._click_observers.append((interactor, tag))

    def _on_press(self, view, interactor, _event) -> None:
        mode = self.state.as_click_mode_active
        if mode not in ("positive", "negative", "box") or self.workspace.volume is None:
            return
        interactor.GetCommand(self._observer_tag(interactor)).SetAbortFlag(1)  # no window/level drag
        x, y = interactor.GetEventPosition()
        ras = tuple(view.get_view_node().GetXYToRAS().MultiplyPoint([float(x), float(y), 0.0, 1.0])[:3])
        if mode != "box":
            self._click(ras, mode == "positive")
        elif self._box_corner is None:
            self._box_corner = ras
            self._say("box: now click the opposite corner")
        else:
            corner, self._box_corner = self._box_corner, None
            self._box(*_box_through_slice(view.get_view_node(), corner, ras))

    @guarded
    def _box(self, corner_a, corner_b) -> None:
        """A box prompt from two opposite corners (interactive models): a new object, or a
        refinement of the current one."""
        if not self.state.as_model:
            raise AttentionSegError("choose a model for the box")
        started = time.perf_counter()
        self.workspace.box(corner_a, corner_b, self.state.as_model, self.state.as_device)
        with self.state:
            self.state.as_last_click_s = time.perf_counter() - started
        self._edit_keep_effect()
        self._mark_segments_changed()
        self._say("box prompt applied")

    def _observer_tag(self, interactor) -> int:
        return next(tag for each, tag in self._click_observers if each is interactor)

    @guarded
    def _click(self, ras, positive: bool) -> None:
        if not self.state.as_model:
            raise AttentionSegError("choose a model for the clicks")
        started = time.perf_counter()
        self.workspace.click(ras, positive, self.state.as_model, self.state.as_device)
        elapsed = time.perf_counter() - started
        self._edit_keep_effect()
        with self.state:
            self.state.as_last_click_s = elapsed
        self._mark_segments_changed()  # counted when the page is idle: the view updates first
        self._say(f"{'positive' if positive else 'negative'} click at ({', '.join(f'{v:.1f}' for v in ras)}) mm RAS")

    def _edit_keep_effect(self) -> None:
        editor = self.slicer_app.segmentation_editor
        if editor.active_segmentation is None or editor.active_segmentation.segmentation_node is not (
            self.workspace.segmentation
        ):
            self._edit(self.workspace.working_segmentation())

    @guarded
    def _go_to(self, text: str = "") -> None:
        """Centre the three slice views on a point (mm, RAS): the place to click next."""
        try:
            ras = [float(v) for v in re.split(r"[,\s]+", str(text).strip()) if v]
        except ValueError:
            ras = []
        if len(ras) != 3:
            raise AttentionSegError(f"{text!r}: give three numbers R, A, S in mm")
        self.go_to(ras)

    def go_to(self, ras) -> None:
        for view in self.slicer_app.view_manager.get_slice_views():
            view.get_view_node().JumpSliceByCentering(*[float(v) for v in ras])

    @guarded
    def _undo_click(self) -> None:
        if not self.workspace.undo_click():
            raise AttentionSegError("nothing to undo for this object")
        self._refresh_segments()
        self._say("click undone")

    @guarded
    def _new_object(self) -> None:
        self.workspace.new_object()
        self._say("the next click starts a new object")

    # ------------------------------------------------------------------ metrics, corrections
    @guarded
    def _metrics(self) -> None:
        report = self.workspace.metrics()
        rows = [{key["key"]: _cell(row.get(key["key"])) for key in METRIC_HEADERS} for row in report["labels"]]
        mean = {"value": "mean", "name": f"{report['n_labels_averaged']} labels"}
        rows.append({key["key"]: _cell(mean.get(key["key"], report["mean"].get(key["key"]))) for key in METRIC_HEADERS})
        with self.state:
            self.state.as_metrics_rows = rows
        self._say("metrics computed")

    @guarded
    def _save_correction(self, dataset_json: str) -> None:
        result = self.workspace.save_correction(dataset_json)
        self._say(f"saved as training case {result.get('case_id', '')}".strip())

    async def _export(self, fmt: str):
        try:
            path = self.workspace.export(fmt)
        except AttentionSegError as error:
            self.show_error(str(error))
            return None
        self._say(f"exported {path.name}")
        return self.server.protocol.addAttachment(path.read_bytes())

    # ----------------------------------------------------------------------------- training
    def _training_logic(self):
        if self.training is None:
            from AttentionSegLib.slicer.training_logic import TrainingLogic

            self.training = TrainingLogic(self.slicer_app.scene, models_folder=self.workspace.models_folder)
        return self.training

    @guarded
    def _train_start(self) -> None:
        from AttentionSegLib.training.config import TrainingConfig

        state = self.state
        if not state.as_train_dataset:
            raise AttentionSegError("give the dataset definition (dataset.json) to train on")
        out = state.as_train_out or str(self.workspace.folder / "runs" / f"{state.as_train_model}-{int(time.time())}")
        config = TrainingConfig(
            dataset=state.as_train_dataset,
            model=state.as_train_model,
            run_dir=out,
            time_limit_min=float(state.as_train_minutes) if state.as_train_minutes else None,
            interactive=bool(state.as_train_interactive),
            device=state.as_device,
        )
        self._training_logic().start(config)
        with state:
            state.as_train_running, state.as_train_curve = True, []
            state.as_train_out = out
            state.as_train_status = "starting ..."

    @guarded
    def _train_stop(self) -> None:
        if self.training is not None:
            self.training.stop()

    @guarded
    def _train_resume(self) -> None:
        self._training_logic().resume()
        with self.state:
            self.state.as_train_running = True

    def _poll_training(self) -> None:
        if self.training is None:
            return
        self.training.poll()
        running = self.training.is_running
        curves = self.training.curves
        points = []
        if curves is not None:
            for index, epoch in enumerate(curves.epochs):
                loss = curves.column(curves.LOSS)[index] if curves.LOSS in curves.column_names else math.nan
                dice = curves.column(curves.MEAN_DICE)[index] if curves.MEAN_DICE in curves.column_names else math.nan
                points.append({"epoch": epoch, "loss": _cell(loss), "dice": _cell(dice)})
        with self.state:
            self.state.as_train_status = self.training.status_text
            self.state.as_train_progress = self.training.progress
            self.state.as_train_curve = points
            if self.state.as_train_running and not running:
                self.state.as_train_running = False
                self._refresh_models()

    # ------------------------------------------------------------------------------ helpers
    def _mark_segments_changed(self, *_) -> None:
        self._segments_changed_at = time.monotonic()

    def _refresh_segments_when_quiet(self) -> None:
        """Recount the segments half a second after the last edit (a Paint stroke modifies the
        segmentation many times; counting exports every segment)."""
        changed = self._segments_changed_at
        if changed is not None and time.monotonic() - changed > POLL_INTERVAL_S:
            self._segments_changed_at = None
            self._refresh_segments()

    def _refresh_segments(self) -> None:
        counts = self.workspace.segment_voxels()
        with self.state:
            self.state.as_segments = [{"name": name, "voxels": voxels} for name, voxels in counts.items()]


def _box_through_slice(slice_node, corner_a, corner_b):
    """Two corners clicked on one slice span a flat box: give it a depth along the slice's
    normal equal to its larger in-plane side, centred on the slice."""
    import numpy as np

    matrix = slice_node.GetSliceToRAS()
    axes = np.array([[matrix.GetElement(row, column) for row in range(3)] for column in range(3)])
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    a, b = np.asarray(corner_a, float), np.asarray(corner_b, float)
    half_depth = max(abs(float((b - a) @ axes[0])), abs(float((b - a) @ axes[1]))) / 2
    return tuple(a - axes[2] * half_depth), tuple(b + axes[2] * half_depth)


def _network_names() -> list[str]:
    from AttentionSegLib.models.registry import list_models

    return list(list_models())


def _comparison_rows(reports: dict) -> tuple[list[dict], list[dict]]:
    """The Logic's compare reports as table rows: per model and label, Dice, HD95 and ASSD against
    the reference; without one, the Dice between every pair of models per label."""
    if "agreement" in reports:
        rows = [
            {"model": f"{r['model_a']} vs {r['model_b']}", "label": r["name"], "dice": _cell(r["dice"])}
            for r in reports["agreement"]
        ]
        headers = [{"title": "Models", "key": "model"}, {"title": "Label", "key": "label"}]
        return rows, headers + [{"title": "Dice", "key": "dice"}]
    rows = [
        {
            "model": model,
            "label": str(row.get("name", row.get("value"))),
            "dice": _cell(row.get("dice")),
            "hd95": _cell(row.get("hd95")),
            "assd": _cell(row.get("assd")),
        }
        for model, report in reports.items()
        for row in report["labels"]
    ]
    headers = [
        {"title": "Model", "key": "model"},
        {"title": "Label", "key": "label"},
        {"title": "Dice", "key": "dice"},
        {"title": "HD95 (mm)", "key": "hd95"},
        {"title": "ASSD (mm)", "key": "assd"},
    ]
    return rows, headers


def _comparison_chart(rows: list[dict]) -> str:
    """Dice per label, one bar per model (or pair of models), as a PNG data URL."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    models = list(dict.fromkeys(row["model"] for row in rows))
    labels = list(dict.fromkeys(row["label"] for row in rows))
    figure, axes = plt.subplots(figsize=(4.2, 2.6), dpi=100)
    width = 0.8 / max(len(models), 1)
    for index, model in enumerate(models):
        values = []
        for label in labels:
            cell = next((row["dice"] for row in rows if row["model"] == model and row["label"] == label), "n/a")
            values.append(float(cell) if cell not in ("n/a", "inf", "") else 0.0)
        axes.bar([i + index * width for i in range(len(labels))], values, width, label=model)
    axes.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(labels))], labels)
    axes.set_ylim(0, 1)
    axes.set_ylabel("Dice")
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
