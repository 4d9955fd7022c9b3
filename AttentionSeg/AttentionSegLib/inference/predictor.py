"""The predictor: a model file and image(s) -> a label image on the input's own grid.

What happens to an input, in order (each step undone on the way back):

1. channels: the images are matched to the model's channel names (one image per channel, or one
   image holding them all) and must share one voxel grid;
2. resampling to the model's target spacing (trilinear), then the model's intensity
   normalisation with the statistics stored in the model file;
3. the sliding-window segmenter of :mod:`~AttentionSegLib.inference.window` (the one inference
   path, shared with the trainer's validation) with the model's patch size, ``overlap`` and
   ``sw_batch_size`` windows per forward pass; with ``tta``, logits averaged over mirrored copies
   along the axes the training mirrored;
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

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from AttentionSegLib.data.preprocessing import resample_array
from AttentionSegLib.devices import is_out_of_memory, resolve_device
from AttentionSegLib.errors import AttentionSegError, GeometryMismatchError
from AttentionSegLib.inference.memory_check import check_segmentation_memory
from AttentionSegLib.inference.model_file import ModelFile, load_model_file
from AttentionSegLib.inference.window import PredictionCancelled, WindowSegmenter, logits_to_classes, slab_rows
from AttentionSegLib.io.image import Image, check_finite, grid_differences
from AttentionSegLib.models.slice_wise import SliceWise

__all__ = [
    "Predictor",
    "Prediction",
    "PredictionCancelled",
    "InputMismatchError",
    "keep_largest_components",
]


class InputMismatchError(AttentionSegError):
    """The images do not fit the model: channel count, dimensionality or grids."""


@dataclass
class Prediction:
    """A label image on the input grid and how long each stage took (seconds)."""

    label_image: Image
    seconds: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    uncertainty: Image | None = None  # 0 (sure) to 1 (likely wrong), on the input grid, when asked for


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
        self._read_model_file()
        model_file = self.model_file
        network = model_file.build_network()
        self.network = (SliceWise(network) if self.slice_wise else network).eval().to(self.device)
        # Test-time augmentation mirrors only along the axes the training mirrored.
        self.segmenter = WindowSegmenter(
            self.network,
            self.patch,
            overlap,
            sw_batch_size,
            mirror_axes=model_file.mirror_axes if tta else (),
            sigmoid=self.sigmoid,
        )

    def _read_model_file(self) -> None:
        """The model file's facts that the input checks and the label mapping read."""
        model_file = self.model_file
        self.slice_wise, self.image_dims = model_file.slice_wise, model_file.image_dims
        self.patch, self.target_spacing = model_file.patch_size, model_file.target_spacing
        self.normalization = model_file.normalization
        self.clinical_normalization = model_file.clinical_normalization
        self.sigmoid = model_file.sigmoid
        self.label_values = np.asarray(model_file.label_values, dtype=np.int64)
        # class index -> label value, in the smallest type that holds the values
        self._class_to_value = self.label_values.astype(np.uint8 if self.label_values.max() < 256 else np.uint16)

    # ------------------------------------------------------------------------------ inputs
    @property
    def channel_names(self) -> list[str]:
        return list(self.model_file.channel_names)

    @property
    def labels(self) -> list[dict]:
        """``[{"value", "name", "color"}]`` of the foreground labels."""
        return self.model_file.foreground_labels

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
        for image, name in zip(images, names):
            check_finite(image, name)
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
        if self.clinical_normalization is None:
            return None
        variables = list(self.clinical_normalization.variables)
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
        return torch.as_tensor(self.clinical_normalization.apply(raw), dtype=torch.float32)[None]

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
        uncertainty: str | None = None,
    ) -> Prediction:
        """Segment ``images`` (one per model channel, or one holding all channels).

        Returns a :class:`Prediction` whose label image holds the model's label values on the
        grid of the first image; with ``uncertainty`` (a method of
        :mod:`~AttentionSegLib.inference.uncertainty`), also the map of where it is likely wrong.

        Raises:
            AttentionSegError: an interactive model (it segments the object under clicks, not the
                whole image), inputs that do not fit the model, or an uncertainty method that
                cannot run (``tta`` without mirrored copies; a volume segmented in slabs).
        """
        self.model_file.check_automatic(self.source)
        self._check_uncertainty(uncertainty)
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        image = self.stack_channels(images, names)
        what = names[0] if names else "the image"
        memory = check_segmentation_memory(self, image, what)  # before any work: refused in one line
        clinical_vector = self.clinical_vector(clinical)
        array, shape = self.preprocess(image)
        seconds["preprocess"] = time.perf_counter() - started
        uncertainty_map = None
        if memory.slabs > 1:
            if uncertainty:
                raise AttentionSegError(
                    f"{what}: too large for an uncertainty map in the memory available (segmented in "
                    f"{memory.slabs} slabs); segment it without --uncertainty, or on a machine with more memory"
                )
            started = time.perf_counter()
            classes = self._classes_in_slabs(array, shape, clinical_vector, memory.slabs, progress, cancel)
            seconds["network"] = time.perf_counter() - started
            self.warn(f"{what}: segmented in {memory.slabs} slabs to fit the memory available")
            started = time.perf_counter()
        else:
            while True:
                try:
                    started = time.perf_counter()
                    tensor = torch.from_numpy(array)[None].to(self.device)
                    stitch = torch.device("cpu") if memory.stitch_on_host else None
                    logits = self.segmenter.logits(
                        tensor, clinical_vector, progress, cancel, output_device=stitch, spread=uncertainty == "tta"
                    )
                    seconds["network"] = time.perf_counter() - started
                    break
                except RuntimeError as error:
                    if self.device.type != "cuda" or not is_out_of_memory(error):
                        raise
                    self._fall_back_to_cpu()
            started = time.perf_counter()
            if uncertainty:
                uncertainty_map, logits = self._uncertainty_map(logits, uncertainty, shape)
            classes = self.segmenter.classes(logits, shape)
            del logits
        labels = self._class_to_value[classes]
        if self.keep_largest:
            labels = keep_largest_components(labels, [v for v in self.label_values.tolist() if v])
        seconds["postprocess"] = time.perf_counter() - started
        uncertainty_image = None
        if uncertainty_map is not None:
            uncertainty_image = image.with_array(uncertainty_map, has_channels=False)
        return Prediction(image.with_array(labels, has_channels=False), seconds, str(self.device), uncertainty_image)

    def _check_uncertainty(self, method: str | None) -> None:
        from AttentionSegLib.inference.uncertainty import UNCERTAINTY_METHODS

        if method is None:
            return
        if method not in UNCERTAINTY_METHODS:
            raise AttentionSegError(f"uncertainty method {method!r}: choose one of {', '.join(UNCERTAINTY_METHODS)}")
        if method == "tta" and not (self.tta and self.model_file.mirror_axes):  # the mirrored copies TTA runs
            reason = "give --tta" if not self.tta else "the model mirrors no axis"
            raise AttentionSegError(f"the tta uncertainty compares mirrored copies: {reason} (or use entropy)")

    def _uncertainty_map(self, logits: torch.Tensor, method: str, shape) -> tuple[np.ndarray, torch.Tensor]:
        """(the map on the input grid, float32 0-1; the class logits without the spread channel)."""
        from AttentionSegLib.inference.uncertainty import normalized_entropy, to_grid

        if method == "tta":
            values, logits = logits[-1], logits[:-1]
        else:
            values = normalized_entropy(logits, self.sigmoid)
        return to_grid(values, shape).cpu().numpy().astype(np.float32), logits

    def _classes_in_slabs(self, array, shape, clinical_vector, slabs, progress, cancel) -> np.ndarray:
        """Class indices on the input grid, made slab by slab along the first axis: each slab's
        logits (with a halo of one window each side) are computed and decided before the next."""
        halo = int(self.patch[0])
        model_rows = array.shape[1]
        classes = np.empty(shape, dtype=np.uint8)
        parts = slab_rows(model_rows, shape[0], slabs)
        for index, ((first, last), (lower, upper)) in enumerate(parts):
            start, stop = max(0, lower - halo), min(model_rows, upper + halo)
            tensor = torch.from_numpy(np.ascontiguousarray(array[:, start:stop]))[None].to(self.device)

            def slab_progress(fraction: float, index=index) -> None:
                if progress is not None:
                    progress((index + fraction) / len(parts))

            logits = self.segmenter.logits(tensor, clinical_vector, slab_progress, cancel)
            classes[first:last] = logits_to_classes(
                logits, shape, self.sigmoid, rows=(first, last), source_start=start, source_total=model_rows
            )
            del logits, tensor
        return classes

    def _fall_back_to_cpu(self) -> None:
        self.warn(
            f"{self.source}: CUDA ran out of memory; segmenting on the CPU instead "
            "(slower; a smaller --overlap or window batch may fit the GPU)"
        )
        torch.cuda.empty_cache()
        self.device = torch.device("cpu")
        self.network.to(self.device)

    # ------------------------------------------------------------------------ clicks
    def object_segmenter(self, stacked: Image, normalized: np.ndarray | None = None):
        """``(segmenter, image)`` for clicks on ``stacked`` (:meth:`stack_channels`' image) with
        this interactive model: the :class:`~AttentionSegLib.interactive.segmenter.ObjectSegmenter`
        of its grid and the image normalised as the network was trained (``normalized``, when the
        caller kept it from an earlier call)."""
        from AttentionSegLib.interactive.segmenter import NetworkWindow, ObjectSegmenter

        model_file = self.model_file
        if normalized is None:
            normalized = self.normalization.apply(stacked.array).astype(np.float32, copy=False)
        window = NetworkWindow(
            self.network,
            model_file.patch_size,
            model_file.prompt_encoding,
            model_file.target_spacing,
            sigmoid=model_file.sigmoid,
            device=self.device,
        )
        return ObjectSegmenter(window, stacked.spacing_array_order, zoom_levels=model_file.zoom_levels), normalized

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
        image = self.stack_channels(images)
        region = self.window_region(image, center_index)
        crop = image.with_array(image.array[(slice(None), *region)], has_channels=True)
        array, crop_shape = self.preprocess(crop)
        tensor = torch.from_numpy(array)[None].to(self.device)
        logits = self.segmenter.one_window_logits(tensor, self.clinical_vector(clinical))
        return self._class_to_value[self.segmenter.classes(logits, crop_shape)], region
