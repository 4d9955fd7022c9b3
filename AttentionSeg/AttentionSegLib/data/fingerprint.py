"""The dataset fingerprint: what planning needs to know of a dataset, read once from its files.

Per case: the spatial shape and spacing (array order, mm), and per foreground label its voxel
count, bounding box and centroid. Per channel: intensity statistics of the voxels inside the
foreground (labels > 0) of every case. From those: median spacing and shape, label volumes in mL
and class frequencies. nnU-Net v2's ``DatasetFingerprintExtractor`` is the model; we keep the
label geometry too (centroids say which axes the labels' identity depends on, for mirroring).

The fingerprint is plain data (:meth:`DatasetFingerprint.to_dict` / :meth:`from_dict`, JSON) and is
cached: :func:`load_or_compute_fingerprint` reuses a cached copy while the dataset definition and
its files are unchanged (size and modification time of every file it lists).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from AttentionSegLib.data.dataset import Case, DatasetDefinition
from AttentionSegLib.data.preprocessing import image_kind, read_case_image, read_case_label
from AttentionSegLib.errors import DatasetError
from AttentionSegLib.io.atomic import write_json_atomic

__all__ = [
    "CaseFingerprint",
    "ChannelIntensity",
    "DatasetFingerprint",
    "compute_fingerprint",
    "source_key",
    "load_or_compute_fingerprint",
    "default_cache_folder",
]

FINGERPRINT_FORMAT = "attentionseg-fingerprint"
FINGERPRINT_VERSION = 1
CACHE_DIR_ENV = "ATTENTIONSEG_CACHE_DIR"
# nnU-Net v2 samples 10,000 foreground voxels per case for its intensity statistics; a fixed seed
# gives the same statistics on every run.
FOREGROUND_SAMPLES_PER_CASE = 10_000
_SAMPLING_SEED = 1234


@dataclass(frozen=True)
class CaseFingerprint:
    """One annotated case.

    Attributes:
        case_id: the case identifier.
        shape: spatial shape, array order (k, j, i), voxels.
        spacing: voxel spacing, array order, mm.
        label_voxels: foreground label value -> number of voxels (labels absent from the case: 0).
        label_bbox: foreground label value -> ``((start, stop), ...)`` per array axis, voxels
            (stop exclusive); absent labels are left out.
        label_centroid_mm: foreground label value -> centroid along each array axis, in mm from
            the first voxel (index x spacing); absent labels are left out.
    """

    case_id: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    label_voxels: dict[int, int] = field(default_factory=dict)
    label_bbox: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    label_centroid_mm: dict[int, tuple[float, ...]] = field(default_factory=dict)

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel, mL."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class ChannelIntensity:
    """Intensity statistics of one channel over the foreground voxels of all cases."""

    name: str
    mean: float
    std: float
    minimum: float
    maximum: float
    percentile_00_5: float
    percentile_50_0: float
    percentile_99_5: float


@dataclass(frozen=True)
class DatasetFingerprint:
    """What a dataset holds, as planning sees it.

    Attributes:
        dataset_name, dataset_path: the definition's name and ``dataset.json`` path.
        source_key: a digest of the definition and of the size and modification time of every file
            it lists (the cache is valid while it matches).
        spatial_dims: 2 or 3.
        image_kind: "ct", "mri" or "rgb" (see :func:`AttentionSegLib.data.preprocessing.image_kind`).
        channel_names: the image channels, in order.
        labels: label value -> name, background (0) included.
        cases: one :class:`CaseFingerprint` per annotated case, in the definition's order.
        intensities: one :class:`ChannelIntensity` per channel.
    """

    dataset_name: str
    dataset_path: str
    source_key: str
    spatial_dims: int
    image_kind: str
    channel_names: tuple[str, ...]
    labels: dict[int, str]
    cases: tuple[CaseFingerprint, ...]
    intensities: tuple[ChannelIntensity, ...]

    # ------------------------------------------------------------------------ derived values
    @property
    def spacings(self) -> np.ndarray:
        """(cases, axes) spacings, mm."""
        return np.asarray([case.spacing for case in self.cases], dtype=np.float64)

    @property
    def shapes(self) -> np.ndarray:
        """(cases, axes) shapes, voxels."""
        return np.asarray([case.shape for case in self.cases], dtype=np.int64)

    @property
    def median_spacing(self) -> tuple[float, ...]:
        return tuple(float(v) for v in np.median(self.spacings, axis=0))

    @property
    def median_shape(self) -> tuple[float, ...]:
        """Median shape at the cases' own spacing, voxels."""
        return tuple(float(v) for v in np.median(self.shapes, axis=0))

    def shapes_at(self, spacing) -> np.ndarray:
        """(cases, axes) shapes the cases would have once resampled to ``spacing`` (mm)."""
        physical = self.shapes * self.spacings
        return np.round(physical / np.asarray(spacing, dtype=np.float64)).astype(np.int64)

    @property
    def foreground_labels(self) -> list[int]:
        return sorted(value for value in self.labels if value != 0)

    def label_volumes_ml(self, value: int) -> np.ndarray:
        """The label's volume in each case, mL (0 where absent)."""
        return np.asarray([case.label_voxels.get(value, 0) * case.voxel_ml for case in self.cases])

    @property
    def class_frequencies(self) -> dict[int, float]:
        """Fraction of all voxels of all cases that each label (background included) covers."""
        total = sum(case.n_voxels for case in self.cases)
        foreground = {
            value: sum(case.label_voxels.get(value, 0) for case in self.cases) for value in self.foreground_labels
        }
        background = total - sum(foreground.values())
        return {0: background / total, **{value: count / total for value, count in foreground.items()}} if total else {}

    def label_case_count(self, value: int) -> int:
        """Number of cases in which the label has at least one voxel."""
        return sum(1 for case in self.cases if case.label_voxels.get(value, 0) > 0)

    def label_bbox_sizes_mm(self, value: int) -> np.ndarray:
        """(cases holding the label, axes) extent of its bounding box along each array axis, mm."""
        sizes = [
            [(stop - start) * spacing for (start, stop), spacing in zip(case.label_bbox[value], case.spacing)]
            for case in self.cases
            if value in case.label_bbox
        ]
        return np.asarray(sizes, dtype=np.float64).reshape(-1, self.spatial_dims)

    def label_centroids_mm(self, value: int) -> np.ndarray:
        """(cases holding the label, axes) its centroid along each array axis, mm from the first voxel."""
        centroids = [case.label_centroid_mm[value] for case in self.cases if value in case.label_centroid_mm]
        return np.asarray(centroids, dtype=np.float64).reshape(-1, self.spatial_dims)

    # --------------------------------------------------------------------------- plain data
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (label values become string keys)."""
        return {
            "format": FINGERPRINT_FORMAT,
            "format_version": FINGERPRINT_VERSION,
            "dataset_name": self.dataset_name,
            "dataset_path": self.dataset_path,
            "source_key": self.source_key,
            "spatial_dims": self.spatial_dims,
            "image_kind": self.image_kind,
            "channel_names": list(self.channel_names),
            "labels": {str(value): name for value, name in self.labels.items()},
            "cases": [
                {
                    "case_id": case.case_id,
                    "shape": list(case.shape),
                    "spacing": list(case.spacing),
                    "label_voxels": {str(v): n for v, n in case.label_voxels.items()},
                    "label_bbox": {str(v): [list(axis) for axis in box] for v, box in case.label_bbox.items()},
                    "label_centroid_mm": {str(v): list(c) for v, c in case.label_centroid_mm.items()},
                }
                for case in self.cases
            ],
            "intensities": [vars(channel).copy() for channel in self.intensities],
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DatasetFingerprint:
        """The inverse of :meth:`to_dict`.

        Raises:
            ValueError: not a fingerprint of this format, or a newer version.
        """
        if values.get("format") != FINGERPRINT_FORMAT or int(values.get("format_version", 0)) > FINGERPRINT_VERSION:
            raise ValueError("not an AttentionSeg dataset fingerprint of a known version")
        cases = tuple(
            CaseFingerprint(
                case_id=case["case_id"],
                shape=tuple(int(v) for v in case["shape"]),
                spacing=tuple(float(v) for v in case["spacing"]),
                label_voxels={int(v): int(n) for v, n in case["label_voxels"].items()},
                label_bbox={int(v): tuple((int(a), int(b)) for a, b in box) for v, box in case["label_bbox"].items()},
                label_centroid_mm={int(v): tuple(float(x) for x in c) for v, c in case["label_centroid_mm"].items()},
            )
            for case in values["cases"]
        )
        return cls(
            dataset_name=values["dataset_name"],
            dataset_path=values["dataset_path"],
            source_key=values["source_key"],
            spatial_dims=int(values["spatial_dims"]),
            image_kind=values["image_kind"],
            channel_names=tuple(values["channel_names"]),
            labels={int(v): name for v, name in values["labels"].items()},
            cases=cases,
            intensities=tuple(ChannelIntensity(**channel) for channel in values["intensities"]),
        )


# ------------------------------------------------------------------------------ computation
def compute_fingerprint(
    definition: DatasetDefinition,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetFingerprint:
    """Read every annotated case of ``definition`` and return its fingerprint.

    Cases are read in a thread pool (reading and the array passes release the GIL). Per case, one
    pass of :func:`scipy.ndimage.find_objects` over the label map gives each label's bounding box;
    voxel counts and centroids come from the label's mask inside its box. Up to
    :data:`FOREGROUND_SAMPLES_PER_CASE` foreground voxels (labels > 0) per case are sampled (the
    same voxels in every channel, a seeded generator per case, all of them when there are fewer);
    the intensity statistics are those of the pooled samples. A channel's statistics are NaN when
    no case has foreground.

    Args:
        definition: the dataset (:func:`~AttentionSegLib.data.dataset.load_dataset`).
        workers: threads reading cases; default ``min(8, CPUs)``.
        progress: called as ``progress(done, total)`` after each case, from the calling thread.

    Raises:
        DatasetError: the definition lists no annotated case, or a case cannot be read (missing
            file, channel count, grids that differ, undeclared label values).
    """
    cases = definition.cases
    if not cases:
        raise DatasetError(f"{definition.path}: no annotated cases to fingerprint")
    key = source_key(definition)
    values = sorted(definition.foreground_labels)
    workers = workers or min(8, os.cpu_count() or 1)
    results: list[tuple[CaseFingerprint, np.ndarray] | None] = [None] * len(cases)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_case_fingerprint, case, definition, values, i): i for i, case in enumerate(cases)}
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                results[futures[future]] = future.result()
                if progress is not None:
                    progress(done, len(cases))
        except BaseException:
            for future in futures:  # a bad case (or Ctrl-C) ends the run without reading the rest
                future.cancel()
            raise
    samples = np.concatenate([channel_samples for _, channel_samples in results], axis=1)
    return DatasetFingerprint(
        dataset_name=definition.name,
        dataset_path=str(definition.path.resolve()),
        source_key=key,
        spatial_dims=definition.spatial_dims,
        image_kind=image_kind(definition),
        channel_names=tuple(definition.channel_names),
        labels=dict(definition.labels),
        cases=tuple(case for case, _ in results),
        intensities=tuple(_intensity(name, row) for name, row in zip(definition.channel_names, samples)),
    )


def _case_fingerprint(
    case: Case, definition: DatasetDefinition, values: list[int], position: int
) -> tuple[CaseFingerprint, np.ndarray]:
    """One case's fingerprint and its sampled foreground intensities, (channels, samples) float64."""
    image = read_case_image(case, definition)
    label = read_case_label(case, definition, image)
    spacing = image.spacing_array_order
    voxels, boxes, centroids = _label_geometry(label, spacing, values)
    foreground = np.flatnonzero(label.reshape(-1) > 0)
    if foreground.size > FOREGROUND_SAMPLES_PER_CASE:
        rng = np.random.default_rng((_SAMPLING_SEED, position))
        foreground = rng.choice(foreground, FOREGROUND_SAMPLES_PER_CASE, replace=False)
    channels = image.array.reshape(image.n_channels, -1)
    fingerprint = CaseFingerprint(
        case_id=case.case_id,
        shape=image.spatial_shape,
        spacing=tuple(float(s) for s in spacing),
        label_voxels=voxels,
        label_bbox=boxes,
        label_centroid_mm=centroids,
    )
    return fingerprint, channels[:, foreground].astype(np.float64)


