"""DICOM image series: a folder of slices from a PACS read as one volume with its geometry.

The headers are read with pydicom (no pixels) to find the series in a folder, choose one, sort its
slices along the slice normal and check that they make a regular grid; the pixels are then read by
SimpleITK's series reader (GDCM decodes every transfer syntax and applies each file's rescale
slope and intercept: CT comes out in HU). The geometry is ours, computed from the headers:

- origin: ImagePositionPatient of the first slice along the normal (LPS mm);
- direction: columns = ImageOrientationPatient's row and column cosines and their cross product;
- spacing: PixelSpacing (between columns, between rows) and the distance between slice positions.

We check what SimpleITK does not: one orientation and one size for all slices, no two slices at
the same position, no gantry tilt (slices sheared along the normal), no missing slices and a
regular slice distance. Small irregularities (up to 10 % of the slice distance, typical of rounded
positions) give a warning that says which spacing was used; anything larger is an error, since a
regular grid would misplace voxels by more than a tenth of a slice.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from AttentionSegLib.errors import ImageReadError, InputWarning

__all__ = ["DicomSeries", "is_dicom_folder", "find_series", "select_series", "read_dicom_series", "series_header"]

# Objects without a pixel grid of their own (segmentations, reports, structure sets, states).
_NON_IMAGE_MODALITIES = {"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "PR", "KO", "REG", "DOC"}
_MAX_FILES = 20000
_ORIENTATION_TOLERANCE = 1e-4
_SAME_POSITION_MM = 1e-3
_REGULAR_RELATIVE = 0.01  # slice distances within 1 % of each other: a regular grid, silently
_WARN_RELATIVE = 0.10  # up to 10 %: a warning naming the spacing used; beyond: an error
_TILT_DEGREES = 0.5
_DICOM_NAME_SUFFIXES = {".dcm", ".dicom", ".ima", ""}


@dataclass
class DicomSeries:
    """One image series, its slices sorted along the slice normal (ascending)."""

    folder: Path
    series_uid: str
    description: str
    modality: str
    files: list[Path]
    headers: list = field(repr=False, default_factory=list)  # pydicom Datasets without pixel data
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``UID (CT, 'Abdomen', 120 slices)`` for listings."""
        description = f", {self.description!r}" if self.description else ""
        return f"{self.series_uid} ({self.modality or '?'}{description}, {len(self.files)} slices)"


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder (which is then read as a DICOM series)."""
    return Path(path).is_dir()


def _dicom_files(folder: Path) -> list[Path]:
    files = []
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            if name.upper() == "DICOMDIR" or name.startswith("."):
                continue
            files.append(Path(root) / name)
            if len(files) > _MAX_FILES:
                raise ImageReadError(f"{folder}: more than {_MAX_FILES} files; give the folder of one series")
    return files


def find_series(folder: str | os.PathLike) -> dict[str, DicomSeries]:
    """Every image series under ``folder`` (subfolders included), by Series Instance UID; files that
    are not DICOM and non-image objects (SEG, SR, RTSTRUCT ...) are skipped. Slices are not sorted yet."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    if not folder.exists():
        raise ImageReadError(f"{folder}: folder not found")
    grouped: dict[str, list] = defaultdict(list)
    unreadable = []
    for path in _dicom_files(folder):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError, KeyError):
            if path.suffix.lower() in _DICOM_NAME_SUFFIXES:
                unreadable.append(path)  # named like DICOM but not readable: say so
            continue
        if "SeriesInstanceUID" not in header or str(header.get("Modality", "")).upper() in _NON_IMAGE_MODALITIES:
            continue
        if "Rows" not in header or "Columns" not in header:
            continue
        grouped[str(header.SeriesInstanceUID)].append((path, header))
    series = {}
    for uid, entries in grouped.items():
        first = entries[0][1]
        series[uid] = DicomSeries(
            folder,
            uid,
            str(first.get("SeriesDescription", "") or "").strip(),
            str(first.get("Modality", "") or ""),
            [path for path, _ in entries],
            [header for _, header in entries],
        )
    if unreadable:
        for found in series.values():
            found.warnings.append(
                f"{folder}: skipped {len(unreadable)} file(s) that are not readable DICOM "
                f"(e.g. {unreadable[0].name}); if they were slices of this series, slices are missing"
            )
    return series


