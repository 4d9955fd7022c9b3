"""DICOM SEG: segmentations read as references and written for PACS viewers, with highdicom.

Reading (:func:`read_dicom_seg`): a SEG's frames become a label map. Segments map to label values
by their segment number, or by name when label names are given (a segment labelled "Liver"
becomes the value named "Liver"). With an image to put it on (``onto``), the frames are placed on
that image's grid, which they must lie on (same in-plane grid, slices at its slice positions);
frames the SEG leaves out (empty ones) are background. Binary and fractional SEGs are read
(fractional: a voxel belongs to a segment from 0.5 on); overlapping segments cannot become one
label map and are an error naming them.

Writing (:func:`write_dicom_seg`): a label image on the grid of the DICOM series it was computed
from becomes a BINARY SEG that references the series' instances, one segment per foreground
label with its name, recommended display colour (CIELab), coded category and type
(:mod:`AttentionSegLib.io.terminology`) and algorithm type AUTOMATIC with the model's name and
version. Empty frames are left out, as DICOM allows.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from AttentionSegLib.errors import GeometryMismatchError, ImageReadError, ImageWriteError
from AttentionSegLib.io.image import Image
from AttentionSegLib.io.terminology import PRIVATE_SCHEME, SegmentTerminology, generic_terminology

__all__ = ["is_dicom_seg", "is_readable_dicom", "read_dicom_seg", "write_dicom_seg", "SEG_SOP_CLASS_UID"]

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
_GRID_TOLERANCE_VOXELS = 1e-2


def is_dicom_seg(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM file holding a Segmentation (by its SOP class or modality)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        return False
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError, KeyError):
        return False
    return str(header.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID or str(header.get("Modality", "")) == "SEG"


def is_readable_dicom(path: str | os.PathLike) -> bool:
    """Whether ``path`` parses as DICOM to its end (a truncated file does not)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path)
        if "SOPClassUID" not in dataset:
            return False  # cut inside the header: pydicom stops quietly at the end of the bytes
        if "PixelData" in dataset and not dataset.file_meta.TransferSyntaxUID.is_compressed:
            expected = (
                int(dataset.Rows)
                * int(dataset.Columns)
                * int(dataset.get("SamplesPerPixel", 1))
                * int(dataset.get("NumberOfFrames", 1) or 1)
                * int(dataset.BitsAllocated)
                + 7
            ) // 8
            return len(dataset.PixelData) >= expected
    except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError, KeyError, TypeError):
        return False
    return True


def _segment_values(segments, label_names: Mapping[int, str] | None, path: Path) -> dict[int, tuple[int, str]]:
    """Segment number -> (label value, name): by name when ``label_names`` knows it, else the number."""
    by_name = {name.strip().lower(): value for value, name in (label_names or {}).items()}
    result = {}
    for item in segments:
        number, name = int(item.SegmentNumber), str(item.get("SegmentLabel", "") or f"Segment {item.SegmentNumber}")
        result[number] = (by_name.get(name.strip().lower(), number), name)
    values = [value for value, _ in result.values()]
    if len(set(values)) != len(values):
        raise ImageReadError(f"{path}: two segments map to the same label value ({sorted(values)})")
    return result


def _volume_image(volume) -> Image:
    """A highdicom Volume (array axes: slice, row, column) as an Image (array order k, j, i)."""
    affine = np.asarray(volume.affine, dtype=np.float64)
    columns = affine[:3, [2, 1, 0]]  # index axes i (column), j (row), k (slice)
    spacing = np.linalg.norm(columns, axis=0)
    return Image(volume.array, tuple(spacing), tuple(affine[:3, 3]), columns / spacing)


