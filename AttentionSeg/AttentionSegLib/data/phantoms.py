"""Synthetic label maps and images for tests, benchmarks and the demo (no downloads).

The phantoms are deterministic for a given seed: the same arrays on every machine. Dataset files
are written atomically (:mod:`AttentionSegLib.io.atomic`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from AttentionSegLib.io.atomic import write_json_atomic

__all__ = ["ellipsoid_label_map", "perturbed_label_map", "phantom_image", "write_phantom_dataset", "write_dicom_series"]


def ellipsoid_label_map(
    shape: tuple[int, ...], n_labels: int, seed: int = 0, spacing_mm: tuple[float, ...] | None = None
) -> np.ndarray:
    """A label map of ``n_labels`` overlapping ellipsoids (ellipses in 2D), later labels on top.

    Radii are drawn in mm (10 % to 30 % of the field of view) so that anisotropic spacing gives
    round organs in physical space, as in real scans.
    """
    rng = np.random.default_rng(seed)
    spacing = np.ones(len(shape)) if spacing_mm is None else np.asarray(spacing_mm, dtype=float)
    extent_mm = np.asarray(shape) * spacing
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij", sparse=True)
    label_map = np.zeros(shape, dtype=np.uint8)
    for value in range(1, n_labels + 1):
        centre = rng.uniform(0.25, 0.75, len(shape)) * extent_mm
        radii = rng.uniform(0.08, 0.25, len(shape)) * extent_mm
        radii = np.maximum(radii, 2.5 * spacing)
        inside = sum(((axis - c) / r) ** 2 for axis, c, r in zip(grid, centre, radii)) <= 1.0
        label_map[inside] = value
    return label_map


def perturbed_label_map(
    label_map: np.ndarray,
    seed: int = 0,
    max_shift_mm: float = 2.0,
    spacing_mm: tuple[float, ...] | None = None,
    erode_fraction: float = 0.5,
) -> np.ndarray:
    """A plausible "prediction" of ``label_map``: each label shifted by up to ``max_shift_mm``
    along every axis (whole voxels), and about ``erode_fraction`` of the labels eroded by one voxel."""
    rng = np.random.default_rng(seed)
    spacing = np.ones(label_map.ndim) if spacing_mm is None else np.asarray(spacing_mm, dtype=float)
    max_shift = np.floor(max_shift_mm / spacing).astype(int)
    prediction = np.zeros_like(label_map)
    for value in np.unique(label_map[label_map > 0]):
        mask = label_map == value
        if rng.random() < erode_fraction:
            mask = ndimage.binary_erosion(mask)
        shift = rng.integers(-max_shift, max_shift + 1)
        mask = ndimage.shift(mask, shift, order=0, mode="constant", cval=False)
        prediction[mask] = value
    return prediction


def phantom_image(label_map: np.ndarray, seed: int = 0, noise: float = 0.2) -> np.ndarray:
    """A float32 intensity image in which each label has its own mean intensity, plus noise."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(0.2, 1.0, int(label_map.max()) + 1)
    means[0] = 0.0
    image = means[label_map] + rng.normal(0.0, noise, label_map.shape)
    return ndimage.gaussian_filter(image, 0.7).astype(np.float32)


