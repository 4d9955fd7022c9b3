"""Locked segments and the overlap policy of prompts: what a new or refined object may take from
the other segments of its segmentation, and how an undo puts back what it took.

- A locked segment (a tag on the segment, saved with the segmentation: ``AttentionSeg.Locked``)
  never changes through a prompt: its voxels are never taken, and prompts on it are refused.
- ``OVERLAP_NEVER`` (the default): an object never takes voxels another segment holds; where the
  network puts the object on another segment, that segment keeps the voxels and the object leaves
  them out.
- ``OVERLAP_OVERWRITE``: the object takes them from the other unlocked segments, which lose them;
  the prompt's record of what they held lets an undo put them back exactly.

The other segments are read on a small grid around the prompt's region (a label map node made by
the caller); only a segment the object takes voxels from is read whole, to be replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer
import vtk

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.slicer.segments import replace_segment_in_box, segment_mask

__all__ = [
    "OVERLAP_NEVER",
    "OVERLAP_OVERWRITE",
    "OVERLAP_POLICIES",
    "LOCKED_TAG",
    "TakenVoxels",
    "set_segment_locked",
    "segment_is_locked",
    "require_unlocked",
    "protected_voxels",
    "take_from_others",
    "give_back",
]

OVERLAP_NEVER = "never"
OVERLAP_OVERWRITE = "overwrite"
OVERLAP_POLICIES = (OVERLAP_NEVER, OVERLAP_OVERWRITE)
LOCKED_TAG = "AttentionSeg.Locked"


@dataclass
class TakenVoxels:
    """What one prompt took from another segment: its voxels on the region grid before the prompt."""

    segment_id: str
    before: np.ndarray


def set_segment_locked(segmentation_node, segment_id: str, locked: bool = True) -> None:
    """Lock (or unlock) a segment against prompts."""
    segment = _segment(segmentation_node, segment_id)
    if locked:
        segment.SetTag(LOCKED_TAG, "1")
    else:
        segment.RemoveTag(LOCKED_TAG)
    segmentation_node.Modified()


def segment_is_locked(segmentation_node, segment_id: str) -> bool:
    value = vtk.reference("")  # GetTag fills an output string
    return bool(_segment(segmentation_node, segment_id).GetTag(LOCKED_TAG, value)) and str(value) == "1"


def require_unlocked(segmentation_node, segment_id: str) -> None:
    """Raises AttentionSegError when the segment is locked (a prompt would change it)."""
    if segment_is_locked(segmentation_node, segment_id):
        name = _segment(segmentation_node, segment_id).GetName()
        raise AttentionSegError(f"segment {name!r} is locked; unlock it to change it")


def protected_voxels(scene, segmentation_node, segment_id: str, grid_node, policy: str) -> np.ndarray:
    """The voxels of ``grid_node``'s grid the object ``segment_id`` may not take: every other
    segment's under ``OVERLAP_NEVER``, the locked ones' under ``OVERLAP_OVERWRITE``."""
    _check_policy(policy)
    shape = slicer.util.arrayFromVolume(grid_node).shape[:3]
    protected = np.zeros(shape, dtype=bool)
    for other in _other_segment_ids(segmentation_node, segment_id):
        if policy == OVERLAP_NEVER or segment_is_locked(segmentation_node, other):
            protected |= segment_mask(scene, segmentation_node, other, grid_node)
    return protected


def take_from_others(
    scene, segmentation_node, segment_id: str, taken: np.ndarray, box: tuple[slice, ...], grid_node, volume_node
) -> list[TakenVoxels]:
    """Remove the voxels ``taken`` (on the grid of ``grid_node``, the sub-grid ``box`` of
    ``volume_node``) from every other unlocked segment; returns what each of them held there
    before, for :func:`give_back`."""
    records = []
    if not taken.any():
        return records
    for other in _other_segment_ids(segmentation_node, segment_id):
        if segment_is_locked(segmentation_node, other):
            continue
        before = segment_mask(scene, segmentation_node, other, grid_node)
        if (before & taken).any():
            records.append(TakenVoxels(other, before))
            replace_segment_in_box(scene, segmentation_node, other, before & ~taken, box, volume_node)
    return records


def give_back(scene, segmentation_node, records: list[TakenVoxels], box: tuple[slice, ...], volume_node) -> None:
    """Put back what :func:`take_from_others` took in ``box`` (segments deleted or locked since
    are skipped: a locked segment never changes)."""
    for record in records:
        segment = segmentation_node.GetSegmentation().GetSegment(record.segment_id)
        if segment is not None and not segment_is_locked(segmentation_node, record.segment_id):
            replace_segment_in_box(scene, segmentation_node, record.segment_id, record.before, box, volume_node)


def _other_segment_ids(segmentation_node, segment_id: str) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    return [each for each in ids if each != segment_id]


def _segment(segmentation_node, segment_id: str):
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise AttentionSegError(f"segmentation {segmentation_node.GetName()!r} has no segment {segment_id!r}")
    return segment


def _check_policy(policy: str) -> None:
    if policy not in OVERLAP_POLICIES:
        raise AttentionSegError(f"unknown overlap policy {policy!r}; choose {' or '.join(OVERLAP_POLICIES)}")
