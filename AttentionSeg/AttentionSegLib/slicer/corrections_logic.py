"""Corrected segmentations become new training cases of a dataset definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.io.image import Image
from AttentionSegLib.slicer.mrml import image_from_volume_node, label_image_from_segmentation_node
from AttentionSegLib.slicer.segments import segment_label_values
from AttentionSegLib.slicer.volumes import for_model
from AttentionSegLib.slicer.volumes import volume_nodes as listed_volume_nodes

__all__ = ["CorrectionsLogic"]


class CorrectionsLogic:
    """Saves a volume and its corrected segmentation into a dataset definition.

    Example:
        >>> logic = CorrectionsLogic(scene)  # doctest: +SKIP
        >>> logic.save_correction(volume_node, corrected_node, "Task04/dataset.json")  # doctest: +SKIP
    """

    def __init__(self, scene) -> None:
        self.scene = scene

    def save_correction(
        self,
        volume_nodes,
        corrected_segmentation_node,
        dataset_json: str | Path,
        original_segmentation_node=None,
    ) -> dict:
        """Write the volume(s) and the corrected segmentation as a new case of the dataset
        definition (see :func:`AttentionSegLib.data.corrections.add_training_case`), the original
        segmentation beside it. Segments match the dataset's labels by name, then by label value.

        Returns the result of ``add_training_case``, whose ``dice`` holds Dice(original,
        corrected) per label value.

        Raises:
            AttentionSegError: no corrected segmentation or volume, or a segment matching no label.
        """
        from AttentionSegLib.data.corrections import add_training_case
        from AttentionSegLib.data.dataset import load_dataset

        if corrected_segmentation_node is None:
            raise AttentionSegError("choose the corrected segmentation")
        definition = load_dataset(dataset_json)
        nodes = listed_volume_nodes(volume_nodes)
        image = for_model(_channels_image(nodes), definition.spatial_dims)

        def label_image(segmentation_node) -> Image:
            values = _dataset_values(segmentation_node, definition)
            labels = label_image_from_segmentation_node(segmentation_node, nodes[0], values)
            if image.spatial_dims == 2:
                labels = Image(labels.array[0], image.spacing, image.origin, image.direction)
            return labels

        corrected = label_image(corrected_segmentation_node)
        original = label_image(original_segmentation_node) if original_segmentation_node is not None else None
        return add_training_case(dataset_json, image, corrected, original)


def _channels_image(nodes) -> Image:
    """The volumes as one channel-first image on the first volume's grid."""
    images = [image_from_volume_node(node) for node in nodes]
    arrays = [image.array if image.has_channels else image.array[None] for image in images]
    return images[0].with_array(np.concatenate(arrays, axis=0), has_channels=True)


def _dataset_values(segmentation_node, definition) -> dict[str, int]:
    """Segment name -> the dataset's label value (by name, else the segment's own label value)."""
    by_name = {name: value for value, name in definition.labels.items()}
    values = {}
    for name, value in segment_label_values(segmentation_node).items():
        if name in by_name:
            values[name] = by_name[name]
        elif value in definition.labels and value != 0:
            values[name] = value
        else:
            raise AttentionSegError(
                f"segment {name!r} of {segmentation_node.GetName()!r} matches no label of {definition.path} "
                f"({', '.join(n for v, n in definition.labels.items() if v)}); rename it"
            )
    return values
