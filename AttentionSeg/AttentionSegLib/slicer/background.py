"""Long segmentations in a separate process, so Slicer stays responsive: progress and cancel.

:class:`BackgroundSegmentation` writes the input volume(s) to a private folder, runs
``attentionseg segment --progress`` there with the modules' process runner
(:mod:`~AttentionSegLib.slicer.process`: a process tree of its own, Slicer's Python inside the
application), follows the ``progress`` events it prints, and only when the process has finished
reads the label image back and adds the segmentation node (and, when asked for, the uncertainty
map with its "Likely wrong" table, :mod:`~AttentionSegLib.slicer.uncertainty_maps`). Cancelling
kills the process tree and deletes the folder: the scene is exactly as before. The process
factory is injectable (the same contract as the training logic's) so tests can drive the runner.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_store import model_display_name
from AttentionSegLib.io.image import read_image, write_image
from AttentionSegLib.progress import parse_events
from AttentionSegLib.slicer.process import (
    EngineProcess,
    EventFollower,
    ProcessFactory,
    engine_command,
    engine_environment,
)
from AttentionSegLib.slicer.segments import segmentation_node_for_model
from AttentionSegLib.slicer.volumes import model_inputs, on_volume_grid

__all__ = ["BackgroundSegmentation"]

LOG_FILE_NAME = "log.txt"


class BackgroundSegmentation:
    """One background segmentation at a time.

    Args:
        scene: the MRML scene that receives the segmentation node.
        process_factory: ``(command, env, log_path) -> process`` with ``poll``,
            ``terminate_tree`` and ``kill_tree``; default :meth:`EngineProcess.start`.
    """

    def __init__(self, scene, process_factory: ProcessFactory | None = None) -> None:
        self.scene = scene
        self.process_factory = process_factory or EngineProcess.start
        self.process = None
        self.folder: Path | None = None
        self.state = "idle"  # idle, running, done, failed, cancelled
        self.message = ""
        self.result = None  # the segmentation node, once done
        self.uncertainty = None  # its UncertaintyNodes, once done, when asked for
        self._job: dict = {}
        self._events: EventFollower | None = None
        self._fraction = 0.0

    # ----------------------------------------------------------------------------- control
    def start(
        self,
        volume_nodes,
        model_file: str | Path,
        device: str = "auto",
        tta: bool = False,
        name=None,
        uncertainty: bool = False,
    ) -> None:
        """Start segmenting; returns at once. With ``uncertainty``, the map of where the segmentation
        is likely wrong comes too (the default method). Raises :class:`AttentionSegError` for bad
        input (missing model file, no volume) before any process starts."""
        from AttentionSegLib.inference.model_source import is_model_url, open_model_file

        if self.state == "running":
            raise AttentionSegError("a segmentation is already running; cancel it first")
        model = open_model_file(model_file)  # a server model: its metadata, the token from ATTENTIONSEG_TOKEN
        model.check_automatic(str(model_file))
        nodes, images, inputs = model_inputs(volume_nodes, model.image_dims)
        folder = Path(tempfile.mkdtemp(prefix="attentionseg-segment-"))
        try:
            input_files = [write_image(image, folder / f"input_{index}.nrrd") for index, image in enumerate(inputs)]
            output = folder / "labels.nrrd"
            source = model_file if is_model_url(model_file) else str(Path(model_file).resolve())
            command = engine_command("segment", *map(str, input_files), "--model", source)
            command += ["--out", str(output), "--device", device, "--progress"] + (["--tta"] if tta else [])
            if uncertainty:
                command += ["--uncertainty", str(folder / "uncertainty.nrrd")]
            self.process = self.process_factory(command, engine_environment(), folder / LOG_FILE_NAME)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.folder, self.state, self.message, self.result, self.uncertainty = folder, "running", "", None, None
        self._events, self._fraction = EventFollower(folder / LOG_FILE_NAME), 0.0
        self._job = {
            "reference": nodes[0],
            "volume_image": images[0],
            "model": model,
            "name": name or model_display_name(model_file),
            "output": output,
            "uncertainty": folder / "uncertainty.nrrd" if uncertainty else None,
        }

    def cancel(self) -> None:
        """Kill the process tree and forget its files; the scene is untouched."""
        if self.state != "running":
            return
        self.process.kill_tree()
        self._finish("cancelled", "segmentation cancelled")

    def poll(self) -> str:
        """Advance: returns the state; when the process has ended, adds the segmentation node
        (``done``) or keeps its last error line in :attr:`message` (``failed``)."""
        if self.state != "running":
            return self.state
        code = self.process.poll()
        if code is None:
            return self.state
        if code != 0 or not self._job["output"].is_file():
            self._finish("failed", self._last_line() or f"the segmentation process ended with code {code}")
            return self.state
        try:
            labels = read_image(self._job["output"])
            label_image = on_volume_grid(labels.array, self._job["volume_image"])
            self.result = segmentation_node_for_model(
                self.scene, label_image, self._job["model"], self._job["name"], self._job["reference"]
            )
            if self._job["uncertainty"] is not None:
                from AttentionSegLib.slicer.uncertainty_maps import add_uncertainty_map

                values = read_image(self._job["uncertainty"]).array
                grid = on_volume_grid(values, self._job["volume_image"])
                self.uncertainty = add_uncertainty_map(self.scene, grid, self._job["name"])
        except AttentionSegError as error:
            self._finish("failed", str(error))
            return self.state
        self._finish("done", f"segmented: {self._job['name']}")
        return self.state

    def wait(self, timeout_s: float | None = None, interval_s: float = 0.2) -> str:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.poll() == "running":
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(interval_s)
        return self.state

    # ---------------------------------------------------------------------------- progress
    @property
    def progress(self) -> float:
        """The fraction of windows done (0 before the first report, 1 once done)."""
        if self.state == "done":
            return 1.0
        if self._events is not None:
            fractions = [e.get("fraction") for e in self._events.read() if e["event"] == "progress"]
            self._fraction = float(fractions[-1] or 0.0) if fractions else self._fraction
        return self._fraction if self.state == "running" else 0.0

    def _log_lines(self) -> list[str]:
        if self.folder is None or not (self.folder / LOG_FILE_NAME).is_file():
            return []
        return (self.folder / LOG_FILE_NAME).read_text(errors="replace").splitlines()

    def _last_line(self) -> str:
        lines = [line for line in self._log_lines() if line.strip() and not parse_events([line])]
        return lines[-1].removeprefix("attentionseg: error: ") if lines else ""

    def _finish(self, state: str, message: str) -> None:
        self.state, self.message = state, message
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder, self._job, self._events = None, {}, None