def select_series(folder: str | os.PathLike, series_uid: str | None = None) -> DicomSeries:
    """The series ``series_uid`` of ``folder`` (or its only series), checked and sorted.

    Raises:
        ImageReadError: no DICOM image in the folder; several series and none chosen (the line
            lists them); the chosen UID absent; slices that do not make one regular grid.
    """
    folder = Path(folder)
    series = find_series(folder)
    if not series:
        raise ImageReadError(f"{folder}: no DICOM image files in this folder (nor in its subfolders)")
    if series_uid is None:
        if len(series) > 1:
            listed = "; ".join(s.label for s in sorted(series.values(), key=lambda s: -len(s.files)))
            raise ImageReadError(f"{folder}: holds {len(series)} DICOM series, choose one with --series UID: {listed}")
        chosen = next(iter(series.values()))
    elif series_uid not in series:
        raise ImageReadError(
            f"{folder}: no series with UID {series_uid} (found: {', '.join(s.series_uid for s in series.values())})"
        )
    else:
        chosen = series[series_uid]
    _sort_and_check(chosen)
    return chosen


def _vector(header, keyword: str, length: int, path: Path) -> np.ndarray:
    value = header.get(keyword)
    try:
        vector = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        vector = np.empty(0)
    if vector.size != length or not np.all(np.isfinite(vector)):
        raise ImageReadError(f"{path}: {keyword} is missing or malformed ({value!r})")
    return vector


def _sort_and_check(series: DicomSeries) -> None:
    """Sort the slices along the normal and check they make one regular grid (see module docs)."""
    where = f"{series.folder} (series {series.series_uid})"
    headers, files = series.headers, series.files
    for path, header in zip(files, headers):
        if int(header.get("NumberOfFrames", 1) or 1) > 1:
            raise ImageReadError(
                f"{path}: a multi-frame (enhanced) DICOM image; convert it to single-frame slices first"
            )
    sizes = Counter((int(h.Rows), int(h.Columns)) for h in headers)
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c} ({n} files)" for (r, c), n in sizes.most_common())
        raise ImageReadError(f"{where}: slices of different sizes: {listed}")
    orientations = [_vector(h, "ImageOrientationPatient", 6, p) for p, h in zip(files, headers)]
    positions = np.asarray([_vector(h, "ImagePositionPatient", 3, p) for p, h in zip(files, headers)])
    if np.max(np.abs(np.asarray(orientations) - orientations[0])) > _ORIENTATION_TOLERANCE:
        raise ImageReadError(f"{where}: slices of different orientations (a localizer or several stacks mixed)")
    row, column = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, column)
    if abs(np.linalg.norm(normal) - 1.0) > 1e-3 or abs(float(row @ column)) > 1e-3:
        raise ImageReadError(f"{files[0]}: ImageOrientationPatient is not two orthogonal unit vectors")
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    series.files = [files[i] for i in order]
    series.headers = [headers[i] for i in order]
    positions, distances = positions[order], distances[order]
    _check_instance_numbers(series, where)
    if len(files) < 2:
        return
    gaps = np.diff(distances)
    if np.any(gaps < _SAME_POSITION_MM):
        k = int(np.argmax(gaps < _SAME_POSITION_MM))
        raise ImageReadError(
            f"{where}: {series.files[k].name} and {series.files[k + 1].name} lie at the same position "
            f"({distances[k]:.2f} mm along the normal): several acquisitions, echoes or time points mixed in one series"
        )
    steps = np.diff(positions, axis=0)
    tilt = np.degrees(np.arccos(np.clip(np.abs(steps @ normal) / np.linalg.norm(steps, axis=1), -1, 1)))
    if np.max(tilt) > _TILT_DEGREES:
        raise ImageReadError(
            f"{where}: gantry tilt of {np.max(tilt):.1f} degrees (slices are sheared along the normal); "
            "resample it to a regular grid first (Slicer's DICOM module: acquisition geometry regularization)"
        )
    typical = float(np.median(gaps))
    deviation = np.abs(gaps - typical) / typical
    if np.max(deviation) <= _REGULAR_RELATIVE:
        return
    multiples = gaps / typical
    if np.all(np.abs(multiples - np.round(multiples)) <= _WARN_RELATIVE) and np.any(np.round(multiples) >= 2):
        k = int(np.argmax(np.round(multiples) >= 2))
        missing = int(np.sum(np.round(multiples) - 1))
        raise ImageReadError(
            f"{where}: {missing} slice(s) missing (gap of {gaps[k]:.3g} mm after {series.files[k].name}, "
            f"slice distance {typical:.3g} mm)"
        )
    if np.max(deviation) > _WARN_RELATIVE:
        raise ImageReadError(
            f"{where}: irregular slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm); "
            "resample it to a regular grid first"
        )
    mean = float((distances[-1] - distances[0]) / (len(distances) - 1))
    series.warnings.append(
        f"{where}: slice spacing varies from {gaps.min():.4g} to {gaps.max():.4g} mm; "
        f"read on a regular grid of {mean:.4g} mm (voxels move by at most {np.max(deviation) * 100:.0f} % of a slice)"
    )


