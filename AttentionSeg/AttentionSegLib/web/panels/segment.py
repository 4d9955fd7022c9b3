"""The Models panel's first part: choose a model and a device, Segment in a separate process
(progress, Cancel), and the model list. With "Show where the model is unsure", the uncertainty
map comes over the slices and its largest doubtful regions are listed, each with Go (the views
centre on it)."""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from AttentionSegLib.inference.model_store import model_display_name
from AttentionSegLib.web.panels.panel import Panel, guarded

__all__ = ["SegmentPanel", "DEVICES"]

DEVICES = ["auto", "cpu", "cuda"]


class SegmentPanel(Panel):
    title = "Models"

    def initial_state(self) -> dict:
        return {"as_models": [], "as_model": None, "as_device": "auto", "as_uncertainty": False, "as_likely_wrong": []}

    def build(self) -> None:
        v3.VSelect(
            label="Model", items=("as_models",), v_model=("as_model",), density="compact", classes="as-model-select"
        )
        v3.VSelect(label="Device", items=("as_devices", DEVICES), v_model=("as_device",), density="compact")
        v3.VCheckbox(
            label="Show where the model is unsure",
            v_model=("as_uncertainty",),
            density="compact",
            classes="as-uncertainty",
        )
        with html.Div(classes="d-flex ga-2"):
            # Buttons send the values they act on with the click: a v_model change may not have
            # reached the server yet when the click does.
            v3.VBtn(
                "Segment",
                click=(self._segment, "[as_model, as_device, as_uncertainty]"),
                disabled=("as_busy || !as_model",),
                classes="as-segment",
            )
            v3.VBtn("Cancel", click=self._cancel, disabled=("!as_busy",), classes="as-cancel")
            v3.VBtn("Refresh models", click=self.refresh_models, variant="text")
        v3.VProgressLinear(
            model_value=("as_progress * 100",), v_show=("as_busy",), height=6, classes="my-2 as-progress"
        )
        html.Div("{{ as_job }}", classes="text-caption as-job")
        with html.Div(v_show=("as_likely_wrong.length",), classes="as-likely-wrong"):
            html.Div("Likely wrong (largest doubtful regions)", classes="text-subtitle-2")
            with html.Div(
                v_for="(r, i) in as_likely_wrong", key="i", classes="d-flex align-center ga-2 as-likely-wrong-row"
            ):
                html.Span("{{ r.volume_ml.toFixed(2) }} mL, mean {{ r.mean.toFixed(2) }}", classes="text-caption")
                v3.VBtn(
                    "Go",
                    size="x-small",
                    variant="text",
                    click=(self._go_to_region, "[i]"),
                    classes="as-likely-wrong-go",
                )

    @guarded
    def refresh_models(self) -> None:
        names = [model_display_name(path) for path in self.workspace.models()]
        with self.state:
            self.state.as_models = names
            if self.state.as_model not in names:
                self.state.as_model = names[0] if names else None

    @guarded
    def _segment(self, model: str, device: str, uncertainty: bool = False) -> None:
        self.workspace.start_segmentation(model, device, uncertainty=bool(uncertainty))
        with self.state:
            self.state.as_likely_wrong = []
        self.page.job_started(f"segmenting with {model} ...")

    @guarded
    def _go_to_region(self, index: int) -> None:
        """Centre the slice views on a doubtful region (its interior point, RAS)."""
        regions = self.workspace.uncertainty.regions if self.workspace.uncertainty is not None else []
        self.page.centre_views(regions[int(index)]["ras"])

    def case_loaded(self) -> None:
        with self.state:
            self.state.as_likely_wrong = []

    def _show_uncertainty(self) -> None:
        """The map over the slices (the segmentation stays on top), its regions listed."""
        uncertainty = self.workspace.uncertainty
        if uncertainty is None:
            return
        self.page.slicer_app.display_manager.show_volume_in_slice_foreground(uncertainty.volume)
        for composite in self.page.slicer_app.scene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
            composite.SetForegroundOpacity(0.6)
        rows = [{"volume_ml": r["volume_ml"], "mean": r["mean"]} for r in uncertainty.regions]
        with self.state:
            self.state.as_likely_wrong = rows

    @guarded
    def _cancel(self) -> None:
        self.workspace.cancel()
        self.page.job_ended("cancelled", cancelled=True)

    def poll(self) -> None:
        if self.workspace.background.state != "running":
            return
        state, fraction, message = self.workspace.poll_segmentation()
        if state == "running":
            with self.state:
                self.state.as_progress = fraction
            return
        self.page.job_ended(message)
        if state == "done":
            self.page.edit(self.workspace.segmentation)
            self.page.segments_changed(now=True)
            self._show_uncertainty()
        elif state == "failed":
            self.page.show_error(message)
