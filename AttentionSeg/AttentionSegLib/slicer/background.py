"""Long segmentations in a separate process, so Slicer stays responsive: progress and cancel.

:class:`BackgroundSegmentation` writes the input volume(s) to a private folder, runs
``attentionseg segment --progress`` there as a process tree of its own (Slicer's Python inside
the application), follows its ``progress`` lines, and only when the process has finished reads
the label image back and adds the segmentation node. Cancelling kills the process tree and
deletes the folder: the scene is exactly as before. The process factory is injectable (the
same contract as the training module's) so tests can drive the runner.
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
from AttentionSegLib.slicer.logic import AttentionSegLogic, _volume_nodes, for_model, on_volume_grid
from AttentionSegLib.slicer.mrml import image_from_volume_node
from AttentionSegLib.slicer.training_logic import ProcessFactory, TrainingProcess, trainer_environment, trainer_python

__all__ = ["BackgroundSegmentation"]


class _ModelShape:
    """What :func:`for_model` needs to know of a model: the dimensionality of its images."""

    def __init__(self, model_file) -> None:
        preprocessing = model_file.preprocessing
        self.image_dims = 3 if preprocessing.get("slice_wise") else int(model_file.network["spatial_dims"])


class BackgroundSegmentation:
    """One background segmentation at a time.

    Args:
        logic: the scene's :class:`AttentionSegLogic` (it creates the segmentation node).
        process_factory: ``(command, env, log_path) -> process`` with ``poll``,
            ``terminate_tree`` and ``kill_tree``; default a real process group.
    """

    def __init__(self, logic: AttentionSegLogic, process_factory: ProcessFactory | None = None) -> None:
        self.logic = logic
        self.process_factory = process_factory or TrainingProcess.start
        self.process = None
        self.folder: Path | None = None
        self.state = "idle"  # idle, running, done, failed, cancelled
        self.message = ""
        self.result = None  # the segmentation node, once done
        self._job: dict = {}

    # ----------------------------------------------------------------------------- control
    def start(self, volume_nodes, model_file: str | Path, device: str = "auto", tta: bool = False, name=None) -> None:
        """Start segmenting; returns at once. Raises :class:`AttentionSegError` for bad input
        (missing model file, no volume) before any process starts."""
        from AttentionSegLib.inference.model_file import load_model_file

        if self.state == "running":
            raise AttentionSegError("a segmentation is already running; cancel it first")
        nodes = _volume_nodes(volume_nodes)
        model = load_model_file(model_file)
        images = [image_from_volume_node(node) for node in nodes]
        folder = Path(tempfile.mkdtemp(prefix="attentionseg-segment-"))
        try:
            inputs = []
            for index, image in enumerate(images):
                inputs.append(write_image(for_model(image, _ModelShape(model)), folder / f"input_{index}.nrrd"))
            output = folder / "labels.nrrd"
            command = [trainer_python(), "-m", "AttentionSegLib", "segment", *map(str, inputs)]
            command += ["--model", str(Path(model_file).resolve()), "--out", str(output), "--device", device]
            command += ["--progress"] + (["--tta"] if tta else [])
            self.process = self.process_factory(command, trainer_environment(), folder / "log.txt")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.folder, self.state, self.message, self.result = folder, "running", "", None
        self._job = {
            "reference": nodes[0],
            "volume_image": images[0],
            "labels": model.labels,
            "name": name or model_display_name(model_file),
            "output": output,
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
            self.result = self.logic.segmentation_node(
                label_image, self._job["labels"], self._job["name"], self._job["reference"]
            )
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
        events = [event for event in parse_events(self._log_lines()) if event["event"] == "progress"]
        return float(events[-1].get("fraction") or 0.0) if events else 0.0

    def _log_lines(self) -> list[str]:
        if self.folder is None or not (self.folder / "log.txt").is_file():
            return []
        return (self.folder / "log.txt").read_text(errors="replace").splitlines()

    def _last_line(self) -> str:
        lines = [line for line in self._log_lines() if line.strip() and not parse_events([line])]
        return lines[-1].removeprefix("attentionseg: error: ") if lines else ""

    def _finish(self, state: str, message: str) -> None:
        self.state, self.message = state, message
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder, self._job = None, {}
