"""The Correct and export panel: trame-slicer's Segment Editor on the working segmentation, save
the corrected case into a dataset definition, and download it as .seg.nrrd or NIfTI."""

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
        return {"as_dataset_json": ""}

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