def read_dicom_seg(
    path: str | os.PathLike, onto: Image | None = None, label_names: Mapping[int, str] | None = None
) -> tuple[Image, dict[int, str]]:
    """Read a DICOM SEG as a label map.

    Args:
        path: the SEG file.
        onto: an image whose grid the label map takes (the referenced series, or the label map it is
            compared with); without it, the grid of the SEG's own frames.
        label_names: label value -> name, to map segments by name.

    Returns:
        (label image, {label value: segment name}).

    Raises:
        ImageReadError: not a readable DICOM SEG, overlapping segments, two segments on one value.
        GeometryMismatchError: the frames do not lie on ``onto``'s grid.
    """
    import highdicom as hd

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    if not is_dicom_seg(path):
        raise ImageReadError(f"{path}: not a DICOM SEG (no Segmentation SOP class)")
    try:
        seg = hd.seg.segread(path)
        segments = _segment_values(seg.SegmentSequence, label_names, path)
        volume = seg.get_volume(combine_segments=False, segment_numbers=sorted(segments), rescale_fractional=True)
    except ImageReadError:
        raise
    except Exception as error:  # highdicom raises many kinds for malformed files; all are "cannot read"
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ImageReadError(f"{path}: cannot read this DICOM SEG: {reason}") from None
    planes = _volume_image(volume.with_array(volume.array[..., 0]))
    label_map = np.zeros(planes.spatial_shape, dtype=np.uint16 if len(segments) > 255 else np.uint8)
    owner = np.zeros(planes.spatial_shape, dtype=np.int32)
    for channel, number in enumerate(sorted(segments)):
        mask = volume.array[..., channel] >= (0.5 if seg.SegmentationType == "FRACTIONAL" else 1)
        clash = mask & (owner > 0)
        if clash.any():
            other = int(np.unique(owner[clash])[0])
            raise ImageReadError(
                f"{path}: segments {other} and {number} overlap in {int(clash.sum())} voxels; "
                "a label map cannot hold both"
            )
        owner[mask] = number
        label_map[mask] = segments[number][0]
    image = planes.with_array(label_map)
    if onto is not None:
        image = _place_on_grid(image, onto, path)
    return image, {value: name for value, name in segments.values()}


def _place_on_grid(image: Image, onto: Image, path: Path) -> Image:
    """``image`` (the SEG's frames) on the grid of ``onto``: every voxel centre must fall on one of
    ``onto``'s voxel centres, so that placing it moves nothing."""
    if onto.spatial_dims != 3:
        raise GeometryMismatchError(f"{path}: a DICOM SEG is 3D, the image it goes with is {onto.spatial_dims}D")
    to_onto = np.linalg.inv(onto.index_to_physical()) @ image.index_to_physical()
    corners = np.array([[0, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]], dtype=np.float64).T
    mapped = (to_onto @ corners)[:3]
    steps = mapped[:, 1:] - mapped[:, :1]
    if np.max(np.abs(mapped - np.round(mapped))) > _GRID_TOLERANCE_VOXELS or not np.allclose(
        np.abs(np.round(steps)).sum(axis=0), 1, atol=_GRID_TOLERANCE_VOXELS
    ):
        raise GeometryMismatchError(
            f"{path}: the DICOM SEG's frames do not lie on the image's voxel grid (different spacing, "
            "orientation or slice positions)"
        )
    # Voxel centres coincide, so nearest-neighbour resampling copies every value exactly; the
    # output geometry is given as numbers, so onto's voxels are never copied.
    placed = sitk.Resample(
        image.to_sitk(),
        list(reversed(onto.spatial_shape)),
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        onto.origin,
        onto.spacing,
        onto.direction.ravel().tolist(),
        0,
        image.to_sitk().GetPixelID(),
    )
    result = sitk.GetArrayFromImage(placed)
    if np.count_nonzero(result) != np.count_nonzero(image.array):
        raise GeometryMismatchError(f"{path}: the DICOM SEG covers voxels outside the image's grid")
    return onto.with_array(result, has_channels=False)


