"""The predictor: a model file and image(s) -> a label image on the input's own grid.

What happens to an input, in order (each step undone on the way back):

1. channels: the images are matched to the model's channel names (one image per channel, or one
   image holding them all) and must share one voxel grid;
2. resampling to the model's target spacing (trilinear), then the model's intensity
   normalisation with the statistics stored in the model file;
3. sliding-window inference with the model's patch size (MONAI's ``sliding_window_inference``,
   Gaussian blending, ``overlap``, ``sw_batch_size`` windows per forward pass). Windows yield
   logits, averaged over mirrored copies when ``tta`` is on (along the axes the training
   mirrored). Logits rather than probabilities are blended and resampled, as nnU-Net does: the
   argmax is the same kind of decision, and no softmax runs over every voxel of every window;
4. the logits go back to the input grid (trilinear), then argmax (or logit > 0, i.e.
   probability > 0.5, for a single sigmoid output) and class index -> label value;
5. optionally, only the largest connected component of each label is kept.

The label image has the input's spacing, origin and direction, unchanged.

Devices: ``auto`` takes CUDA when present, with mixed precision; a CUDA out-of-memory error
repeats the prediction on the CPU after a message, instead of failing.

Progress and cancellation: ``progress(fraction)`` is called after every batch of windows and
``cancel()`` is asked before each; when it returns true, :class:`PredictionCancelled` is raised
and nothing is returned.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from AttentionSegLib.data.preprocessing import Normalization, resample_array
from AttentionSegLib.devices import autocast, is_out_of_memory, resolve_device
from AttentionSegLib.errors import AttentionSegError, GeometryMismatchError
from AttentionSegLib.inference.model_file import ModelFile, load_model_file
from AttentionSegLib.io.image import Image, grid_differences

__all__ = [
    "Predictor",
    "Prediction",
    "PredictionCancelled",
    "InputMismatchError",
    "keep_largest_components",
    "logits_to_classes",
]


class PredictionCancelled(AttentionSegError):
    """``cancel()`` returned true between two batches of windows."""


class InputMismatchError(AttentionSegError):
    """The images do not fit the model: channel count, dimensionality or grids."""


@dataclass
class Prediction:
    """A label image on the input grid and how long each stage took (seconds)."""

    label_image: Image
    seconds: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


def keep_largest_components(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Keep, for each label value, only its largest connected component (face connectivity)."""
    from scipy import ndimage

    result = labels.copy()
    for value in values:
        mask = labels == value
        components, count = ndimage.label(mask)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        result[mask & (components != int(sizes.argmax()))] = 0
    return result


