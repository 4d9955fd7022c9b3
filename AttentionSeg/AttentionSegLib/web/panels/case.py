"""The Case panel: the volume and the reference, uploaded or given at start, and volume rendering."""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.web.panels.panel import Panel, guarded

__all__ = ["CasePanel"]


class CasePanel(Panel):
    title = "Case"

    def initial_state(self) -> dict:
        return {"as_volume_name": "", "as_reference_name": "", "as_volume_rendering": False}

    def build(self) -> None:
        html.Div("Volume: {{ as_volume_name || 'none' }}", classes="text-body-2 as-volume-name")
        v3.VFileInput(
            label="Upload volume (.nii.gz, .nrrd, .mha; DICOM series as .zip)",
            density="compact",
            classes="as-upload-volume",
            change=self.upload_js(self._upload_volume),
        )
        html.Div("Reference: {{ as_reference_name || 'none' }}", classes="text-body-2 as-reference-name")
        v3.VFileInput(
            label="Upload reference (label map or DICOM SEG .dcm)",
            density="compact",
            classes="as-upload-reference",
            change=self.upload_js(self._upload_reference),
        )
        html.Div("Uploads up to {{ as_max_upload_mb }} MB", classes="text-caption")
        v3.VCheckbox(label="Volume rendering in the 3D view", v_model=("as_volume_rendering",), density="compact")
        self.state.change("as_volume_rendering")(self._on_volume_rendering_changed)

    # ------------------------------------------------------------------------------ loading
    def load_volume(self, path, series_uid: str | None = None) -> None:
        """Show an image file or DICOM series folder as the page's case (the old one goes)."""
        volume = self.workspace.load_volume(path, series_uid)
        display = self.page.slicer_app.display_manager
        display.show_volume_in_slice_background(volume)
        display.show_volume_in_slice_foreground(None)
        for view in self.page.slicer_app.view_manager.get_slice_views():
            # The slices of an oblique volume are its own voxel planes (as Slicer offers): a
            # lasso is drawn on one slice of the volume, and nothing is shown resampled.
            view.get_view_node().RotateToVolumePlane(volume)
        display.reset_views()
        self._show_volume_rendering(self.state.as_volume_rendering)
        self.page.edit(self.workspace.working_segmentation())
        with self.state:
            self.state.as_volume_name = volume.GetName()
            self.state.as_reference_name = ""
        self.page.case_loaded()

    def load_reference(self, path) -> None:
        node = self.workspace.load_reference(path)
        with self.state:
            self.state.as_reference_name = node.GetName()

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
        self.load_volume(path)
        self.say(f"loaded {path.name}")

    @guarded
    def _upload_reference(self, files) -> None:
        name, content = self._client_file(files)
        path = self.workspace.save_upload(name, content)
        self.load_reference(path)
        self.say(f"reference {path.name} loaded")

    # ----------------------------------------------------------------------- volume rendering
    def _show_volume_rendering(self, shown: bool) -> None:
        """Volume rendering in the 3D view, off by default: on a CPU (Mesa) it re-renders with
        every segment change and made each click in the page 0.3 s slower."""
        volume = self.workspace.volume
        display = self.page.slicer_app.display_manager
        if volume is None or volume.GetScene() is not self.page.slicer_app.scene:
            return
        if shown:
            display.show_volume(volume)
        else:
            display.hide_volume(volume)
            display.show_volume_in_slice_background(volume)

    def _on_volume_rendering_changed(self, as_volume_rendering=False, **_) -> None:
        self._show_volume_rendering(bool(as_volume_rendering))