def _label_geometry(
    label: np.ndarray, spacing: tuple[float, ...], values: list[int]
) -> tuple[dict[int, int], dict[int, tuple[tuple[int, int], ...]], dict[int, tuple[float, ...]]]:
    """Voxel count (every value), bounding box and centroid in mm (present values) of each label."""
    voxels = dict.fromkeys(values, 0)
    boxes, centroids = {}, {}
    if not values:
        return voxels, boxes, centroids
    # One pass finds every label's box; the work per label then stays inside its box.
    slices = ndimage.find_objects(label, max_label=max(values))
    for value in values:
        box = slices[value - 1]
        if box is None:  # absent from this case
            continue
        mask = label[box] == value
        others = [tuple(a for a in range(mask.ndim) if a != axis) for axis in range(mask.ndim)]
        profiles = [np.count_nonzero(mask, axis=axes) for axes in others]  # voxels per index along each axis
        count = int(profiles[0].sum())
        voxels[value] = count
        boxes[value] = tuple((int(extent.start), int(extent.stop)) for extent in box)
        centroids[value] = tuple(
            float((extent.start + profile @ np.arange(profile.size) / count) * step)
            for extent, profile, step in zip(box, profiles, spacing)
        )
    return voxels, boxes, centroids


def _intensity(name: str, samples: np.ndarray) -> ChannelIntensity:
    if samples.size == 0:
        return ChannelIntensity(name, *([float("nan")] * 7))
    low, median, high = np.percentile(samples, [0.5, 50.0, 99.5])
    return ChannelIntensity(
        name=name,
        mean=float(samples.mean()),
        std=float(samples.std()),
        minimum=float(samples.min()),
        maximum=float(samples.max()),
        percentile_00_5=float(low),
        percentile_50_0=float(median),
        percentile_99_5=float(high),
    )


