"""Where a model comes from: a model file, or a server's model (``http(s)://HOST:PORT/models/NAME``).

Every place that takes a model file takes either through these functions, so that a server model
gives the same results as the file it serves (:mod:`AttentionSegLib.serve.client`).
"""

from __future__ import annotations

import argparse
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from AttentionSegLib.errors import AttentionSegError

if TYPE_CHECKING:  # torch loads only when a model is opened (``--help`` stays fast)
    from AttentionSegLib.inference.model_file import ModelFile

__all__ = [
    "ModelSource",
    "model_source",
    "is_model_url",
    "split_model_url",
    "open_predictor",
    "open_model_file",
    "model_digest",
]

ModelSource = str | os.PathLike


def is_model_url(source) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def split_model_url(url: str) -> tuple[str, str]:
    """``(base URL, model name)`` of ``http(s)://HOST:PORT[/prefix]/models/NAME``.

    Raises:
        AttentionSegError: not such an address.
    """
    parsed = urllib.parse.urlsplit(url)
    parts = parsed.path.rstrip("/").split("/")
    if parsed.scheme not in ("http", "https") or not parsed.netloc or len(parts) < 3 or parts[-2] != "models":
        raise AttentionSegError(f"{url}: a server model is http(s)://HOST:PORT/models/NAME")
    base = urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, "/".join(parts[:-2]), "", ""))
    return base, urllib.parse.unquote(parts[-1])


def model_source(text: str) -> Path | str:
    """An argparse type: a URL stays text (``Path`` would fold its ``//``), anything else a path."""
    if is_model_url(text):
        try:
            split_model_url(text)
        except AttentionSegError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return text
    return Path(text)


def open_predictor(source: ModelSource, **options):
    """A :class:`~AttentionSegLib.inference.predictor.Predictor` of a model file, or a
    :class:`~AttentionSegLib.serve.client.RemotePredictor` of a server's model, with ``options``
    (device, tta, overlap, keep_largest, ...)."""
    if is_model_url(source):
        from AttentionSegLib.serve.client import RemotePredictor

        return RemotePredictor(str(source), **options)
    from AttentionSegLib.inference.predictor import Predictor

    return Predictor(source, **options)


def open_model_file(source: ModelSource) -> ModelFile:
    """The model's metadata (and, for a file, its weights)."""
    if is_model_url(source):
        from AttentionSegLib.serve.client import remote_model_file

        return remote_model_file(str(source))
    from AttentionSegLib.inference.model_file import load_model_file

    return load_model_file(source)


def model_digest(source: ModelSource) -> str:
    """SHA-256 of the model file (on the server for a server model)."""
    if is_model_url(source):
        from AttentionSegLib.serve.client import client_for

        base, name = split_model_url(str(source))
        client = client_for(base)
        return client.get_json(client.model_path(name))["sha256"]
    from AttentionSegLib.inference.model_file import file_digest

    return file_digest(source)
