"""Experiment planning: training settings derived from the dataset's fingerprint, per network and
device, each with the reason it was chosen.

nnU-Net v2's experiment planner is the reference (``default_experiment_planner.py``,
``network_topology.py``); the rules, in order:

1. Target spacing: the median spacing of the cases. For anisotropic data (the coarsest axis more
   than 3x coarser than the finest, and the median shape along it less than a third of the other
   axes') that axis takes the 10th percentile of its spacings instead (never finer than the other
   axes), so that thin-slice cases are not thrown away by resampling everything to thick slices.
2. Patch size (:mod:`~AttentionSegLib.training.patch_fitting`): the median shape at the target
   spacing, rounded up to what the network's downsampling needs, then shrunk (the axis longest
   relative to the median shape first, by one multiple at a time) until one training step fits the
   device: its memory (activations kept for backward, weights, gradients and AdamW moments,
   estimated on the meta device) within the budget, and on a CPU its multiply-adds within what the
   CPU does in about a second, so a 10-minute run still takes hundreds of steps. Where the fitted
   patch would cover less than half of the median shape along an axis, the target spacing is made
   coarser (x1.5, 2, 3, 4) instead: on a small device, context matters more than resolution
   (nnU-Net answers the same problem with its low-resolution cascade stage). Under a time limit the
   CPU step budget is the budget divided by ``MIN_STEPS_IN_BUDGET`` (at most 1 s): a 10-minute run
   gets 0.6 s steps, about 1000 of them, enough for a short run to converge; an interactive run
   divides it by the simulated user's step cost (its correction rounds are extra forward passes:
   x1.6 by default). The step time is estimated from the multiply-adds; a planned training run
   then times one real step of the chosen patch and, when it is more than 1.25x slower than
   estimated (attention networks spend time in memory-bound operations the count misses), refits
   everything at the measured speed, then times the refitted plan and keeps it only if it is faster
   (a network whose cost is not in multiply-adds gains nothing from a smaller plan). Where no
   spacing up to x4 gives a patch within the budget that covers half of the median shape (or even
   the network's smallest patch is over it), the widths are halved, up to 8x, for the seed networks
   whose constructors take widths (IACNN's published 64-1024 channels are far over a CPU's step
   budget). Published widths are kept wherever they fit.
3. Network topology, for networks that take it (UNet, DynUNet, SegResNet, MedNeXt): as many
   downsamplings as keep every axis of the bottleneck at least 4 voxels (nnU-Net's
   ``min_feature_map_size``), at most 5; channels from 16 (CPU) or 32 (GPU), doubling, capped at
   256 / 320. The attention networks keep their published topology.
4. Batch size: 2 (nnU-Net's minimum). On a GPU, more while the memory allows and one batch covers
   at most 5 % of the dataset's voxels (nnU-Net's rule); a CPU is compute-bound, so 2.
5. Mirror axes: every axis, except axes along which two labels' identity depends on position: a
   pair of labels present together in most cases whose centroids are ordered the same way along
   the axis in at least 90 % of them, by at least a quarter of their extent (anterior/posterior
   hippocampus, left/right organs). Mirroring there would teach the network to swap them.
6. Normalisation: by image kind (CT: clip to the foreground's 0.5-99.5 percentiles then z-score;
   MRI: z-score per channel; photographs: scaling then the dataset's mean and std).
7. Iterations per epoch and validation interval, for the time budget: one pass over the training
   cases per epoch (at least 10 batches, at most 250 as nnU-Net); with a time limit, validation
   every N epochs so that it costs about a tenth of the budget (an interactive network's
   validation runs a window per robot click on every label).
8. Foreground oversampling: half of the crops centred on a labelled voxel; two thirds when the
   smallest label covers less than 0.1 % of the voxels.
9. Learning rate under a short time budget (< 60 minutes): Adam and AdamW networks start at 2e-3
   with a poly schedule (the recipes' 1e-4 is tuned for hundreds of epochs).
10. Loss: a recipe's sigmoid loss (``bce_dice``, one sigmoid per class) is kept for one foreground
    label; with several labels, which exclude each other, softmax Dice + cross-entropy.
11. Folds: 5, as nnU-Net; a dataset of fewer cases gets one fold per case.

The measurements behind these rules and constants are in ``bench/RESULTS.md`` ("Planner
calibration measurements"). Every value is an override point: a value the user sets (a flag, a form
field) wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from AttentionSegLib.data.fingerprint import DatasetFingerprint
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.training.device_budget import DeviceBudget
from AttentionSegLib.training.patch_fitting import (
    MIN_PATCH_COVERAGE,
    PatchSearch,
    cpu_step_target_s,
    network_patch,
    options_reason,
    refit_at_measured_speed,
)

__all__ = [
    "ExperimentPlan",
    "PlannedValue",
    "INTERACTIVE_VALIDATION_CLICKS",
    "plan_experiment",
    "target_spacing",
    "lateralised_axes",
    "apply_plan",
    "plan_for_config",
    "plan_report",
]

ANISOTROPY_THRESHOLD = 3.0
DEFAULT_FOLDS = 5
# Clicks the interactive trainer's validation gives each label (training/interactive.py).
INTERACTIVE_VALIDATION_CLICKS = 3
SHORT_BUDGET_MIN = 60.0


@dataclass(frozen=True)
class PlannedValue:
    """A planned setting and why."""

    value: Any
    reason: str


@dataclass(frozen=True)
class ExperimentPlan:
    """Settings for one network on one dataset and device (see the module docstring for the rules).

    ``values`` maps :class:`~AttentionSegLib.training.config.TrainingConfig` field names (and
    ``target_spacing``, ``normalization``) to :class:`PlannedValue`.
    """

    model: str
    dataset_name: str
    network_dims: int
    device: dict[str, Any]
    time_limit_min: float | None
    values: dict[str, PlannedValue] = field(default_factory=dict)

    def value(self, name: str, default: Any = None) -> Any:
        return self.values[name].value if name in self.values else default

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset_name": self.dataset_name,
            "network_dims": self.network_dims,
            "device": self.device,
            "time_limit_min": self.time_limit_min,
            "values": {name: {"value": v.value, "reason": v.reason} for name, v in self.values.items()},
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentPlan:
        return cls(
            model=values["model"],
            dataset_name=values["dataset_name"],
            network_dims=int(values["network_dims"]),
            device=dict(values["device"]),
            time_limit_min=values.get("time_limit_min"),
            values={name: PlannedValue(v["value"], v["reason"]) for name, v in values["values"].items()},
        )

    def format(self) -> str:
        """A table: setting, value, reason."""
        rows = [(name, _show(planned.value), planned.reason) for name, planned in self.values.items()]
        width = max(len(name) for name, _, _ in rows)
        value_width = min(max(len(value) for _, value, _ in rows), 40)
        header = (
            f"plan for {self.model} on {self.dataset_name} ({self.network_dims}D, {self.device['name']}"
            + (f", {self.time_limit_min:g} min" if self.time_limit_min else "")
            + ")"
        )
        return "\n".join([header] + [f"  {n:<{width}}  {v:<{value_width}}  {r}" for n, v, r in rows])


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_show(v) for v in value) if all(isinstance(v, (int, float)) for v in value) else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ------------------------------------------------------------------------------------- rules
def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[tuple[float, ...], str]:
    """nnU-Net's target spacing rule (module docstring, rule 1), which the run plan follows too when
    planning is off; ``spacings``, ``shapes``: (cases, axes)."""
    target = np.median(spacings, axis=0)
    if len(target) < 3:
        return tuple(float(v) for v in target), "median spacing of the cases"
    coarse = int(np.argmax(target))
    others = [axis for axis in range(len(target)) if axis != coarse]
    median_shape = np.median(shapes * spacings / target, axis=0)
    anisotropic_spacing = target[coarse] > ANISOTROPY_THRESHOLD * max(target[others])
    few_slices = median_shape[coarse] * ANISOTROPY_THRESHOLD < min(median_shape[others])
    if anisotropic_spacing and few_slices:
        finer = max(float(np.percentile(spacings[:, coarse], 10)), float(max(target[others])) + 1e-5)
        target[coarse] = finer
        return tuple(float(v) for v in target), (
            f"median spacing, but axis {coarse} (anisotropic: > {ANISOTROPY_THRESHOLD:g}x coarser, few slices) "
            "takes the 10th percentile of its spacings"
        )
    return tuple(float(v) for v in target), "median spacing of the cases"


def lateralised_axes(fingerprint: DatasetFingerprint, min_cases: int = 3) -> tuple[dict[int, str], str]:
    """Axes along which a pair of labels keeps its order (module docstring, rule 5): axis -> why."""
    labels = fingerprint.foreground_labels
    found: dict[int, str] = {}
    for first_index, first in enumerate(labels):
        for second in labels[first_index + 1 :]:
            together = [
                case
                for case in fingerprint.cases
                if first in case.label_centroid_mm and second in case.label_centroid_mm
            ]
            if len(together) < max(min_cases, 0.5 * len(fingerprint.cases)):
                continue
            for axis in range(fingerprint.spatial_dims):
                if axis in found:
                    continue
                differences = np.asarray(
                    [case.label_centroid_mm[first][axis] - case.label_centroid_mm[second][axis] for case in together]
                )
                extents = np.asarray(
                    [_extent_mm(case, first, axis) + _extent_mm(case, second, axis) for case in together]
                )
                same_order = max(np.mean(differences > 0), np.mean(differences < 0))
                separation = float(np.median(np.abs(differences)))
                if same_order >= 0.9 and separation >= 0.25 * float(np.median(extents)) / 2:
                    names = fingerprint.labels
                    found[axis] = (
                        f"{names.get(first, first)} and {names.get(second, second)} keep their order along axis {axis} "
                        f"in {same_order:.0%} of {len(together)} cases ({separation:.1f} mm apart)"
                    )
    return found, "; ".join(found.values())


def _extent_mm(case, value: int, axis: int) -> float:
    start, stop = case.label_bbox[value][axis]
    return (stop - start) * case.spacing[axis]


def plan_experiment(
    fingerprint: DatasetFingerprint,
    model: str,
    device: DeviceBudget,
    time_limit_min: float | None = None,
    slice_wise: bool = False,
    measure: bool = False,
    interactive: bool = False,
) -> ExperimentPlan:
    """The plan for ``model`` on the fingerprinted dataset and ``device`` (rules: module docstring).
    With ``measure`` on a CPU, one real training step is timed and the patch refitted when it is
    slower than estimated (rule 2); without, the plan depends on the estimate alone (tests).

    Raises:
        AttentionSegError: the network has no form of the dataset's dimensionality.
    """
    from AttentionSegLib.models import get_model_info

    info = get_model_info(model)
    network_dims = 2 if slice_wise else fingerprint.spatial_dims
    if network_dims not in info.spatial_dims:
        raise AttentionSegError(f"{model} has no {network_dims}D form ({info.notes or 'see attentionseg models'})")
    spacing, why = target_spacing(fingerprint.spacings, fingerprint.shapes)
    step_target_s = cpu_step_target_s(time_limit_min)
    if interactive:  # the simulated user's correction rounds add forward passes to every step
        from AttentionSegLib.training.interactive import InteractiveTrainer

        step_target_s /= InteractiveTrainer.simulation.step_cost
    search = PatchSearch(fingerprint, model, info, network_dims, spacing, slice_wise, device, step_target_s)
    choice, measured_note = search.run(), ""
    if measure and device.kind == "cpu":
        choice, measured_note = refit_at_measured_speed(search, choice)
    fit = choice.fit
    if choice.factor != 1:
        why += (
            f", x{choice.factor:g}: at the finer spacing the patch the device fits would cover less than "
            f"{MIN_PATCH_COVERAGE:.0%} of the median shape along an axis"
        )
    values: dict[str, PlannedValue] = {"target_spacing": PlannedValue([round(v, 6) for v in choice.spacing], why)}
    shown = "x".join(str(int(round(v))) for v in choice.median)
    values["patch_size"] = PlannedValue(
        [1, *fit.patch] if slice_wise else list(fit.patch),
        f"median shape {shown} at the target spacing, {fit.reason + measured_note}",
    )
    if fit.options:
        values["options"] = PlannedValue(fit.options, options_reason(search, choice))
    values["batch_size"] = PlannedValue(fit.batch, _batch_reason(device, fit.batch))
    values.update(_mirror_axes(fingerprint, slice_wise))
    values["normalization"] = PlannedValue(fingerprint.image_kind, _NORMALIZATION[fingerprint.image_kind])
    windows = _windows_per_case(choice.median, fit.patch)
    if interactive:  # validation: the robot's clicks on every label, a window (or more) each
        windows = len(fingerprint.foreground_labels) * INTERACTIVE_VALIDATION_CLICKS
    values.update(_schedule(fingerprint, info, time_limit_min, fit.batch, windows))
    values["foreground_oversampling"] = _oversampling(fingerprint)
    values.update(_folds_and_loss(fingerprint, info))
    return ExperimentPlan(model, fingerprint.dataset_name, network_dims, device.to_dict(), time_limit_min, values)


def _folds_and_loss(fingerprint: DatasetFingerprint, info) -> dict[str, PlannedValue]:
    """Rules 10 and 11: one fold per case for a dataset of fewer cases than folds; softmax where
    the recipe's one-sigmoid loss meets several labels."""
    values = {}
    n_cases = len(fingerprint.cases)
    if 2 <= n_cases < DEFAULT_FOLDS:
        values["n_folds"] = PlannedValue(
            n_cases, f"{n_cases} annotated cases: {n_cases} folds (leave one out), the most a split of them allows"
        )
    if info.recipe.loss == "bce_dice" and len(fingerprint.foreground_labels) > 1:
        values["loss"] = PlannedValue(
            "dice_ce",
            f"{len(fingerprint.foreground_labels)} labels that exclude each other: softmax Dice + cross-entropy "
            "(the recipe's one-sigmoid-per-class bce_dice is for a single label)",
        )
    return values