def write_dicom_seg(
    label_image: Image,
    series,
    path: str | os.PathLike,
    labels: Sequence[Mapping],
    terminology: Mapping[int, SegmentTerminology] | None = None,
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_description: str = "AttentionSeg",
    overwrite: bool = False,
) -> Path:
    """Write ``label_image`` (on the grid of ``series``) as a DICOM SEG referencing that series.

    Args:
        label_image: label values on the series' grid (as :func:`read_dicom_series` returned it).
        series: the :class:`~AttentionSegLib.io.dicom_series.DicomSeries` it was computed from.
        path: the .dcm file to write (atomically).
        labels: ``[{"value", "name", "color"}]``; one segment per foreground label, in this order.
        terminology: label value -> codes; labels without an entry get generic codes.
        algorithm_name, algorithm_version: the model (AlgorithmIdentificationSequence).

    Raises:
        ImageWriteError: the file exists (without ``overwrite``), its folder is missing, the label
            image is not on the series' grid, or highdicom refuses the content.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from AttentionSegLib import __version__
    from AttentionSegLib.io.atomic import atomic_path
    from AttentionSegLib.io.dicom_series import series_header
    from AttentionSegLib.io.image import grid_differences

    path = Path(path)
    if path.exists() and not overwrite:
        raise ImageWriteError(f"{path}: file exists, refusing to overwrite it")
    if not path.parent.is_dir():
        raise ImageWriteError(f"{path}: folder {path.parent} does not exist")
    size, spacing, origin, direction = series_header(series)
    grid = Image(np.zeros(size[::-1], dtype=np.uint8), spacing, origin, direction)
    problems = grid_differences(label_image, grid)
    if problems or label_image.has_channels:
        raise ImageWriteError(
            f"{path}: the label image is not on the grid of DICOM series {series.series_uid}: {'; '.join(problems)}"
        )
    foreground = [label for label in labels if int(label["value"]) != 0]
    if not foreground:
        raise ImageWriteError(f"{path}: no foreground labels to write as segments")
    terminology = dict(terminology or {})
    segment_map = np.zeros(label_image.spatial_shape, dtype=np.uint16 if len(foreground) > 255 else np.uint8)
    descriptions = []
    codes_by_value: dict[int, SegmentTerminology] = {}
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name[:64], family=codes.cid7162.ArtificialIntelligence, version=algorithm_version[:64]
    )
    for number, label in enumerate(foreground, start=1):
        value = int(label["value"])
        segment_map[label_image.array == value] = number
        codes_of = terminology.get(value) or generic_terminology(str(label["name"]), value)
        codes_by_value[value] = codes_of
        rgb = [float(c) for c in (label.get("color") or (0.5, 0.5, 0.5))[:3]]
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=str(label["name"])[:64],
                segmented_property_category=_coded(codes_of.category),
                segmented_property_type=_coded(codes_of.type),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=hd.UID(),
                tracking_id=f"{label['name']}"[:64],
                anatomic_regions=[_coded(codes_of.region)] if codes_of.region is not None else None,
                display_color=hd.color.CIELabColor.from_rgb(*[int(round(c * 255)) for c in rgb]),
            )
        )
    source = [_clean_source(header) for header in series.headers]
    number = int(source[0].get("SeriesNumber", 0) or 0)
    try:
        with warnings.catch_warnings():
            # highdicom warns about the *source's* patient-name style; nothing we could act on.
            warnings.simplefilter("ignore", UserWarning)
            seg = hd.seg.Segmentation(
                source_images=source,
                pixel_array=segment_map,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=hd.UID(),
                series_number=number + 1000 if number < 99000 else 99999,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="AttentionSeg",
                manufacturer_model_name=algorithm_name[:64],
                software_versions=f"AttentionSeg {__version__}",
                device_serial_number="none",
                content_description=series_description[:64],
                content_label="ATTENTIONSEG",
                omit_empty_frames=bool(segment_map.any()),
            )
        seg.SeriesDescription = series_description[:64]
        seg.ContentCreatorName = ""  # type 2: present, empty for an algorithm
        if any(code.scheme == PRIVATE_SCHEME for t in codes_by_value.values() for code in (t.category, t.type)):
            seg.CodingSchemeIdentificationSequence = [_private_scheme_item()]
        with atomic_path(path, suffix=".dcm") as temporary:
            seg.save_as(temporary)
    except (ValueError, TypeError, AttributeError) as error:
        raise ImageWriteError(f"{path}: cannot write the DICOM SEG: {str(error).splitlines()[0][:200]}") from None
    return path


def _clean_source(header):
    """A copy of a source header that highdicom accepts: an empty SpecificCharacterSet (allowed by
    DICOM, meaning the default repertoire) is dropped rather than read as a charset name."""
    header = copy.deepcopy(header)
    if "SpecificCharacterSet" in header and not header.SpecificCharacterSet:
        del header.SpecificCharacterSet
    return header


def _private_scheme_item():
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "AttentionSeg label names (no standard code given)"
    item.CodingSchemeResponsibleOrganization = "AttentionSeg"
    return item


def _coded(code):
    import highdicom as hd

    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)