def write_phantom_dataset(
    folder: str | Path,
    n_cases: int = 8,
    shape: tuple[int, ...] = (24, 28, 24),
    n_labels: int = 2,
    spacing_mm: tuple[float, ...] | None = None,
    seed: int = 0,
    name: str = "Phantoms",
    label_names: list[str] | None = None,
    origin_mm: tuple[float, ...] | None = None,
    direction: np.ndarray | None = None,
    terminology: dict | None = None,
) -> Path:
    """Write a small nnU-Net v2 dataset of MRI-like phantoms and return its dataset.json path.

    Every case has ``n_labels`` ellipsoids (ellipses for a 2D ``shape``) with fixed mean
    intensities per label (so a network can learn them), a per-case brightness change and noise.
    ``spacing_mm`` is in array order (default 1 mm); ``origin_mm`` (LPS, index order) and
    ``direction`` place the grid (default 0 and identity). Labels are named ``label_names`` (default
    structure_1, ...), coded by ``terminology`` (the dataset.json block) when given. Images are
    ``imagesTr/phantom_XXX_0000.nii.gz``.
    """
    from AttentionSegLib.io.image import Image, write_image

    folder = Path(folder)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    spacing = tuple(spacing_mm or (1.0,) * len(shape))
    names = label_names or [f"structure_{value}" for value in range(1, n_labels + 1)]
    if len(names) != n_labels:
        raise ValueError(f"{len(names)} label names for {n_labels} labels")
    # Label intensities about 0.23 apart (3 labels), a per-case brightness change of up to 5 %
    # and noise: learnable from intensity and shape, as organs are.
    label_means = np.linspace(0.3, 1.0, n_labels + 1)
    label_means[0] = 0.0
    for index in range(n_cases):
        rng = np.random.default_rng(seed * 1000 + index)
        label_map = ellipsoid_label_map(shape, n_labels, seed=seed * 1000 + index, spacing_mm=spacing)
        image = label_means[label_map] * rng.uniform(0.95, 1.05) + rng.normal(0.0, 0.1, shape)
        image = ndimage.gaussian_filter(image, 0.7).astype(np.float32) * 100.0
        geometry = {
            "spacing": spacing[::-1],
            "origin": origin_mm or (0.0,) * len(shape),
            "direction": direction if direction is not None else np.eye(len(shape)),
        }
        case_id = f"phantom_{index:03d}"
        write_image(Image(image, **geometry), folder / "imagesTr" / f"{case_id}_0000.nii.gz")
        write_image(Image(label_map.astype(np.uint8), **geometry), folder / "labelsTr" / f"{case_id}.nii.gz")
    definition = {
        "name": name,
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, **{name: value for value, name in enumerate(names, start=1)}},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    if len(shape) == 2:
        definition["tensorImageSize"] = "2D"
    if terminology:
        definition["terminology"] = terminology
    return write_json_atomic(folder / "dataset.json", definition)


def write_dicom_series(
    image,
    folder: str | Path,
    *,
    modality: str = "CT",
    rescale: tuple[float, float] | list[tuple[float, float]] = (1.0, -1024.0),
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    description: str = "phantom",
    positions: np.ndarray | None = None,
    shuffle_names: bool = True,
) -> list[Path]:
    """Write a 3D :class:`~AttentionSegLib.io.image.Image` as a single-frame DICOM series (one file
    per slice), the way a scanner would: stored values ``round((value - intercept) / slope)`` as
    16-bit integers, each slice's ImagePositionPatient from the image's geometry (or ``positions``,
    LPS mm per slice, to make irregular or tilted series), file names in a scrambled order so that
    readers must sort by position.

    Args:
        rescale: (slope, intercept) for every slice, or one pair per slice.

    Returns:
        The written files, in slice order.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_slices = image.spatial_shape[0]
    pairs = [tuple(rescale)] * n_slices if isinstance(rescale, tuple) else [tuple(p) for p in rescale]
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    matrix = image.index_to_physical()
    row, column = image.direction[:, 0], image.direction[:, 1]
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    order = np.random.default_rng(0).permutation(n_slices) if shuffle_names else np.arange(n_slices)
    written = []
    for k in range(n_slices):
        slope, intercept = pairs[k]
        stored = np.round((image.array[k].astype(np.float64) - intercept) / slope)
        if stored.min() < -32768 or stored.max() > 32767:
            raise ValueError(f"slice {k}: values do not fit 16 bits with slope {slope} and intercept {intercept}")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{int(order[k]) + 1:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "PHANTOM1", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_reference_uid, ""
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName, ds.Manufacturer = "", "AttentionSeg phantom"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, k + 1
        ds.SeriesDescription = description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        position = matrix[:3, :3] @ np.array([0.0, 0.0, k]) + matrix[:3, 3] if positions is None else positions[k]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *column)]
        ds.PixelSpacing = [f"{image.spacing[1]:.6f}", f"{image.spacing[0]:.6f}"]
        ds.SliceThickness = f"{image.spacing[2]:.6f}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = image.spatial_shape[1], image.spatial_shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        if modality == "CT":
            ds.RescaleType, ds.KVP = "HU", "120"
        ds.PixelData = stored.astype("<i2").tobytes()
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        written.append(path)
    return written