_NORMALIZATION = {
    "ct": "CT: clip to the foreground's 0.5-99.5 percentiles, then z-score",
    "mri": "MRI: z-score per channel",
    "rgb": "photographs: scale to 0-1, then the dataset's mean and std",
}


def _batch_reason(device: DeviceBudget, batch: int) -> str:
    if device.kind == "cpu":
        return "2 (nnU-Net's minimum): a CPU is compute-bound, larger batches only slow each step"
    return f"{batch}: largest that fits {device.name} and covers at most 5 % of the dataset's voxels (at least 2)"


def _mirror_axes(fingerprint: DatasetFingerprint, slice_wise: bool) -> dict[str, PlannedValue]:
    axes = list(range(1, 3)) if slice_wise else list(range(fingerprint.spatial_dims))
    excluded, why = lateralised_axes(fingerprint)
    kept = [axis for axis in axes if axis not in excluded]
    if not excluded:
        return {"mirror_axes": PlannedValue(kept, "every axis: no pair of labels keeps its order along one")}
    return {"mirror_axes": PlannedValue(kept, f"not axis {', '.join(map(str, sorted(excluded)))}: {why}")}


def _windows_per_case(median, patch) -> int:
    """Sliding windows (overlap 0.5, as validation uses) that cover an image of the median shape."""
    return int(np.prod([max(1, math.ceil((m - p) / (p * 0.5)) + 1) for m, p in zip(median, patch)]))