def _window_count(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's sliding window visits on ``shape`` (after padding to the patch)."""
    from monai.data.utils import dense_patch_slices

    shape = [max(s, p) for s, p in zip(shape, patch)]
    interval = [p if s == p else max(int(p * (1 - overlap)), 1) for s, p in zip(shape, patch)]
    return len(dense_patch_slices(shape, patch, interval))


class Predictor:
    """Runs one model file on images; build it once and call :meth:`predict` for each input.

    Args:
        model: a model file path or a loaded :class:`ModelFile`.
        device: auto, cuda or cpu.
        tta: average over mirrored copies of every window (2^d passes, d = spatial dims).
        overlap: fraction of the patch that neighbouring windows share (0 <= overlap < 1).
        sw_batch_size: windows per forward pass.
        keep_largest: keep only the largest connected component of each label.
        warn: receives messages such as the CPU fall-back (default: standard error).
    """

    def __init__(
        self,
        model: ModelFile | str | Path,
        device: str = "auto",
        tta: bool = False,
        overlap: float = 0.5,
        sw_batch_size: int = 4,
        keep_largest: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        if not 0 <= overlap < 1:
            raise AttentionSegError(f"overlap must be in [0, 1), got {overlap}")
        if sw_batch_size < 1:
            raise AttentionSegError(f"the window batch must be at least 1, got {sw_batch_size}")
        self.model_file = model if isinstance(model, ModelFile) else load_model_file(model)
        self.source = str(model) if not isinstance(model, ModelFile) else "model"
        self.device = resolve_device(device)
        self.tta, self.overlap, self.sw_batch_size, self.keep_largest = tta, overlap, sw_batch_size, keep_largest
        self.warn = warn or (lambda message: print(message, file=sys.stderr))
        preprocessing = self.model_file.preprocessing
        self.slice_wise = bool(preprocessing.get("slice_wise", False))
        self.image_dims = 3 if self.slice_wise else int(self.model_file.network["spatial_dims"])
        self.patch = tuple(int(v) for v in preprocessing["patch_size"])
        self.target_spacing = tuple(float(v) for v in preprocessing["target_spacing"])
        self.normalization = Normalization.from_dict(preprocessing["normalization"])
        self.sigmoid = self.model_file.output_activation == "sigmoid"
        self.label_values = np.asarray(self.model_file.label_values, dtype=np.int64)
        # class index -> label value, in the smallest type that holds the values
        self._class_to_value = self.label_values.astype(np.uint8 if self.label_values.max() < 256 else np.uint16)
        network = self.model_file.build_network()
        if self.slice_wise:
            from AttentionSegLib.training.trainer import SliceWise

            network = SliceWise(network)
        self.network = network.eval().to(self.device)

    # ------------------------------------------------------------------------------ inputs
    @property
    def channel_names(self) -> list[str]:
        return list(self.model_file.channel_names)

    @property
    def labels(self) -> list[dict]:
        """``[{"value", "name", "color"}]`` of the foreground labels."""
        return [label for label in self.model_file.labels if int(label["value"]) != 0]

    def stack_channels(self, images: Image | Sequence[Image], names: Sequence[str] | None = None) -> Image:
        """One (C, *spatial) image from the inputs, checked against the model's channels.

        Raises:
            InputMismatchError: wrong channel count, dimensionality, or inputs on different grids.
        """
        images = [images] if isinstance(images, Image) else list(images)
        names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
        if not images:
            raise InputMismatchError("no input image")
        expected = len(self.channel_names)
        for image, name in zip(images, names):
            if image.spatial_dims != self.image_dims:
                raise InputMismatchError(
                    f"{name}: a {image.spatial_dims}D image, but this model segments {self.image_dims}D images"
                )
        for image, name in zip(images[1:], names[1:]):
            problems = grid_differences(images[0], image)
            if problems:
                raise GeometryMismatchError(
                    f"{names[0]} and {name} are on different voxel grids: {'; '.join(problems)}"
                )
        arrays = [image.array if image.has_channels else image.array[None] for image in images]
        total = sum(array.shape[0] for array in arrays)
        if total != expected:
            raise InputMismatchError(
                f"{', '.join(names)}: {total} channel(s), the model takes {expected} ({', '.join(self.channel_names)})"
            )
        array = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        return images[0].with_array(array, has_channels=True)

    def clinical_vector(self, values: Mapping[str, float] | Sequence[float] | None) -> torch.Tensor | None:
        """The normalised clinical feature vector (1, F), or None for models without one.
        Missing values (NaN or absent names) become the training mean, as in training."""
        clinical = self.model_file.clinical
        if not clinical:
            return None
        variables = clinical["variables"]
        if values is None:
            raw = np.full(len(variables), np.nan)
        elif isinstance(values, Mapping):
            unknown = sorted(set(values) - set(variables))
            if unknown:
                raise InputMismatchError(f"unknown clinical variable(s) {unknown}; the model takes {variables}")
            raw = np.asarray([values.get(name, np.nan) for name in variables], dtype=np.float64)
        else:
            raw = np.asarray(values, dtype=np.float64)
            if raw.shape != (len(variables),):
                raise InputMismatchError(f"{raw.size} clinical value(s), the model takes {len(variables)}")
        vector = np.nan_to_num((raw - np.asarray(clinical["mean"])) / np.asarray(clinical["std"]))
        return torch.as_tensor(vector, dtype=torch.float32)[None]

    # -------------------------------------------------------------------------- prediction
    def preprocess(self, image: Image) -> tuple[np.ndarray, tuple[int, ...]]:
        """(C, *spatial) float32 on the model's grid, and the input's spatial shape."""
        shape = image.spatial_shape
        array, _ = resample_array(image.array, image.spacing_array_order, self.target_spacing)
        return self.normalization.apply(array), shape

    def predict(
        self,
        images: Image | Sequence[Image],
        clinical: Mapping[str, float] | Sequence[float] | None = None,
        progress: Callable[[float], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        names: Sequence[str] | None = None,
    ) -> Prediction:
        """Segment ``images`` (one per model channel, or one holding all channels).

        Returns a :class:`Prediction` whose label image holds the model's label values on the
        grid of the first image.
        """
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        image = self.stack_channels(images, names)
        clinical_vector = self.clinical_vector(clinical)
        array, shape = self.preprocess(image)
        seconds["preprocess"] = time.perf_counter() - started
        while True:
            try:
                started = time.perf_counter()
                logits = self._sliding_window(array, clinical_vector, progress, cancel)
                seconds["network"] = time.perf_counter() - started
                break
            except RuntimeError as error:
                if self.device.type != "cuda" or not is_out_of_memory(error):
                    raise
                self._fall_back_to_cpu()
        started = time.perf_counter()
        classes = self._to_classes(logits, shape)
        labels = self._class_to_value[classes]
        if self.keep_largest:
            labels = keep_largest_components(labels, [v for v in self.label_values.tolist() if v])
        seconds["postprocess"] = time.perf_counter() - started
        return Prediction(image.with_array(labels, has_channels=False), seconds, str(self.device))

    def _fall_back_to_cpu(self) -> None:
        self.warn(
            f"{self.source}: CUDA ran out of memory; segmenting on the CPU instead "
            "(slower; a smaller --overlap or window batch may fit the GPU)"
        )
        torch.cuda.empty_cache()
        self.device = torch.device("cpu")
        self.network.to(self.device)

    def _window_function(self, clinical: torch.Tensor | None):
        """Window batch -> logits (float32), averaged over mirrored copies with TTA."""
        # Mirror only along the axes the training mirrored (all, for model files that do not say).
        image_axes = self.model_file.preprocessing.get("mirror_axes", list(range(len(self.patch))))
        spatial_axes = [2 + axis for axis in image_axes]
        flips = [()]
        if self.tta:
            flips = [axes for n in range(len(spatial_axes) + 1) for axes in itertools.combinations(spatial_axes, n)]

        def run(window: torch.Tensor) -> torch.Tensor:
            arguments = (clinical.to(window.device).expand(window.shape[0], -1),) if clinical is not None else ()
            total = None
            for axes in flips:
                flipped = window.flip(axes) if axes else window
                with autocast(window.device):
                    logits = self.network(flipped, *arguments)
                logits = logits.float()
                logits = logits.flip(axes) if axes else logits
                total = logits if total is None else total + logits
            return total / len(flips)

        return run

    @torch.no_grad()
    def _sliding_window(self, array: np.ndarray, clinical, progress, cancel) -> torch.Tensor:
        from monai.inferers import sliding_window_inference

        tensor = torch.from_numpy(array)[None].to(self.device)
        window_function = self._window_function(clinical)
        total = math.ceil(_window_count(array.shape[1:], self.patch, self.overlap) / self.sw_batch_size)
        done = 0

        def predictor(window: torch.Tensor) -> torch.Tensor:
            nonlocal done
            if cancel is not None and cancel():
                raise PredictionCancelled("segmentation cancelled")
            output = window_function(window)
            done += 1
            if progress is not None:
                progress(min(done / total, 1.0))
            return output

        return sliding_window_inference(
            tensor,
            self.patch,
            sw_batch_size=self.sw_batch_size,
            predictor=predictor,
            overlap=self.overlap,
            mode="gaussian",
        )[0]

    def _to_classes(self, logits: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
        return logits_to_classes(logits, shape, self.sigmoid)

    # ----------------------------------------------------------------- one window (clicks)
    def window_region(self, image: Image, center_index: Sequence[float]) -> tuple[slice, ...]:
        """The slices (array order) of ``image`` that one window centred on ``center_index``
        covers: the patch in mm, rounded down so that the crop resampled to the model's spacing
        fits one window, and moved inside the image."""
        input_spacing = np.asarray(image.spacing_array_order)
        extent = np.floor(np.asarray(self.patch) * np.asarray(self.target_spacing) / input_spacing + 1e-6)
        shape = np.asarray(image.spatial_shape)
        extent = np.clip(extent.astype(int), 1, shape)
        start = np.clip(np.round(np.asarray(center_index) - (extent - 1) / 2).astype(int), 0, shape - extent)
        return tuple(slice(int(s), int(s + e)) for s, e in zip(start, extent))

    @torch.no_grad()
    def predict_window(
        self,
        images: Image | Sequence[Image],
        center_index: Sequence[float],
        clinical: Mapping[str, float] | Sequence[float] | None = None,
    ) -> tuple[np.ndarray, tuple[slice, ...]]:
        """Label values in the one window centred on ``center_index`` (array order, on the input
        grid): returns the labels on the input grid and the slices of the input they cover.
        This is the cost of one click-to-segment: one forward pass, plus TTA if on."""
        from monai.inferers import sliding_window_inference

        image = self.stack_channels(images)
        region = self.window_region(image, center_index)
        crop = image.with_array(image.array[(slice(None), *region)], has_channels=True)
        array, crop_shape = self.preprocess(crop)
        tensor = torch.from_numpy(array)[None].to(self.device)
        # One window: MONAI pads the crop to the patch and crops the output back.
        logits = sliding_window_inference(
            tensor, self.patch, 1, self._window_function(self.clinical_vector(clinical)), overlap=0.0
        )[0]
        classes = self._to_classes(logits, crop_shape)
        return self._class_to_value[classes], region


def _argmax_channels(block: torch.Tensor) -> torch.Tensor:
    """uint8 argmax over dim 1 of (n, C, ...), first maximum on ties. A running maximum over the
    channels: PyTorch's argmax over a short dimension is about 20x slower on the CPU."""
    best = block[:, 0].clone()
    classes = torch.zeros(best.shape, dtype=torch.uint8, device=block.device)
    for channel in range(1, block.shape[1]):
        classes.masked_fill_(block[:, channel] > best, channel)
        torch.maximum(best, block[:, channel], out=best)
    return classes


def logits_to_classes(logits: torch.Tensor, shape: Sequence[int], sigmoid: bool = False, slab: int = 8) -> np.ndarray:
    """Class indices (uint8) on a grid of ``shape`` from (C, *grid) logits: linear interpolation
    (as ``F.interpolate(..., align_corners=False)``), then argmax, or > 0 (probability > 0.5) for
    one sigmoid channel.

    Volumes are done ``slab`` output slices at a time (linear along the first axis, bilinear in
    plane: trilinear interpolation is separable), so the logits are never held at full
    resolution: a 4-class 512x512x300 volume would need 1.26 GB for them.
    """
    shape = tuple(int(v) for v in shape)
    source = tuple(logits.shape[1:])

    def decide(block: torch.Tensor) -> torch.Tensor:  # (n, C, ...) -> (n, ...)
        return (block[:, 0] > 0).to(torch.uint8) if sigmoid else _argmax_channels(block)

    if len(shape) == 2:
        block = logits[None]
        if source != shape:
            block = F.interpolate(block, size=shape, mode="bilinear", align_corners=False)
        return decide(block)[0].cpu().numpy()
    classes = np.empty(shape, dtype=np.uint8)
    scale = source[0] / shape[0]
    for start in range(0, shape[0], slab):
        stop = min(start + slab, shape[0])
        if source[0] == shape[0]:
            block = logits[:, start:stop]
        else:
            position = ((torch.arange(start, stop, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
            lower = position.floor().long().clamp(max=source[0] - 1)
            upper = (lower + 1).clamp(max=source[0] - 1)
            weight = (position - lower).to(logits.dtype).to(logits.device)[None, :, None, None]
            block = logits[:, lower] * (1 - weight) + logits[:, upper] * weight
        block = block.movedim(1, 0).contiguous()  # (n, C, h, w)
        if source[1:] != shape[1:]:
            block = F.interpolate(block, size=shape[1:], mode="bilinear", align_corners=False)
        classes[start:stop] = decide(block).cpu().numpy()
    return classes
