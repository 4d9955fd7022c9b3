"""Volume nodes -> model inputs, and model outputs -> the volume's grid.

MRML volumes are always 3D; a 2D model segments a one-slice volume as a 2D image, and its labels
go back onto that slice.
"""

from __future__ import annotations

import numpy as np

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.io.image import Image
from AttentionSegLib.slicer.mrml import image_from_volume_node

__all__ = ["for_model", "model_inputs", "on_volume_grid", "volume_nodes"]


def volume_nodes(nodes) -> list:
    """One volume node or a list of them (one per model channel) as a list.

    Raises:
        AttentionSegError: no volume, or an empty choice among them.
    """
    listed = list(nodes) if isinstance(nodes, (list, tuple)) else [nodes]
    if not listed or any(node is None for node in listed):
        raise AttentionSegError("choose the input volume(s)")
    return listed


def for_model(image: Image, image_dims: int) -> Image:
    """``image`` as a model segmenting ``image_dims``-D images takes it: a one-slice volume goes to
    a 2D model as a 2D image; anything else is unchanged."""
    if image_dims == 2 and image.spatial_dims == 3 and image.spatial_shape[0] == 1:
        array = image.array[:, 0] if image.has_channels else image.array[0]
        return Image(array, image.spacing[:2], image.origin[:2], image.direction[:2, :2], image.has_channels)
    return image


def model_inputs(nodes, image_dims: int) -> tuple[list, list[Image], list[Image]]:
    """``(volume nodes, their images, the images as the model takes them)``."""
    listed = volume_nodes(nodes)
    images = [image_from_volume_node(node) for node in listed]
    return listed, images, [for_model(image, image_dims) for image in images]


def on_volume_grid(labels: np.ndarray, volume_image: Image) -> Image:
    """Labels from a model (2D from a 2D model) back onto the volume they came from."""
    if labels.ndim == 2 and volume_image.spatial_dims == 3:
        labels = labels[None]
    return volume_image.with_array(labels, has_channels=False)
