"""Label maps: one channel of non-negative integer label values on an image's grid.

:func:`read_label_image` is the one reader of reference and predicted label maps: label image
files (NIfTI, NRRD, .seg.nrrd, MHA, PNG) and DICOM SEG files (:mod:`AttentionSegLib.io.dicom_seg`),
which need the grid of the image they go with (``onto``) because they store only their frames.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.io.image import Image, read_image

__all__ = ["as_label_array", "read_label_image"]


def as_label_array(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` as non-negative integer labels (booleans -> 0/1; integral floats -> int64).

    Raises:
        ValueError: non-integer, non-finite or negative values, naming ``what``.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ValueError(f"{what} must hold integer label values, got non-integer {array.dtype} values")
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{what} holds negative label values")
    return array


def read_label_image(
    path: str | os.PathLike, onto: Image | None = None, label_names: Mapping[int, str] | None = None
) -> Image:
    """Read a label map: one channel, integer values >= 0.

    Args:
        path: a label image file or a DICOM SEG.
        onto: for a DICOM SEG, the image whose grid it takes (the image or label map it goes with);
            ignored for other files, whose grid the caller checks.
        label_names: for a DICOM SEG, label value -> name, to map segments by name.

    Raises:
        AttentionSegError: the file is unreadable, has several channels, or holds values that are
            not non-negative integers; a DICOM SEG off ``onto``'s grid.
    """
    from AttentionSegLib.io.dicom_seg import is_dicom_seg, read_dicom_seg

    if is_dicom_seg(path):
        image, _ = read_dicom_seg(path, onto, label_names)
        return image
    image = read_image(path)
    if image.has_channels:
        raise AttentionSegError(f"{path}: a label map needs one channel, this file has {image.n_channels}")
    try:
        array = as_label_array(image.array, "label map")
    except ValueError as error:
        raise AttentionSegError(f"{Path(path)}: {error}") from None
    return image.with_array(array)