# ---------------------------------------------------------------------------------- caching
def source_key(definition: DatasetDefinition) -> str:
    """SHA-256 (hex) of the ``dataset.json`` bytes, the fingerprint format version and the path,
    size and modification time (ns) of every image and label file of every annotated case.

    Raises:
        DatasetError: a listed file is missing.
    """
    digest = hashlib.sha256(definition.path.read_bytes())
    digest.update(f"\n{FINGERPRINT_FORMAT} {FINGERPRINT_VERSION}\n".encode())
    for case in definition.cases:
        for path in [*case.images, case.label]:
            try:
                status = os.stat(path)
            except OSError:
                raise DatasetError(f"{path}: file not found (case {case.case_id})") from None
            digest.update(f"{Path(path).resolve()}\t{status.st_size}\t{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def default_cache_folder() -> Path:
    """``$ATTENTIONSEG_CACHE_DIR/fingerprints`` when the variable is set (and not empty), else
    ``~/.attentionseg/fingerprints``."""
    configured = os.environ.get(CACHE_DIR_ENV, "").strip()
    base = Path(configured).expanduser() if configured else Path.home() / ".attentionseg"
    return base / "fingerprints"


def load_or_compute_fingerprint(
    definition: DatasetDefinition,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetFingerprint:
    """The fingerprint from ``<cache_dir>/<dataset name>-<source key[:16]>.json`` while the dataset
    is unchanged (same :func:`source_key`), else computed (:func:`compute_fingerprint`) and cached.

    A cache file that cannot be read, or whose key differs, is recomputed and overwritten. A cache
    that cannot be written only warns: the fingerprint is returned all the same.

    Args:
        definition: the dataset.
        cache_dir: the cache folder; default :func:`default_cache_folder`.
        progress: ``progress(done, total)`` per case while computing (not called on a cache hit).
    """
    key = source_key(definition)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_folder()
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", definition.name).strip("._") or "dataset"
    cache_file = cache_dir / f"{safe_name}-{key[:16]}.json"
    cached = _read_cached(cache_file, key)
    if cached is not None:
        return cached
    fingerprint = compute_fingerprint(definition, progress=progress)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_file, fingerprint.to_dict())
    except OSError as error:
        warnings.warn(f"{cache_file}: fingerprint not cached ({error})", stacklevel=2)
    return fingerprint


def _read_cached(path: Path, key: str) -> DatasetFingerprint | None:
    """The fingerprint cached in ``path`` when it is readable and has ``key``; None otherwise."""
    try:
        fingerprint = DatasetFingerprint.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return fingerprint if fingerprint.source_key == key else None