def _schedule(fingerprint, info, time_limit_min, batch, windows_per_case: int = 1) -> dict[str, PlannedValue]:
    """Iterations per epoch, validation interval and, under a short budget, the learning rate."""
    folds = min(DEFAULT_FOLDS, max(2, len(fingerprint.cases)))
    n_train = max(1, round(len(fingerprint.cases) * (1 - 1 / folds)))  # the k-fold split's training share
    iterations = int(min(250, max(10, math.ceil(n_train / batch))))
    values = {"iterations_per_epoch": PlannedValue(iterations, "one pass over the training cases (10 to 250 batches)")}
    if time_limit_min:
        n_val = max(1, len(fingerprint.cases) - n_train)
        # Validation costs a forward pass per window of every case; an epoch about 3 forward passes
        # (forward and backward) per sample. Validate every N epochs so that it takes about a tenth
        # of the time: many windows a case can make validation as long as training.
        ratio = (n_val * windows_per_case) / (iterations * batch * 3.0)
        val_every = int(max(1, min(10, math.ceil(ratio * 10))))
        values["val_every"] = PlannedValue(
            val_every, f"validation ({n_val} cases x {windows_per_case} windows) about a tenth of the time"
        )
        if time_limit_min < SHORT_BUDGET_MIN and info.recipe.optimizer in ("adam", "adamw"):
            values["learning_rate"] = PlannedValue(
                2e-3, f"short budget ({time_limit_min:g} min): {info.recipe.optimizer} at 2e-3 converges in minutes"
            )
            values["schedule"] = PlannedValue("poly", "short budget: poly decay to the end of the budget")
    return values


