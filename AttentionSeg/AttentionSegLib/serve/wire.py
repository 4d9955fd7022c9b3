"""The server's message format: a JSON header and raw arrays, in one body.

``b"ASW1"``, the header's length (4 bytes, little endian), the header (UTF-8 JSON) and the arrays'
bytes one after the other. The header holds the caller's fields plus, under ``"arrays"``, each
array's name, dtype, shape, byte length and whether it is zlib-compressed. Nothing in a message is
ever unpickled (a server must not run code its clients send), and a float32 volume travels as its
bytes (compressing a CT costs more time than a LAN saves); masks and label maps, mostly zeros, are
compressed.

Masks travel as their bounding box (:func:`pack_mask`): a click's mask is a small part of a large
volume.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import numpy as np

from AttentionSegLib.errors import AttentionSegError

__all__ = [
    "MAGIC",
    "MESSAGE_TYPE",
    "encode",
    "decode",
    "WireError",
    "pack_mask",
    "unpack_mask",
    "prompts_to_json",
    "prompts_from_json",
    "region_to_json",
    "region_from_json",
]

MAGIC = b"ASW1"
MESSAGE_TYPE = "application/x-attentionseg"  # the Content-Type of a message
_ALLOWED_KINDS = "biuf"  # booleans, integers, floats: no object arrays


class WireError(AttentionSegError):
    """A body that is not a message of this format."""


def encode(
    header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None, compress: tuple[str, ...] = ()
) -> bytes:
    """One message of ``header`` (JSON-able) and ``arrays``; those named in ``compress`` are zlib'd."""
    described, blobs = [], []
    for name, array in (arrays or {}).items():
        array = np.ascontiguousarray(array)
        data = array.tobytes()
        if name in compress:
            data = zlib.compress(data, 1)
        described.append(
            {
                "name": name,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "bytes": len(data),
                "zlib": name in compress,
            }
        )
        blobs.append(data)
    text = json.dumps({**header, "arrays": described}).encode()
    return b"".join([MAGIC, struct.pack("<I", len(text)), text, *blobs])


def decode(body: bytes | memoryview) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(header, arrays)`` of a message (arrays are read-only views of ``body`` where uncompressed).

    Raises:
        WireError: not this format, or arrays that do not match their description.
    """
    view = memoryview(body)
    if len(view) < 8 or bytes(view[:4]) != MAGIC:
        raise WireError("not an AttentionSeg message (bad magic)")
    (length,) = struct.unpack("<I", view[4:8])
    try:
        header = json.loads(bytes(view[8 : 8 + length]))
    except ValueError:
        raise WireError("the message header is not JSON") from None
    if not isinstance(header, dict):
        raise WireError("the message header is not an object")
    arrays, offset = {}, 8 + length
    for item in header.pop("arrays", []):
        try:
            dtype, shape, size = np.dtype(item["dtype"]), tuple(int(v) for v in item["shape"]), int(item["bytes"])
            name = str(item["name"])
        except (KeyError, TypeError, ValueError):
            raise WireError("an array description is malformed") from None
        if dtype.kind not in _ALLOWED_KINDS or any(v < 0 for v in shape) or offset + size > len(view):
            raise WireError(f"array {name!r}: bad dtype, shape or length")
        data = view[offset : offset + size]
        offset += size
        if item.get("zlib"):
            try:
                data = zlib.decompress(data)
            except zlib.error:
                raise WireError(f"array {name!r}: damaged compressed data") from None
        if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise WireError(f"array {name!r}: {len(data)} bytes do not make shape {shape} of {dtype}")
        arrays[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
    return header, arrays


def pack_mask(mask: np.ndarray | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A mask as ``({"mask_shape", "mask_start"}, {"mask": its bounding box as uint8})``; an empty
    (or absent) mask as no array at all."""
    if mask is None or not mask.any():
        return {"mask_shape": None if mask is None else list(mask.shape), "mask_start": None}, {}
    box = []
    for axis in range(mask.ndim):  # projections: faster than argwhere on a large, sparse mask
        along = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(along[0]), int(along[-1]) + 1))
    box = tuple(box)
    start = [b.start for b in box]
    return {"mask_shape": list(mask.shape), "mask_start": [int(v) for v in start]}, {"mask": mask[box].astype(np.uint8)}


def unpack_mask(header: dict[str, Any], arrays: dict[str, np.ndarray], shape) -> np.ndarray:
    """The full mask of ``shape`` (bool) from :func:`pack_mask`'s fields.

    Raises:
        WireError: the mask does not fit ``shape``.
    """
    mask = np.zeros(tuple(shape), dtype=bool)
    if header.get("mask_shape") is not None and tuple(header["mask_shape"]) != tuple(shape):
        raise WireError(f"the mask has shape {header['mask_shape']}, the image {list(shape)}")
    if "mask" in arrays and header.get("mask_start") is not None:
        start, box = header["mask_start"], arrays["mask"]
        if len(start) != len(shape) or any(s < 0 or s + n > m for s, n, m in zip(start, box.shape, shape)):
            raise WireError("the mask's box lies outside the image")
        mask[tuple(slice(s, s + n) for s, n in zip(start, box.shape))] = box.astype(bool)
    return mask


def prompts_to_json(prompts) -> dict[str, Any]:
    """The clicks and box of :class:`~AttentionSegLib.interactive.prompts.ObjectPrompts` as JSON
    (the previous mask travels as :func:`pack_mask`'s array)."""
    box = None if prompts.box is None else [[int(v) for v in prompts.box[0]], [int(v) for v in prompts.box[1]]]
    return {
        "positive": [[int(v) for v in p] for p in prompts.positive],
        "negative": [[int(v) for v in p] for p in prompts.negative],
        "box": box,
    }


def prompts_from_json(values: dict[str, Any] | None, previous_mask: np.ndarray | None):
    """:func:`prompts_to_json`'s prompts back, with ``previous_mask``."""
    from AttentionSegLib.interactive.prompts import ObjectPrompts

    values = values or {}
    box = values.get("box")
    return ObjectPrompts(
        [tuple(int(v) for v in p) for p in values.get("positive", [])],
        [tuple(int(v) for v in p) for p in values.get("negative", [])],
        None if box is None else (tuple(int(v) for v in box[0]), tuple(int(v) for v in box[1])),
        previous_mask,
    )


def region_to_json(region: tuple[slice, ...]) -> list[list[int]]:
    return [[int(r.start), int(r.stop)] for r in region]


def region_from_json(values) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in values)
