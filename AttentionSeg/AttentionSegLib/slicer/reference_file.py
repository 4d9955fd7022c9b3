"""A reference segmentation read from a file onto a volume: a label map (``.seg.nrrd`` keeps its
segment names and terminology) or a DICOM SEG (placed on the volume's grid, segments named and
coded as in the SEG). Used by the module's Logic and by the web page."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.io.dicom_seg import is_dicom_seg, read_dicom_seg
from AttentionSegLib.io.label_map import read_label_image
from AttentionSegLib.io.segmentation_file import read_segment_names
from AttentionSegLib.slicer.mrml import image_from_volume_node, segmentation_node_from_label_image

__all__ = ["reference_segmentation_from_file"]

_MAX_LABELS = 1000


def reference_segmentation_from_file(scene, path: str | Path, volume_node, name: str | None = None):
    """A new segmentation node holding the reference in ``path``, referring to ``volume_node``'s grid.

    Raises:
        AttentionSegError: one line naming the file: unreadable, several channels, not integer
            labels, or a DICOM SEG whose frames are off the volume's grid.
    """
    path = Path(path)
    grid = image_from_volume_node(volume_node)
    terminology = {}
    if is_dicom_seg(path):
        image, names = read_dicom_seg(path, onto=grid)
        terminology = _seg_terminology(path, names)
    else:
        image = read_label_image(path)  # one channel of non-negative integers, else one line
        names = read_segment_names(path)  # .seg.nrrd segment names; none for other files
    values = np.unique(image.array)
    if values.size > _MAX_LABELS:
        raise AttentionSegError(f"{path}: not a label map ({values.size} distinct values)")
    labels = {int(v): names.get(int(v), f"label {int(v)}") for v in values if v != 0}
    labels.update({value: label for value, label in names.items() if value not in labels})  # empty segments too
    return segmentation_node_from_label_image(
        scene,
        image.with_array(image.array.astype(np.uint16), has_channels=False),
        labels,
        name=name or f"reference {path.name}",
        reference_volume_node=volume_node,
        terminology=terminology,
    )


def _seg_terminology(path: Path, names: dict[int, str]) -> dict:
    """Label value -> terminology of a DICOM SEG's segments (segment numbers are the values)."""
    import highdicom as hd

    from AttentionSegLib.io.terminology import Code, SegmentTerminology

    def code(item) -> Code:
        return Code(str(item.CodingSchemeDesignator), str(item.CodeValue), str(item.CodeMeaning))

    result = {}
    for segment in hd.seg.segread(path, lazy_frame_retrieval=True).SegmentSequence:
        try:
            category = code(segment.SegmentedPropertyCategoryCodeSequence[0])
            result[int(segment.SegmentNumber)] = SegmentTerminology(
                category, code(segment.SegmentedPropertyTypeCodeSequence[0])
            )
        except (AttributeError, IndexError):
            continue  # a segment without codes keeps its name only
    return {value: codes for value, codes in result.items() if value in names}