def _oversampling(fingerprint: DatasetFingerprint) -> PlannedValue:
    frequencies = fingerprint.class_frequencies
    smallest = min((f for value, f in frequencies.items() if value != 0), default=1.0)
    if smallest < 1e-3:
        return PlannedValue(
            2 / 3, f"the smallest label covers {smallest:.3%} of the voxels: two thirds of the crops on it"
        )
    return PlannedValue(0.5, "half of the crops centred on a labelled voxel")


def apply_plan(config, plan: ExperimentPlan):
    """``config`` with every setting left at its default taken from ``plan``; returns the new
    configuration and the settings applied (name -> :class:`PlannedValue`).

    A setting counts as left when it equals the schema's default (so ``--val-every 1`` reads as
    unset); the network topology is not planned for ``--compact`` runs or when options are given,
    and nothing of :data:`~AttentionSegLib.training.fine_tune.MODEL_SETTINGS` for a fine-tune.
    """
    from dataclasses import fields, replace

    from AttentionSegLib.training.config import field_default
    from AttentionSegLib.training.fine_tune import MODEL_SETTINGS

    defaults = {item.name: field_default(item) for item in fields(config)}
    kept = MODEL_SETTINGS if getattr(config, "init", None) else ()  # a fine-tune keeps its model's
    applied = {}
    for name, planned in plan.values.items():
        if name not in defaults or getattr(config, name) != defaults[name] or name in kept:
            continue
        if name == "options" and config.compact:
            continue
        applied[name] = planned
    values = {name: planned.value for name, planned in applied.items()}
    if "patch_size" in values and "options" in plan.values and "options" not in applied:
        values["patch_size"] = _patch_for_own_options(config, plan, values["patch_size"])
    return replace(config, **values), applied