def _check_instance_numbers(series: DicomSeries, where: str) -> None:
    """Warn when the instance numbers, unique and consecutive in most series, leave holes: the
    positions alone cannot show a slice missing at either end, or one of only three."""
    try:
        numbers = sorted(int(h.InstanceNumber) for h in series.headers)
    except (AttributeError, TypeError, ValueError):
        return
    if len(set(numbers)) != len(numbers) or len(numbers) < 2:
        return
    holes = (numbers[-1] - numbers[0] + 1) - len(numbers)
    if 0 < holes <= len(numbers):  # a few holes: likely lost files; many: a numbering scheme
        series.warnings.append(
            f"{where}: instance numbers {numbers[0]}..{numbers[-1]} skip {holes} number(s); "
            "check that no slice file is missing"
        )


def series_header(series: DicomSeries) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...], np.ndarray]:
    """(size i, j, k; spacing mm; origin LPS mm; direction) of a sorted, checked series."""
    first = series.headers[0]
    orientation = _vector(first, "ImageOrientationPatient", 6, series.files[0])
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    pixel_spacing = _vector(first, "PixelSpacing", 2, series.files[0])
    if np.any(pixel_spacing <= 0):
        raise ImageReadError(f"{series.files[0]}: PixelSpacing must be positive, got {pixel_spacing.tolist()}")
    origin = _vector(first, "ImagePositionPatient", 3, series.files[0])
    if len(series.files) > 1:
        last = _vector(series.headers[-1], "ImagePositionPatient", 3, series.files[-1])
        slice_spacing = float((last - origin) @ normal) / (len(series.files) - 1)
    else:
        slice_spacing = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    # PixelSpacing is (between rows, between columns): i (along a row) uses the second value.
    spacing = (float(pixel_spacing[1]), float(pixel_spacing[0]), abs(slice_spacing))
    direction = np.stack([row, column, normal], axis=1)
    size = (int(first.Columns), int(first.Rows), len(series.files))
    return size, spacing, tuple(float(v) for v in origin), direction


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None):
    """Read one series of ``folder`` as an :class:`~AttentionSegLib.io.image.Image` (CT in HU).

    Returns:
        (image, series): the image on the series' grid (slices in ascending order along the
        normal) and the :class:`DicomSeries` it came from (files in that order, warnings). Each
        warning (what the reader had to correct) is also issued as an :class:`InputWarning`.

    Raises:
        ImageReadError: one line naming the folder (or file) and the problem.
    """
    from AttentionSegLib.io.image import Image

    series = select_series(folder, series_uid)
    for message in series.warnings:
        warnings.warn(message, InputWarning, stacklevel=3)
    size, spacing, origin, direction = series_header(series)
    try:
        array, has_channels = _read_pixels(series)
    except RuntimeError:
        bad = _unreadable_file(series)
        raise ImageReadError(f"{bad}: cannot read its pixel data (damaged or truncated)") from None
    spatial = array.shape[1:] if has_channels else array.shape
    if tuple(spatial) != (size[2], size[1], size[0]):
        raise ImageReadError(
            f"{series.folder}: pixel data {spatial} do not match the headers ({size[2]} slices of {size[0]}x{size[1]})"
        )
    return Image(array, spacing, origin, direction, has_channels=has_channels), series


def _unreadable_file(series: DicomSeries) -> Path:
    """The first file of the series whose pixels SimpleITK cannot read (the folder if none alone)."""
    import SimpleITK as sitk

    for path in series.files:
        try:
            sitk.ReadImage(str(path))
        except RuntimeError:
            return path
    return series.folder


def _rescale(header) -> tuple[float, float]:
    return float(header.get("RescaleSlope", 1) or 1), float(header.get("RescaleIntercept", 0) or 0)


def _read_pixels(series: DicomSeries) -> tuple[np.ndarray, bool]:
    """Pixels in array order (k, j, i) (channels first for colour), rescaled per slice."""
    import SimpleITK as sitk

    if len({_rescale(h) for h in series.headers}) == 1:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(path) for path in series.files])
        volume = reader.Execute()
        slices = None
    else:
        # GDCM's series reader picks one pixel type from the first file's rescale: with slopes that
        # differ per slice (some PET and older CT), fractional values of later slices would be cut.
        # Read each file with its own rescale instead.
        slices = [sitk.GetArrayFromImage(sitk.ReadImage(str(path))) for path in series.files]
        volume = None
    if volume is not None:
        array = sitk.GetArrayFromImage(volume)
        colour = volume.GetNumberOfComponentsPerPixel() > 1
        if volume.GetDimension() == 2:  # one slice
            array = array[None]
    else:
        slices = [s[0] if s.ndim >= 3 and s.shape[0] == 1 else s for s in slices]
        colour = slices[0].ndim == 3
        array = np.stack([s.astype(np.float32) for s in slices])
    if colour:
        return np.moveaxis(array, -1, 0), True
    return array, False
