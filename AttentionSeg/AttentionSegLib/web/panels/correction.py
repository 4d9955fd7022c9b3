"""The Correct and export panel: trame-slicer's Segment Editor on the working segmentation, save
the corrected case into a dataset definition, and download it as .seg.nrrd or NIfTI. Then the
model learns from the saved corrections: Update model (a fine-tune in the background, kept as the
model's next version), Roll back, and Next case (the case without labels it is least sure of)."""

from __future__ import annotations

import functools

from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_slicer.app.ui import SegmentEditorUI

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.web.panels.panel import Panel, guarded

__all__ = ["CorrectionPanel"]


class CorrectionPanel(Panel):
    title = "Correct and export"

    def initial_state(self) -> dict:
        return {"as_dataset_json": "", "as_update_running": False, "as_update_status": ""}

    def build(self) -> None:
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
            v3.VBtn("Export .seg.nrrd", classes="as-export-seg", click=self._download_js("seg.nrrd"))
            v3.VBtn("Export NIfTI", classes="as-export-nifti", click=self._download_js("nifti"))
        with html.Div(classes="d-flex flex-wrap ga-2 mt-2"):
            v3.VBtn(
                "Update model",
                click=(self._update_model, "[as_model, as_dataset_json, as_device]"),
                disabled=("as_update_running || !as_model",),
                classes="as-update-model",
            )
            v3.VBtn("Roll back model", click=(self._rollback, "[as_model]"), classes="as-rollback-model")
            v3.VBtn(
                "Next case",
                click=(self._next_case, "[as_model, as_dataset_json, as_device]"),
                classes="as-next-case",
            )
        html.Div("{{ as_update_status }}", classes="text-caption as-update-status")

    @guarded
    def _update_model(self, model: str, dataset_json: str, device: str = "auto") -> None:
        self.workspace.start_model_update(model, dataset_json, device)
        with self.state:
            self.state.as_update_running, self.state.as_update_status = True, f"updating {model} ..."

    @guarded
    def _rollback(self, model: str) -> None:
        version = self.workspace.rollback_model(model)
        self.say(f"{model}: version {version} is current again")

    @guarded
    def _next_case(self, model: str, dataset_json: str, device: str = "auto") -> None:
        top, path = self.workspace.next_case(model, dataset_json, device)
        self.page.case.load_volume(path)
        self.say(f"next case: {top.case_id} (expected wrong volume {top.expected_wrong_ml:.2f} mL)")

    def poll(self) -> None:
        updater = self.workspace.updater
        if updater is None or not self.state.as_update_running:
            return
        updater.poll()
        running = updater.is_running
        with self.state:
            self.state.as_update_status = updater.message if not running else updater.status_text()
            self.state.as_update_running = running
        if not running:
            self.page.models_changed()

    @guarded
    def _save_correction(self, dataset_json: str) -> None:
        result = self.workspace.save_correction(dataset_json)
        self.say(f"saved as training case {result.get('case_id', '')}".strip())

    async def _export(self, fmt: str):
        try:
            path = self.workspace.export(fmt)
        except AttentionSegError as error:
            self.page.show_error(str(error))
            return None
        self.say(f"exported {path.name}")
        return self.server.protocol.addAttachment(path.read_bytes())

    def _download_js(self, fmt: str) -> str:
        name = self.server.controller.trigger_name(functools.partial(self._export, fmt))
        return f"utils.download('segmentation-{fmt.replace('.', '-')}', trigger('{name}'), 'application/octet-stream')"