def _patch_for_own_options(config, plan: ExperimentPlan, patch: list[int]) -> list[int]:
    """The planned patch rounded up to what the network takes with the configuration's own
    options (``--compact``, ``--options``) instead of the planned topology."""
    from AttentionSegLib.models import get_model_info

    info = get_model_info(config.model)
    options = {**(info.compact_options if config.compact else {}), **config.options}
    spatial = patch[1:] if config.slice_wise else patch
    rounded = network_patch(spatial, info.patch_multiple(plan.network_dims, options), info.min_patch_multiples)
    return [1, *rounded] if config.slice_wise else rounded


def plan_for_config(config, fingerprint: DatasetFingerprint, gpu_memory_gib: float | None = None) -> ExperimentPlan:
    """The plan for a training configuration's network, device and time budget."""
    return plan_experiment(
        fingerprint,
        config.model,
        DeviceBudget.for_device(config.device, gpu_memory_gib),
        config.time_limit_min,
        config.slice_wise,
        measure=True,
        interactive=config.interactive,
    )


def plan_report(config, gpu_memory_gib: float | None = None) -> str:
    """What ``train`` would do with ``config``: the plan's table, then the settings the
    configuration gives itself (which win). For the Training module's "Show plan"."""
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.fingerprint import load_or_compute_fingerprint

    config.validate()
    plan = plan_for_config(config, load_or_compute_fingerprint(load_dataset(config.dataset)), gpu_memory_gib)
    _, applied = apply_plan(config, plan)
    kept = [name for name in plan.values if name not in applied and name != "normalization"]
    lines = [plan.format()]
    if kept:
        lines.append("set by you (the plan's value is not used): " + ", ".join(kept))
    return "\n".join(lines)
