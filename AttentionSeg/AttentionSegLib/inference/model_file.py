"""The model file: one file per trained model, holding the weights and everything inference needs.

Layout: a PyTorch file (``torch.save``) of a dict with plain types only,
``{"attentionseg_model": <metadata as a JSON string>, "state_dict": {name: tensor}}``, read back
with ``torch.load(..., weights_only=True)``: loading never runs code from the file.

The metadata (see :class:`ModelFile`): the network (registry name and constructor arguments),
input channel names, label values/names/colours in output order, the output activation,
preprocessing (target spacing, intensity normalisation and its statistics), clinical variables
and their statistics, a training summary (dataset, cases, epochs, best validation Dice per
label, date, versions) and, for an interactive (click-conditioned) network, its prompt encoding and
the labels it was trained on (format version 2: older readers refuse such files instead of feeding
the network the wrong channels). Inference reads these facts through the typed accessors of
:class:`ModelFile`, never from the raw dicts. The trainer writes it as ``model.pt`` in the run
folder (see :mod:`AttentionSegLib.training.run_folder`).
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from AttentionSegLib.data.preprocessing import ClinicalNormalization, Normalization
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.io.atomic import atomic_torch_save
from AttentionSegLib.io.terminology import SegmentTerminology, generic_terminology

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelFile",
    "ModelFileError",
    "file_digest",
    "load_model_file",
]

FORMAT = "attentionseg-model"
FORMAT_VERSION = 2
# Automatic models are still written as version 1, readable by every release.
_AUTOMATIC_FORMAT_VERSION = 1


class ModelFileError(AttentionSegError):
    """A model file that is missing, damaged, foreign or from a newer version."""


@dataclass
class ModelFile:
    """A trained model: weights plus what inference needs to reproduce the training conditions.

    Attributes:
        network: ``{"name", "spatial_dims", "in_channels", "out_channels", "patch_size", "clinical_features",
            "options"}``: arguments of :func:`AttentionSegLib.models.build_model`.
        channel_names: the image channels the network expects, in order.
        labels: ``[{"value", "name", "color"[, "terminology"]}]`` (colour RGB in 0-1, terminology as
            :meth:`SegmentTerminology.to_dict`) for output channel 0, 1, ... (background first); with
            a single sigmoid output, background and one foreground label.
        output_activation: "softmax" (argmax over channels) or "sigmoid" (one channel, threshold 0.5).
        preprocessing: ``{"target_spacing": [mm, array order], "normalization": {...}, "image_kind",
            "slice_wise": bool, "patch_size": [...], "mirror_axes": [array axes]}``; a model that
            works at the image's own spacing (the promptable generalist) has ``"target_spacing":
            null`` and ``"zoom_levels": [1, 2, ...]`` (see :attr:`zoom_levels`).
        clinical: ``{"variables": [...], "mean": [...], "std": [...]}`` or empty.
        training: summary of the run that made the model.
        interactive: empty for an automatic model; for an interactive one ``{"prompt_encoding":
            {...}, "object_labels": [{"value", "name", "color"}]}``: the prompt channels after the
            image channels and how clicks are drawn, and the dataset labels it learned to segment
            as objects (its own output is background / object).
        state_dict: the network's weights.
    """

    network: dict[str, Any]
    channel_names: list[str]
    labels: list[dict[str, Any]]
    output_activation: str
    preprocessing: dict[str, Any]
    clinical: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    interactive: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION if self.interactive else _AUTOMATIC_FORMAT_VERSION,
            "network": self.network,
            "channel_names": self.channel_names,
            "labels": self.labels,
            "output_activation": self.output_activation,
            "preprocessing": self.preprocessing,
            "clinical": self.clinical,
            "training": self.training,
            **({"interactive": self.interactive} if self.interactive else {}),
        }

    # Typed views of the metadata: read the model file's facts here, never from the raw dicts.
    @property
    def label_values(self) -> list[int]:
        """Label values in output order (background first)."""
        return [int(label["value"]) for label in self.labels]

    @property
    def foreground_labels(self) -> list[dict[str, Any]]:
        """``[{"value", "name", "color"}]`` of the labels other than background."""
        return [label for label in self.labels if int(label["value"]) != 0]

    @property
    def label_names(self) -> dict[int, str]:
        """Foreground label value -> name."""
        return {int(label["value"]): str(label["name"]) for label in self.foreground_labels}

    @property
    def label_colors(self) -> dict[int, tuple[float, ...]]:
        """Foreground label value -> RGB colour in 0-1 (labels without a colour are left out)."""
        return {int(label["value"]): tuple(label["color"]) for label in self.foreground_labels if label.get("color")}

    @property
    def label_terminology(self) -> dict[int, SegmentTerminology]:
        """Foreground label value -> coded terminology (generic codes for labels the dataset did not
        code, and for model files written before terminology was recorded)."""
        return {
            int(label["value"]): (
                SegmentTerminology.from_dict(label["terminology"], f"model file label {label['value']}")
                if label.get("terminology")
                else generic_terminology(str(label["name"]), int(label["value"]))
            )
            for label in self.foreground_labels
        }

    @property
    def slice_wise(self) -> bool:
        """A 2D network trained on the slices of 3D images."""
        return bool(self.preprocessing.get("slice_wise", False))

    @property
    def image_dims(self) -> int:
        """Dimensionality of the images the model segments (3 for a slice-wise 2D network)."""
        return 3 if self.slice_wise else int(self.network["spatial_dims"])

    @property
    def patch_size(self) -> tuple[int, ...]:
        """The window, array order of the image grid ((1, h, w) for a slice-wise network)."""
        return tuple(int(v) for v in self.preprocessing["patch_size"])

    @property
    def target_spacing(self) -> tuple[float, ...] | None:
        """The spacing (mm, array order) the model works at; None for a model that works at the
        image's own spacing (:attr:`zoom_levels`)."""
        spacing = self.preprocessing["target_spacing"]
        return None if spacing is None else tuple(float(v) for v in spacing)

    @property
    def zoom_levels(self) -> tuple[int, ...] | None:
        """For a model that works at the image's own spacing: its window's zoom levels (multiples
        of the image's spacing; see :mod:`AttentionSegLib.interactive.segmenter`); None otherwise."""
        levels = self.preprocessing.get("zoom_levels")
        return tuple(int(v) for v in levels) if levels else None

    @property
    def mirror_axes(self) -> list[int]:
        """Array axes the training mirrored (test-time augmentation flips these); every axis for
        model files that predate the field."""
        return [int(axis) for axis in self.preprocessing.get("mirror_axes", range(len(self.patch_size)))]

    @property
    def normalization(self) -> Normalization:
        """The intensity normalisation with the training set's statistics."""
        return Normalization.from_dict(self.preprocessing["normalization"])

    @property
    def clinical_normalization(self) -> ClinicalNormalization | None:
        """The clinical variables and their z-score, or None for a model without clinical input."""
        return ClinicalNormalization.from_dict(self.clinical) if self.clinical else None

    @property
    def sigmoid(self) -> bool:
        """One sigmoid output (threshold 0.5) rather than a softmax over classes."""
        return self.output_activation == "sigmoid"

    @property
    def is_interactive(self) -> bool:
        """A click-conditioned network: image channels plus prompt channels in, object mask out."""
        return bool(self.interactive)

    def check_automatic(self, source: str) -> None:
        """Raises AttentionSegError for an interactive model: it segments the object under
        clicks, not a whole image."""
        if self.is_interactive:
            raise AttentionSegError(
                f"{source}: an interactive model segments from clicks (click-to-segment, interactive-eval); "
                "choose an automatic model to segment a whole image"
            )

    @property
    def prompt_encoding(self):
        """The :class:`~AttentionSegLib.interactive.prompts.PromptEncoding` of an interactive model.

        Raises:
            ModelFileError: the model is not interactive.
        """
        from AttentionSegLib.interactive.prompts import PromptEncoding

        if not self.interactive:
            raise ModelFileError("the model is automatic: it takes no clicks")
        return PromptEncoding.from_dict(self.interactive["prompt_encoding"])

    @property
    def object_labels(self) -> dict[int, str]:
        """Label value -> name of the structures an interactive model was trained to segment."""
        return {int(label["value"]): str(label["name"]) for label in self.interactive.get("object_labels", [])}

    def build_network(self, load_weights: bool = True) -> nn.Module:
        """The network with the stored weights, in eval mode, on the CPU. Deep-supervision heads are
        built as in training (so the weights load strictly); in eval mode they are not run."""
        from AttentionSegLib.models import build_from_spec

        spec = self.network
        try:
            network = build_from_spec(spec)
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(f"the model file describes a network that cannot be built: {error}") from None
        if load_weights:
            try:
                network.load_state_dict(self.state_dict)
            except RuntimeError as error:
                reason = str(error).splitlines()[0]
                raise ModelFileError(f"the weights do not fit the network {spec['name']!r}: {reason}") from None
        return network.eval()

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], state_dict=None, source: str = "model") -> ModelFile:
        """A model file from its metadata (and weights; none for a server's model, whose network
        runs on the server).

        Raises:
            ModelFileError: foreign or newer metadata, or a missing entry (named with ``source``).
        """
        if metadata.get("format") != FORMAT:
            raise ModelFileError(f"{source}: unknown model format {metadata.get('format')!r}")
        if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelFileError(
                f"{source}: made by a newer AttentionSeg (format version {metadata['format_version']}, "
                f"this one reads up to {FORMAT_VERSION}); update AttentionSeg"
            )
        try:
            return cls(
                network=metadata["network"],
                channel_names=list(metadata["channel_names"]),
                labels=list(metadata["labels"]),
                output_activation=metadata["output_activation"],
                preprocessing=metadata["preprocessing"],
                clinical=metadata.get("clinical", {}),
                training=metadata.get("training", {}),
                state_dict=state_dict if state_dict is not None else {},
                interactive=metadata.get("interactive", {}),
            )
        except KeyError as error:
            raise ModelFileError(f"{source}: the model metadata lacks {error.args[0]!r}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (a temporary file in the same folder, then a rename)."""
        path = Path(path)
        payload = {
            "attentionseg_model": json.dumps(self.metadata()),
            "state_dict": {key: value.detach().cpu() for key, value in self.state_dict.items()},
        }
        return atomic_torch_save(payload, path)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file (a model file's identity: which version a fine-tune started from, which
    version of a model is current)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model_file(path: str | os.PathLike) -> ModelFile:
    """Read a model file written by :meth:`ModelFile.save`.

    Raises:
        ModelFileError: missing file, damaged or non-PyTorch file, a PyTorch file that is not an
            AttentionSeg model, or a model from a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files that are not ours; the refusal says it all
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(
            f"{path}: not a readable model file (damaged, truncated or not PyTorch): {reason[:160]}"
        ) from None
    if not isinstance(payload, dict) or "attentionseg_model" not in payload or "state_dict" not in payload:
        raise ModelFileError(f"{path}: a PyTorch file, but not an AttentionSeg model file (no model metadata)")
    try:
        metadata = json.loads(payload["attentionseg_model"])
    except (TypeError, ValueError):
        raise ModelFileError(f"{path}: the model metadata is not valid JSON") from None
    return ModelFile.from_metadata(metadata, payload["state_dict"], str(path))
