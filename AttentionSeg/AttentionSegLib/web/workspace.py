"""What one web page works on: a scene, its volume, reference and working segmentation, and the
job logics of the Slicer module on that scene (no trame here; the page is :mod:`.app`).

Every operation of the page is a method here that calls the same logic classes as the Slicer
modules (:class:`~AttentionSegLib.slicer.jobs.SegmentationJobs`,
:class:`~AttentionSegLib.slicer.background.BackgroundSegmentation`); the page only turns clicks
and uploads into these calls and their results into state. One workspace serves one user's
scene: the server keeps one per process.

Uploads are written only into the workspace's own folder, under a sanitised name, after a size
check, and are read with the engine's readers, so a bad file gives the same one-line error as
the command line.
"""

from __future__ import annotations

import re
from pathlib import Path

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_store import model_display_name, models_in_folders
from AttentionSegLib.io.image import image_suffix, read_image
from AttentionSegLib.io.segmentation_file import write_label_image
from AttentionSegLib.slicer.background import BackgroundSegmentation
from AttentionSegLib.slicer.click_object import ClickObject
from AttentionSegLib.slicer.jobs import SegmentationJobs
from AttentionSegLib.slicer.mrml import (
    label_image_from_segmentation_node,
    remove_nodes,
    volume_node_from_image,
)
from AttentionSegLib.slicer.reference_file import reference_segmentation_from_file
from AttentionSegLib.slicer.segment_overlap import (
    OVERLAP_NEVER,
    OVERLAP_OVERWRITE,
    segment_is_locked,
    set_segment_locked,
)
from AttentionSegLib.slicer.segments import segment_label_values, segment_voxel_count, segment_voxel_counts
from AttentionSegLib.web import DEFAULT_MAX_UPLOAD_MB

__all__ = ["Workspace", "sanitised_name", "DEFAULT_MAX_UPLOAD_MB", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".nhdr", ".mha", ".mhd")
# A DICOM series arrives zipped (browsers upload files, not folders); a DICOM SEG as one .dcm file.
DICOM_UPLOAD_SUFFIXES = (".zip", ".dcm")
# A zip may not expand to more than this many times the upload limit (zip bombs), nor hold more files.
ZIP_EXPANSION_LIMIT = 4
ZIP_MAX_FILES = 20000
EXPORT_FORMATS = {"seg.nrrd": ".seg.nrrd", "nifti": ".nii.gz"}


