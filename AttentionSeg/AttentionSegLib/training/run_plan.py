"""The run plan: every decision a run takes from its configuration and its data, made once and
frozen for the trainer to follow (the experiment planner,
:mod:`~AttentionSegLib.training.experiment_planner`, has filled the configuration's unset settings
before, unless ``--no-plan``).

:func:`plan_training` checks the dataset against the network, splits the cases (a fold of a
deterministic k-fold split), fixes the label values (background first) with their names and
colours, decides between a softmax over classes and one sigmoid output (``bce_dice`` on a single
foreground label, or on an interactive network's object), reads and resamples the cases, fits the
intensity normalisation of the image kind and the clinical z-score on the training cases, and
sizes the network. A target spacing or patch the configuration leaves unset (``--no-plan``) comes
from the experiment planner's own rules, with the network's defaults as inputs: the target spacing
from the training cases' spacings and shapes (:func:`~.experiment_planner.target_spacing`), the
patch from the median shape of the resampled training cases, at most the network's default patch
(:func:`~.patch_fitting.network_patch`). The frozen :class:`TrainingPlan` then feeds the trainer
and the model file, which stores it for inference.

Example:
    >>> plan, train_cases, val_cases = plan_training(config.resolved(), load_dataset(config.dataset))
    >>> plan.patch_size, plan.label_values
    ((16, 16, 16), (0, 1, 2))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from AttentionSegLib.data.dataset import DEFAULT_LABEL_COLORS, DatasetDefinition
from AttentionSegLib.data.preprocessing import (
    ClinicalNormalization,
    Normalization,
    fit_normalization,
    image_kind,
    label_lookup,
)
from AttentionSegLib.data.splits import resolve_split
from AttentionSegLib.errors import AttentionSegError, DatasetError
from AttentionSegLib.interactive.prompts import PROMPT_CHANNELS, PromptEncoding, default_click_radius_mm
from AttentionSegLib.io.image import read_image_header
from AttentionSegLib.io.terminology import SegmentTerminology, generic_terminology
from AttentionSegLib.models import get_model_info
from AttentionSegLib.models.spec import ModelInfo
from AttentionSegLib.training.augmentation import resolve_mirror_axes
from AttentionSegLib.training.cases import PreparedCase, load_cases, normalize_cases
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.experiment_planner import target_spacing as planned_target_spacing
from AttentionSegLib.training.patch_fitting import network_patch

__all__ = ["TrainingPlan", "plan_training", "network_options"]


@dataclass(frozen=True)
class TrainingPlan:
    """What a run trains, on what grid, with which network; built once by :func:`plan_training`.

    Attributes:
        dataset_name, dataset_path, channel_names: the dataset definition's.
        train_cases, val_cases: case identifiers of the split.
        label_values: label values in output order, background (0) first.
        label_names: label value -> name (background included).
        label_colors: label value -> RGB colour in 0-1 (the dataset's, else a default palette).
        label_terminology: foreground label value -> coded terminology (the dataset's, else generic).
        binary_sigmoid: one sigmoid output channel rather than a softmax over the classes.
        target_spacing: mm, array order.
        image_kind: "ct", "mri" or "rgb".
        normalization: intensity normalisation with the training cases' statistics.
        clinical: the clinical z-score, or None for a network without clinical input.
        slice_wise: a 2D network on the slices of a 3D dataset.
        patch_size: the window, array order of the image grid ((1, h, w) when slice-wise).
        mirror_axes: image axes that augmentation (and later test-time augmentation) mirrors.
        network: arguments of :func:`AttentionSegLib.models.build_model` (the model file's ``network``).
        foreground_oversampling: fraction of training crops centred on a labelled voxel.
        prompt_encoding: for an interactive network, how its prompt channels are drawn (its
            output is then background / object, one object per sample); None for an automatic one.
    """

    dataset_name: str
    dataset_path: str
    channel_names: tuple[str, ...]
    train_cases: tuple[str, ...]
    val_cases: tuple[str, ...]
    label_values: tuple[int, ...]
    label_names: dict[int, str]
    label_colors: dict[int, tuple[float, ...]]
    label_terminology: dict[int, SegmentTerminology]
    binary_sigmoid: bool
    target_spacing: tuple[float, ...]
    image_kind: str
    normalization: Normalization
    clinical: ClinicalNormalization | None
    slice_wise: bool
    patch_size: tuple[int, ...]
    mirror_axes: tuple[int, ...]
    network: dict[str, Any]
    foreground_oversampling: float = 0.5
    prompt_encoding: PromptEncoding | None = None

    @property
    def interactive(self) -> bool:
        return self.prompt_encoding is not None

    @property
    def deep_supervision(self) -> bool:
        return bool(self.network["options"].get("deep_supervision"))

    @property
    def labels(self) -> list[dict[str, Any]]:
        """``[{"value", "name", "color"[, "terminology"]}]`` in output order, as the model file stores
        them (background has no terminology)."""
        labels = []
        for value in self.label_values:
            label = {"value": value, "name": self.label_names[value], "color": list(self.label_colors[value])}
            if value in self.label_terminology:
                label["terminology"] = self.label_terminology[value].to_dict()
            labels.append(label)
        return labels


def plan_training(
    config: TrainingConfig, definition: DatasetDefinition
) -> tuple[TrainingPlan, list[PreparedCase], list[PreparedCase]]:
    """The plan of a run, and its training and validation cases (read, resampled, normalised).

    Args:
        config: the resolved configuration.
        definition: the dataset.

    Raises:
        AttentionSegError: the network does not fit the dataset, bad mirror axes or patch size.
        DatasetError: no annotated cases, or a case that cannot be read.
    """
    info = get_model_info(config.model)
    network_dims = _network_dims(config, definition, info)
    mirror_axes = resolve_mirror_axes(config, definition.spatial_dims)
    split = resolve_split(definition, f"fold:{config.fold}", config.n_folds, config.split_seed)
    label_values = sorted({0, *definition.labels})
    base = None
    if config.init:  # a fine-tune: the model's normalisation, not refitted (fine_tune's docstring)
        from AttentionSegLib.training.fine_tune import base_model

        base = base_model(config.init)
    clinical = None
    if base is not None:
        clinical = base.clinical_normalization
    elif info.clinical_input and definition.clinical_variables:
        rows = [definition.case(case_id).clinical for case_id in split["train"]]
        clinical = ClinicalNormalization.fit(definition.clinical_variables, rows)
    target_spacing = (
        tuple(float(v) for v in config.target_spacing)
        if config.target_spacing
        else planned_target_spacing(*_header_grids(definition, split["train"]))[0]
    )
    kind = image_kind(definition)
    lookup = label_lookup(label_values)
    train_cases = load_cases(definition, split["train"], target_spacing, lookup, clinical)
    if base is not None:
        normalization = base.normalization
        normalize_cases(train_cases, normalization)
    else:
        normalization = _fit_and_apply_normalization(kind, train_cases)
    val_cases = load_cases(definition, split["val"], target_spacing, lookup, clinical)
    normalize_cases(val_cases, normalization)
    median_shape = tuple(int(v) for v in np.median([case.image.shape[1:] for case in train_cases], axis=0))
    patch = _patch_size(config, info, network_dims, median_shape)
    prompt_encoding = None
    if config.interactive:
        radius = config.click_radius_mm or default_click_radius_mm(target_spacing)
        prompt_encoding = PromptEncoding(float(radius))
    # One sigmoid output for a single foreground class: one label, or an interactive network's object.
    binary_sigmoid = config.loss == "bce_dice" and (len(label_values) == 2 or config.interactive)
    out_channels = 1 if binary_sigmoid else (2 if config.interactive else len(label_values))
    oversampling = 0.5 if config.foreground_oversampling is None else config.foreground_oversampling
    plan = TrainingPlan(
        dataset_name=definition.name,
        dataset_path=str(definition.path),
        channel_names=tuple(definition.channel_names),
        train_cases=tuple(split["train"]),
        val_cases=tuple(split["val"]),
        label_values=tuple(label_values),
        label_names={value: definition.labels.get(value, "background") for value in label_values},
        label_colors=_label_colors(definition, label_values),
        label_terminology=_label_terminology(definition, label_values),
        binary_sigmoid=binary_sigmoid,
        target_spacing=target_spacing,
        image_kind=kind,
        normalization=normalization,
        clinical=clinical,
        slice_wise=config.slice_wise,
        patch_size=patch,
        mirror_axes=tuple(mirror_axes),
        network={
            "name": config.model,
            "spatial_dims": network_dims,
            "in_channels": definition.n_channels + (len(PROMPT_CHANNELS) if config.interactive else 0),
            "out_channels": out_channels,
            "patch_size": list(patch[1:] if config.slice_wise else patch),
            "clinical_features": len(clinical.variables) if clinical is not None else 0,
            "options": network_options(config, info),
        },
        # Interactive: every crop is centred on a labelled voxel, so that it holds an object to click on.
        foreground_oversampling=1.0 if config.interactive else oversampling,
        prompt_encoding=prompt_encoding,
    )
    if base is not None:
        from AttentionSegLib.training.fine_tune import check_dataset_fits

        check_dataset_fits(base, plan, config.init)
    return plan, train_cases, val_cases


def _fit_and_apply_normalization(kind: str, cases: list[PreparedCase]) -> Normalization:
    """The intensity normalisation fitted on the training cases' resampled images (foreground
    voxels for CT), applied to them."""
    normalization = fit_normalization(kind, [case.image for case in cases], [case.label[0] for case in cases])
    normalize_cases(cases, normalization)
    return normalization


def _network_dims(config: TrainingConfig, definition: DatasetDefinition, info: ModelInfo) -> int:
    """The network's dimensionality (2 when slice-wise); refuses datasets the network cannot train on."""
    network_dims = 2 if config.slice_wise else definition.spatial_dims
    if config.slice_wise and definition.spatial_dims != 3:
        raise AttentionSegError("--slice-wise trains a 2D network on a 3D dataset; this dataset is 2D")
    if network_dims not in info.spatial_dims:
        raise AttentionSegError(
            f"{config.model} has no {network_dims}D form ({info.notes or 'see attentionseg models'})"
        )
    if not definition.cases:
        raise DatasetError(f"{definition.path}: no annotated cases to train on")
    return network_dims


def _label_colors(definition: DatasetDefinition, label_values: list[int]) -> dict[int, tuple[float, ...]]:
    """The dataset's colours, else the default palette in label order; background black."""
    colors: dict[int, tuple[float, ...]] = {}
    for index, value in enumerate(label_values):
        color = definition.label_colors.get(value, DEFAULT_LABEL_COLORS[(index - 1) % len(DEFAULT_LABEL_COLORS)])
        colors[value] = tuple(color) if value else (0, 0, 0)
    return colors


def _label_terminology(definition: DatasetDefinition, label_values: list[int]) -> dict[int, SegmentTerminology]:
    """The dataset's codes per foreground label, generic ones (named after the label) for the rest."""
    return {
        value: definition.terminology.get(value)
        or generic_terminology(definition.labels.get(value, f"label {value}"), value)
        for value in label_values
        if value != 0
    }


def _header_grids(definition: DatasetDefinition, case_ids) -> tuple[np.ndarray, np.ndarray]:
    """(cases, axes) spacings (mm) and shapes, array order, of the cases' first image files, read
    from their headers."""
    headers = [read_image_header(definition.case(case_id).images[0]) for case_id in case_ids]
    spacings = np.asarray([header.spacing[::-1] for header in headers], dtype=np.float64)
    return spacings, np.asarray([header.size[::-1] for header in headers], dtype=np.int64)


def network_options(config: TrainingConfig, info: ModelInfo) -> dict[str, Any]:
    """Constructor options: the compact ones when asked, the configuration's, deep supervision on
    where the network has it."""
    options = dict(info.compact_options) if config.compact else {}
    options.update(config.options)
    if info.deep_supervision:
        options.setdefault("deep_supervision", True)
    return options


def _patch_size(
    config: TrainingConfig, info: ModelInfo, network_dims: int, median_shape: tuple[int, ...]
) -> tuple[int, ...]:
    """The configured patch, or the planner's patch rule on the median shape with the network's
    default patch as its ceiling; (1, h, w) when slice-wise.

    Raises:
        AttentionSegError: the network refuses the patch.
    """
    from AttentionSegLib.models import resolve_patch_size

    options = network_options(config, info)
    if config.patch_size:
        patch = tuple(config.patch_size)
        if config.slice_wise and len(patch) == 2:
            patch = (1, *patch)
    else:
        multiple = info.patch_multiple(network_dims, options)
        shape = median_shape[1:] if config.slice_wise else median_shape
        ceiling = info.default_patch_size[network_dims]
        patch = tuple(network_patch(shape, multiple, info.min_patch_multiples, ceiling))
        if config.slice_wise:
            patch = (1, *patch)
    try:
        resolve_patch_size(config.model, network_dims, patch[1:] if config.slice_wise else patch, **options)
    except ValueError as error:
        raise AttentionSegError(f"--patch: {error}") from None
    return patch