def sanitised_name(name: str) -> str:
    """A file name safe to create in the workspace: the last path component of ``name``, with
    anything but letters, digits, ``.``, ``-`` and ``_`` replaced, never hidden and never empty.

    Raises:
        AttentionSegError: nothing usable is left of the name.
    """
    base = re.split(r"[\\/]", str(name))[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    if not cleaned.strip("_"):
        raise AttentionSegError(f"{name!r}: not a usable file name")
    return cleaned[:200]


class Workspace:
    """The page's scene and the operations on it.

    Args:
        scene: the MRML scene the views show (trame-slicer's ``SlicerApp.scene``, or a
            :class:`~AttentionSegLib.slicer.mrml.StandaloneScene`'s in tests).
        folder: the server's working folder; uploads and exports go under it, nowhere else.
        models_folder: the models folder besides the default one (``attentionseg models``).
        max_upload_mb: uploads larger than this are refused before they are written.
        server_url: a segmentation server (``attentionseg serve``) whose models join the list; the
            token comes from ``ATTENTIONSEG_TOKEN``.
    """

    def __init__(
        self,
        scene,
        folder: str | Path,
        models_folder: str | Path | None = None,
        max_upload_mb=DEFAULT_MAX_UPLOAD_MB,
        server_url: str | None = None,
    ) -> None:
        self.scene = scene
        self.folder = Path(folder)
        self.uploads = self.folder / "uploads"
        self.exports = self.folder / "exports"
        for each in (self.uploads, self.exports):
            each.mkdir(parents=True, exist_ok=True)
        self.models_folder = Path(models_folder) if models_folder else None
        self.server_url = server_url.rstrip("/") if server_url else None
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.jobs = SegmentationJobs.for_scene(scene)
        self.background = BackgroundSegmentation(scene)
        self.updater = None  # the TrainingLogic of a running or finished model update
        self.volume = None
        self.reference = None
        self.segmentation = None  # the working segmentation: a model's output, clicks and edits
        self.click_object = ClickObject(self.jobs.click)  # the object interactive prompts refine

    # ------------------------------------------------------------------------------ models
    def models(self) -> list[Path | str]:
        """The model files of ``models_folder`` then the default models folder, each once, then
        the server's models (their addresses) when the page has a server.

        Raises:
            AttentionSegError: the server is unreachable or refuses the token (one line).
        """
        models: list[Path | str] = list(models_in_folders(self.models_folder))
        if self.server_url:
            from AttentionSegLib.serve.client import client_for

            client = client_for(self.server_url)
            models += [client.model_url(model["name"]) for model in client.models()]
        return models

    def model_file(self, name: str) -> Path | str:
        """The model file (or server model) called ``name`` (:func:`model_display_name`) in the list."""
        for path in self.models():
            if model_display_name(path) == name or str(path) == name:
                return path
        raise AttentionSegError(f"{name}: no such model in the models folder")

    def is_interactive(self, name: str) -> bool:
        """Whether the model called ``name`` refines objects from clicks (read from its file)."""
        from AttentionSegLib.inference.model_source import open_model_file

        return open_model_file(self.model_file(name)).is_interactive

    # ---------------------------------------------------------------------------- uploads
    def check_upload_size(self, name: str, n_bytes: int) -> None:
        """Raises AttentionSegError when an upload of ``n_bytes`` is over the limit."""
        if n_bytes > self.max_upload_bytes:
            size_mb, limit_mb = n_bytes / 1024 / 1024, self.max_upload_bytes / 1024 / 1024
            raise AttentionSegError(f"{name}: {size_mb:.1f} MB is over the upload limit of {limit_mb:g} MB")

    def save_upload(self, name: str, content: bytes) -> Path:
        """Write an uploaded file into the uploads folder (a new name when one exists).

        Raises:
            AttentionSegError: too large, an unsupported ending, or an unusable name.
        """
        safe = sanitised_name(name)
        self.check_upload_size(safe, len(content))
        suffix = image_suffix(Path(safe)) or Path(safe).suffix.lower()
        if suffix == ".zip":
            return self._save_zipped_series(safe, content)
        if suffix not in IMAGE_SUFFIXES + DICOM_UPLOAD_SUFFIXES:
            accepted = ", ".join(IMAGE_SUFFIXES + DICOM_UPLOAD_SUFFIXES)
            raise AttentionSegError(f"{safe}: not an image this page reads ({accepted}; a DICOM series as .zip)")
        path = self.uploads / safe
        stem = safe[: -len(suffix)]
        counter = 1
        while path.exists():  # never overwrite an earlier upload
            counter += 1
            path = self.uploads / f"{stem}-{counter}{suffix}"
        path.write_bytes(content)
        return path

    def _save_zipped_series(self, name: str, content: bytes) -> Path:
        """Unpack a zipped DICOM series into a new folder of the uploads (flattened, names
        sanitised; nothing outside the folder is ever written) and return the folder.

        Raises:
            AttentionSegError: not a zip, too many files, or expanding beyond the limit.
        """
        import io
        import shutil
        import zipfile

        try:
            archive = zipfile.ZipFile(io.BytesIO(content))
            members = [m for m in archive.infolist() if not m.is_dir()]
        except zipfile.BadZipFile:
            raise AttentionSegError(f"{name}: not a readable zip file") from None
        if len(members) > ZIP_MAX_FILES:
            raise AttentionSegError(f"{name}: {len(members)} files; a series zip may hold {ZIP_MAX_FILES}")
        expanded = sum(m.file_size for m in members)
        if expanded > ZIP_EXPANSION_LIMIT * self.max_upload_bytes:
            raise AttentionSegError(f"{name}: expands to {expanded / 1024 / 1024:.0f} MB, over the limit")
        stem = name[: -len(".zip")] or "series"
        folder = self.uploads / stem
        counter = 1
        while folder.exists():  # never mix into an earlier upload
            counter += 1
            folder = self.uploads / f"{stem}-{counter}"
        partial = self.uploads / f".{folder.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            for index, member in enumerate(members):
                # Flattened: a member's own path never decides where it lands.
                target = partial / f"{index:05d}_{sanitised_name(member.filename.split('/')[-1] or 'file')}"
                with archive.open(member) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
            partial.rename(folder)
        except (OSError, zipfile.BadZipFile, AttentionSegError) as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise AttentionSegError(f"{name}: cannot unpack ({error})") from None
        return folder

    # ---------------------------------------------------------------------------- loading
    def load_volume(self, path: str | Path, series_uid: str | None = None):
        """Read an image file or a DICOM series folder (checked by the engine's reader) and make
        it the page's volume.
        Clears the scene first: the page shows one case at a time.

        Raises:
            AttentionSegError: the file cannot be read as an image (one line naming it).
        """
        path = Path(path)
        image = read_image(path, series_uid)  # before the scene is cleared: a bad file leaves the page as it was
        if image.has_channels:
            image = image.channel(0)
        self.background.cancel()
        self.scene.Clear(0)
        self.click_object.forget()  # the old case's objects; loaded models stay loaded
        self.volume = volume_node_from_image(self.scene, image, _stem(path))
        self.reference = self.segmentation = None
        return self.volume

    def load_reference(self, path: str | Path):
        """Read a label map (``.seg.nrrd`` keeps its segment names) or a DICOM SEG (placed on the
        volume's grid) as the reference segmentation.

        Raises:
            AttentionSegError: no volume yet, or the file cannot be read as a label map.
        """
        volume = self._require_volume()
        path = Path(path)
        reference = reference_segmentation_from_file(self.scene, path, volume, name=f"reference {_stem(path)}")
        if self.reference is not None:
            remove_nodes(self.scene, self.reference)
        self.reference = reference
        self.reference.GetDisplayNode().SetVisibility(False)  # shown on demand; the work is on top
        return self.reference

    # --------------------------------------------------------------------------- segment
    def start_segmentation(self, model: str, device: str = "auto", uncertainty: bool = False) -> None:
        """Start the model on the volume in a separate process (see :meth:`poll_segmentation`);
        with ``uncertainty`` the map of where it is likely wrong comes too (:attr:`uncertainty`)."""
        self.background.start(self._require_volume(), self.model_file(model), device=device, uncertainty=uncertainty)

    @property
    def uncertainty(self):
        """The last segmentation's uncertainty nodes and regions
        (:class:`~AttentionSegLib.slicer.uncertainty_maps.UncertaintyNodes`), or None."""
        return self.background.uncertainty

    def poll_segmentation(self) -> tuple[str, float, str]:
        """``(state, fraction done, message)``; once done the model's segmentation becomes the
        working segmentation."""
        state = self.background.poll()
        if state == "done" and self.background.result is not None and self.background.result is not self.segmentation:
            self.segmentation = self.background.result  # prompts go there next: a new object
        return state, self.background.progress, self.background.message

    def cancel(self) -> None:
        self.background.cancel()

    # ------------------------------------------------------------- learning from corrections
    def start_model_update(self, model: str, dataset_json: str, device: str = "auto", minutes: float = 5.0) -> None:
        """Fine-tune the model on the dataset with its saved corrections, in a separate process
        (:attr:`updater`); when done the model file is its next version."""
        from AttentionSegLib.slicer.training_logic import TrainingLogic

        if not dataset_json:
            raise AttentionSegError("give the dataset definition (dataset.json) the corrections were saved into")
        if self.updater is not None and self.updater.is_running:
            raise AttentionSegError("a model update is running already")
        self.updater = TrainingLogic(self.scene)
        self.updater.start_update(self.model_file(model), dataset_json, minutes, device)

    def rollback_model(self, model: str) -> int:
        """Make the model's previous version current again; returns its number."""
        from AttentionSegLib.inference.model_versions import rollback

        return rollback(self.model_file(model)).version

    def next_case(self, model: str, dataset_json: str, device: str = "auto"):
        """``(ranked case, its first image file)``: the dataset's case without labels the model is
        least sure of (:mod:`~AttentionSegLib.inference.case_ranking`); the page then loads it."""
        from AttentionSegLib.inference.case_ranking import next_case

        if not dataset_json:
            raise AttentionSegError("give the dataset definition (dataset.json) whose cases to rank")
        top, case = next_case(self.jobs.segment.predictors.get(self.model_file(model), device), dataset_json)
        return top, case.images[0]

    def compare(self, models: list[str], device: str = "auto", progress=None, cancel=None) -> dict:
        """Every chosen model on the volume (the Logic's compare): returns its result, whose
        ``reports`` map each model to its metrics against the reference (or pairwise Dice)."""
        files = [self.model_file(name) for name in models]
        return self.jobs.compare.compare(self._require_volume(), files, self.reference, device, False, progress, cancel)

    # ----------------------------------------------------------------------------- click
    def working_segmentation(self):
        """The working segmentation, made (empty) on first use."""
        if self.segmentation is None or self.segmentation.GetScene() is not self.scene:
            self.segmentation = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "work")
            self.segmentation.CreateDefaultDisplayNodes()
            self.segmentation.SetReferenceImageGeometryParameterFromVolumeNode(self._require_volume())
        return self.segmentation

    @property
    def click_segment_id(self) -> str | None:
        """The segment the next interactive prompt refines (None: the next starts an object)."""
        return self.click_object.segment_id

    def click(self, point_ras, positive: bool, model: str, device: str = "auto") -> str:
        """One click (mm, RAS) with ``model`` into the working segmentation, by the engine's rule
        for the object being clicked (:class:`~AttentionSegLib.slicer.click_object.ClickObject`):
        with an interactive model the first click of an object starts a segment and the next ones
        refine it; with an automatic model the clicked structure is added or removed. Returns the
        segment id."""
        point = tuple(float(v) for v in point_ras)
        return self.click_object.click(
            self._require_volume(), self.model_file(model), point, self.working_segmentation(), positive, device
        )

    def box(self, corner_a, corner_b, model: str, device: str = "auto") -> str:
        """A box prompt (two opposite corners, mm, RAS) with an interactive model."""
        corners = (tuple(corner_a), tuple(corner_b))
        return self.click_object.box(
            self._require_volume(), self.model_file(model), corners, self.working_segmentation(), device
        )

    def scribble(self, points_ras, positive: bool, model: str, device: str = "auto") -> str:
        """A scribble (a stroke through ``points_ras``, mm, RAS) with an interactive model."""
        points = [tuple(float(v) for v in point) for point in points_ras]
        return self.click_object.scribble(
            self._require_volume(), self.model_file(model), points, self.working_segmentation(), positive, device
        )

    def lasso(self, points_ras, model: str, device: str = "auto") -> str:
        """A lasso (a closed contour through ``points_ras`` on one slice, mm, RAS) with an
        interactive model."""
        points = [tuple(float(v) for v in point) for point in points_ras]
        return self.click_object.lasso(
            self._require_volume(), self.model_file(model), points, self.working_segmentation(), device
        )

    def set_overwrite(self, overwrite: bool) -> None:
        """Whether a new or refined object may take voxels of other (unlocked) segments (default:
        never; :mod:`~AttentionSegLib.slicer.segment_overlap`)."""
        self.jobs.click.overlap = OVERLAP_OVERWRITE if overwrite else OVERLAP_NEVER

    def set_locked(self, segment_name: str, locked: bool) -> None:
        """Lock a segment of the working segmentation against prompts (or unlock it).

        Raises:
            AttentionSegError: no such segment.
        """
        node = self.segmentation
        segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(segment_name) if node is not None else ""
        if not segment_id:
            raise AttentionSegError(f"there is no segment {segment_name!r} to lock")
        set_segment_locked(node, segment_id, locked)

    def segment_states(self) -> list[dict]:
        """The working segmentation's segments for the page's list: name, voxels (each segment
        counted whole) and whether it is locked."""
        if self.segmentation is None:
            return []
        segmentation = self.segmentation.GetSegmentation()
        states = []
        for index in range(segmentation.GetNumberOfSegments()):
            segment_id = segmentation.GetNthSegmentID(index)
            states.append({
                "name": segmentation.GetSegment(segment_id).GetName(),
                "voxels": segment_voxel_count(self.segmentation, segment_id),
                "locked": segment_is_locked(self.segmentation, segment_id),
            })  # fmt: skip
        return states

    def undo_click(self) -> bool:
        """Undo the last prompt of the current object; False when there is nothing to undo."""
        return self.click_object.undo()

    def suggest_click(self):
        """``(RAS point, positive)`` where the current object is least certain, or None."""
        return self.click_object.suggest()

    def new_object(self) -> None:
        """The next prompt starts a new segment."""
        self.click_object.new_object()

    # --------------------------------------------------------------- metrics, corrections
    def metrics(self, nsd_tolerance_mm: float = 1.0) -> dict:
        """The working segmentation against the reference on the volume's grid (the Logic's
        ``compute_metrics``: the numbers of ``attentionseg evaluate``)."""
        if self.reference is None:
            raise AttentionSegError("load a reference segmentation first")
        if self.segmentation is None:
            raise AttentionSegError("segment or click first: there is no segmentation to measure")
        self._name_reference_after_segments()
        table, report = self.jobs.metrics.compute_metrics(
            self.segmentation, self.reference, self._require_volume(), nsd_tolerance_mm
        )
        remove_nodes(self.scene, table)
        return report

    def save_correction(self, dataset_json: str | Path) -> dict:
        """The working segmentation, as corrected, becomes a new training case of the dataset
        definition (the Logic's ``save_correction``)."""
        if self.segmentation is None:
            raise AttentionSegError("there is no segmentation to save")
        if not str(dataset_json).strip():
            raise AttentionSegError("give the dataset definition (dataset.json) the case is added to")
        return self.jobs.corrections.save_correction(self._require_volume(), self.segmentation, dataset_json)

    def export(self, fmt: str) -> Path:
        """Write the working segmentation as ``seg.nrrd`` (named, coloured segments) or ``nifti``
        (a label map) on the volume's grid into the exports folder; returns the file."""
        if fmt not in EXPORT_FORMATS:
            raise AttentionSegError(f"unknown export format {fmt!r}; choose {', '.join(EXPORT_FORMATS)}")
        if self.segmentation is None:
            raise AttentionSegError("there is no segmentation to export")
        volume = self._require_volume()
        labels = label_image_from_segmentation_node(self.segmentation, volume)
        segmentation = self.segmentation.GetSegmentation()
        segments = []
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            value = int(segment.GetLabelValue()) or index + 1
            segments.append({"value": value, "name": segment.GetName(), "color": list(segment.GetColor())})
        path = self.exports / f"{sanitised_name(volume.GetName())}_segmentation{EXPORT_FORMATS[fmt]}"
        return write_label_image(labels, path, segments, overwrite=True)

    # ----------------------------------------------------------------------------- helpers
    def segment_voxels(self) -> dict[str, int]:
        """Voxels per segment name of the working segmentation, each segment counted whole (where
        segments overlap, each holds its voxels: the page's list and the tests read this)."""
        if self.segmentation is None:
            return {}
        return segment_voxel_counts(self.segmentation)

    def _name_reference_after_segments(self) -> None:
        """A reference read from a plain label map has no names: its labels take the names of the
        working segmentation's segments of the same label value, so that they are compared as
        ``attentionseg evaluate`` compares two label maps (by value)."""
        working = {int(value): name for name, value in segment_label_values(self.segmentation).items()}
        segmentation = self.reference.GetSegmentation()
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            value = int(segment.GetLabelValue())
            if segment.GetName() == _unnamed(value) and value in working:
                segment.SetName(working[value])

    def _require_volume(self):
        if self.volume is None or self.volume.GetScene() is not self.scene:
            raise AttentionSegError("load a volume first")
        return self.volume


def _unnamed(value: int) -> str:
    return f"label {value}"


def _stem(path: Path) -> str:
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem
