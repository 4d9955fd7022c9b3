"""Experiment planning: training settings derived from the dataset's fingerprint, per network and
device, each with the reason it was chosen.

nnU-Net v2's experiment planner is the reference (``default_experiment_planner.py``,
``network_topology.py``); the rules, in order:

1. Target spacing: the median spacing of the cases. For anisotropic data (the coarsest axis more
   than 3x coarser than the finest, and the median shape along it less than a third of the other
   axes') that axis takes the 10th percentile of its spacings instead (never finer than the other
   axes), so that thin-slice cases are not thrown away by resampling everything to thick slices.
2. Patch size: the median shape at the target spacing, rounded up to what the network's
   downsampling needs, then shrunk (the axis longest relative to the median shape first, by one
   multiple at a time) until one training step fits the device: its memory (activations kept for
   backward, weights, gradients and AdamW moments, estimated on the meta device) within the
   budget, and on a CPU its multiply-adds within what the CPU does in about a second, so a
   10-minute run still takes hundreds of steps. Where the fitted patch would cover less than half
   of the median shape along an axis, the target spacing is made coarser (x1.5, 2, 3, 4) instead:
   on a small device, context matters more than resolution (nnU-Net answers the same problem with
   its low-resolution cascade stage). Under a time limit the CPU step budget is the budget divided
   by ``MIN_STEPS_IN_BUDGET`` (at most 1 s): a 10-minute run gets 0.6 s steps, about 1000 of them
   (PH2 AXUNet at 0.84 s a step reached only 320 steps and 0.83 Dice in 10 minutes); an
   interactive run divides it by the simulated user's step cost (its correction rounds are extra
   forward passes: x1.6 by default; hippocampus AXUNet ran 1.2 s steps, 3 epochs in 20 minutes,
   on a plan that ignored them). The step
   time is estimated from the multiply-adds; a planned training run then times one real step of
   the chosen patch and, when it is more than 1.25x slower than estimated (attention networks:
   AXUNet 3D measured 2.4x), refits everything at the measured speed, then times the refitted
   plan and keeps it only if it is faster (Swin-NeXt was not: its cost is not in multiply-adds).
   Where no spacing up to x4 gives a patch within the budget that covers half of the median shape
   (or even the network's smallest patch is over it), the widths are halved, up to 8x, for the seed
   networks whose constructors take widths: IACNN's published 64-1024 channels cost 10 s a step at
   32^3 on two CPU threads. Published widths are kept wherever they fit.
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
   with a poly schedule (measured on hippocampus: run D, 0.874 Dice in 10 CPU minutes; the recipes'
   1e-4 is tuned for hundreds of epochs).
10. Loss: a recipe's sigmoid loss (``bce_dice``, one sigmoid per class) is kept for one foreground
    label; with several labels, which exclude each other, softmax Dice + cross-entropy (IACNN on
    hippocampus with bce_dice: Anterior 0.87, Posterior 0.00 after 8 epochs).
11. Folds: 5, as nnU-Net; a dataset of fewer cases gets one fold per case (BraTS sample: 4).

Every value is an override point: a value the user sets (a flag, a form field) wins.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from AttentionSegLib.data.fingerprint import DatasetFingerprint
from AttentionSegLib.errors import AttentionSegError

__all__ = [
    "DeviceBudget",
    "ExperimentPlan",
    "PlannedValue",
    "plan_experiment",
    "target_spacing",
    "lateralised_axes",
    "pooling_levels",
    "apply_plan",
    "plan_for_config",
]

ANISOTROPY_THRESHOLD = 3.0
MIN_FEATURE_MAP = 4
MAX_POOLINGS = 5
# Multiply-adds per second of one CPU thread in a training step (forward + backward): the registry's
# UNet at 48x64x48, batch 2, does 18.6 G per step at 2.66 steps/s on 2 threads of this project's CPU
# machine (bench_training.py), 25 G/s per thread; small networks reach about half of that.
CPU_STEP_MACS_PER_THREAD_S = 12e9
CPU_STEP_TARGET_S = 1.0
# A real step this much slower than the multiply-add estimate makes the planner refit (AXUNet 3D
# measured 1.2 s a step where the estimate said 0.51 s).
MEASURED_SLOWDOWN_TOLERANCE = 1.25
MAX_MEASURED_SLOWDOWN = 4.0
DEFAULT_FOLDS = 5
# Clicks the interactive trainer's validation gives each label (training/interactive.py).
INTERACTIVE_VALIDATION_CLICKS = 3
MIN_STEPS_IN_BUDGET = 1000
# Width divisors tried, in turn, for networks whose smallest patch is over the device budget.
WIDTH_DIVISORS = (1, 2, 4, 8)
SHORT_BUDGET_MIN = 60.0
# A patch should see at least half of a typical image along every axis; where the device cannot fit
# that at the target spacing, the spacing is made coarser by these factors, in turn.
MIN_PATCH_COVERAGE = 0.5
COARSENING_FACTORS = (1, 1.5, 2, 3, 4)


@dataclass(frozen=True)
class DeviceBudget:
    """What a training step may use.

    Attributes:
        kind: "cpu" or "cuda".
        memory_bytes: memory for one training step (GPU memory, or a share of the RAM).
        threads: CPU threads (compute budget on a CPU).
        name: for messages.
    """

    kind: str
    memory_bytes: int
    threads: int
    name: str

    @classmethod
    def for_device(cls, device: str = "auto", gpu_memory_gib: float | None = None) -> DeviceBudget:
        """The budget of ``device`` here, or of a GPU with ``gpu_memory_gib`` (planned even where
        none is present)."""
        if gpu_memory_gib is not None:
            if not gpu_memory_gib > 0:
                raise AttentionSegError(f"--gpu-memory must be positive GiB, got {gpu_memory_gib}")
            return cls("cuda", int(gpu_memory_gib * 2**30 * 0.85), os.cpu_count() or 1, f"GPU {gpu_memory_gib:g} GiB")
        import torch

        from AttentionSegLib.devices import resolve_device

        resolved = resolve_device(device)
        if resolved.type == "cuda":
            properties = torch.cuda.get_device_properties(resolved)
            memory = int(properties.total_memory * 0.85)  # CUDA context and allocator slack
            return cls(
                "cuda", memory, os.cpu_count() or 1, f"{properties.name} {properties.total_memory / 2**30:.0f} GiB"
            )
        ram = _physical_memory_bytes()
        threads = torch.get_num_threads()
        # A step may use half the RAM (at most 12 GiB): the cases themselves are held in memory too.
        return cls("cpu", int(min(ram / 2, 12 * 2**30)), threads, f"CPU, {threads} threads")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "memory_bytes": self.memory_bytes, "threads": self.threads, "name": self.name}


def _physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


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
    """nnU-Net's target spacing rule (module docstring, rule 1); ``spacings``, ``shapes``: (cases, axes)."""
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


def pooling_levels(patch: tuple[int, ...]) -> int:
    """Downsamplings that keep every axis of the bottleneck at least ``MIN_FEATURE_MAP`` voxels."""
    smallest = min(patch)
    return max(1, min(MAX_POOLINGS, int(math.floor(math.log2(max(smallest, 1) / MIN_FEATURE_MAP)))))


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


def network_topology(model: str, levels: int, device_kind: str) -> tuple[dict[str, Any], str]:
    """Constructor options giving ``levels`` downsamplings (module docstring, rule 3); {} for
    networks whose topology is their paper's."""
    base, cap = (16, 256) if device_kind == "cpu" else (32, 320)
    channels = [min(base * 2**level, cap) for level in range(levels + 1)]
    why = (
        f"{levels} downsamplings keep the bottleneck >= {MIN_FEATURE_MAP} voxels; channels from {base} ({device_kind})"
    )
    if model == "unet":
        return {"channels": channels, "strides": [2] * levels}, why
    if model == "dynunet":
        return {"levels": levels + 1, "filters": channels}, why
    if model == "segresnet":
        return {"init_filters": base, "blocks_down": [1, 2, 2, 4, 4, 4][: levels + 1], "blocks_up": [1] * levels}, why
    return {}, "the network's published topology"


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
    values: dict[str, PlannedValue] = {}
    spacing, why = target_spacing(fingerprint.spacings, fingerprint.shapes)
    step_target_s = cpu_step_target_s(time_limit_min)
    if interactive:  # the simulated user's correction rounds add forward passes to every step
        from AttentionSegLib.training.interactive import InteractiveTrainer

        step_target_s /= InteractiveTrainer.simulation.step_cost
    search = (fingerprint, model, info, network_dims, spacing, slice_wise, device, step_target_s)
    rate = CPU_STEP_MACS_PER_THREAD_S
    fitted, factor, divisor, coarse, median = _search_patch(*search, rate)
    measured_note = ""
    if measure and device.kind == "cpu":
        # The multiply-add count misses what attention networks spend in memory-bound operations
        # (norms, softmax, reshapes): time a real step and refit with the speed measured.
        from AttentionSegLib.training.memory import time_cpu_step

        measured = time_cpu_step(fitted.spec)
        estimated = fitted.macs / (rate * max(device.threads, 1))
        # At most MAX_MEASURED_SLOWDOWN: a step timed while other work loads the machine must not
        # shrink the plan to nothing.
        ratio = min(measured / max(estimated, 1e-9), MAX_MEASURED_SLOWDOWN)
        measured_note = f"; a real step measured {measured:.2f} s"
        # Refit only a step that is over the budget too: a tiny network's fixed overheads make it
        # slower than its multiply-adds say, but not slow.
        if ratio > MEASURED_SLOWDOWN_TOLERANCE and measured > step_target_s:
            first = (fitted, factor, divisor, coarse, median)
            first_patch = "x".join(map(str, fitted.patch))
            rate /= ratio
            fitted, factor, divisor, coarse, median = _search_patch(*search, rate)
            # Verify: narrower widths or a smaller patch do not speed up every network (Swin-NeXt at
            # a quarter of its width measured 1.6 s a step, as at its full width).
            remeasured = time_cpu_step(fitted.spec)
            if remeasured * MEASURED_SLOWDOWN_TOLERANCE > measured:
                fitted, factor, divisor, coarse, median = first
                measured_note = (
                    f"; a real step measured {measured:.2f} s, {ratio:.1f}x the multiply-add estimate, and "
                    f"{remeasured:.2f} s at the plan refitted to it: no faster, so the first plan stands"
                )
            else:
                measured_note = (
                    f"; a real step at {first_patch} measured {measured:.2f} s, {ratio:.1f}x the multiply-add "
                    f"estimate: refitted at the measured speed ({remeasured:.2f} s a step)"
                )
    patch, options, batch, fit_reason = fitted.patch, fitted.options, fitted.batch, fitted.reason + measured_note
    if factor != 1:
        why += (
            f", x{factor:g}: at the finer spacing the patch the device fits would cover less than "
            f"{MIN_PATCH_COVERAGE:.0%} of the median shape along an axis"
        )
    values["target_spacing"] = PlannedValue([round(v, 6) for v in coarse], why)
    shown = "x".join(str(int(round(v))) for v in median)
    values["patch_size"] = PlannedValue(
        [1, *patch] if slice_wise else list(patch), f"median shape {shown} at the target spacing, {fit_reason}"
    )
    if options:
        reasons = []
        if model in _TOPOLOGY_MODELS:
            reasons.append(network_topology(model, _levels(options, model), device.kind)[1])
        if divisor != 1:
            reasons.append(
                f"widths / {divisor}: at the published widths no patch within the device's step budget "
                f"({_budget_text(device, step_target_s)}) covers {MIN_PATCH_COVERAGE:.0%} of the median shape, "
                f"even at x{COARSENING_FACTORS[-1]:g} spacing"
            )
        values["options"] = PlannedValue(options, "; ".join(reasons))
    values["batch_size"] = PlannedValue(batch, _batch_reason(device, batch))
    values.update(_mirror_axes(fingerprint, slice_wise))
    values["normalization"] = PlannedValue(fingerprint.image_kind, _NORMALIZATION[fingerprint.image_kind])
    windows = _windows_per_case(median, patch)
    if interactive:  # validation: the robot's clicks on every label, a window (or more) each
        windows = len(fingerprint.foreground_labels) * INTERACTIVE_VALIDATION_CLICKS
    values.update(_schedule(fingerprint, info, time_limit_min, batch, windows))
    values["foreground_oversampling"] = _oversampling(fingerprint)
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
    return ExperimentPlan(model, fingerprint.dataset_name, network_dims, device.to_dict(), time_limit_min, values)


def _search_patch(fingerprint, model, info, network_dims, spacing, slice_wise, device, step_target_s, rate):
    """Published widths at the finest spacing that gives the patch enough context; then narrower
    widths; failing all, the first candidate that fits, else the last one tried. Returns
    ``(fit, coarsening factor, width divisor, spacing, median shape)``."""
    chosen = fallback = None
    for divisor in WIDTH_DIVISORS:
        width_options = narrowed_widths(model, network_dims, divisor)
        if width_options is None:
            break
        for factor in COARSENING_FACTORS:  # rule 2: coarser spacing rather than a patch without context
            coarse = tuple(value * factor for value in spacing)
            median = np.median(fingerprint.shapes_at(coarse), axis=0)
            median = median[1:] if slice_wise else median
            fitted = _fit_patch_and_batch(
                fingerprint, model, info, network_dims, median, device, step_target_s, width_options, rate
            )
            candidate = (fitted, factor, divisor, coarse, median)
            if not fitted.fits:
                break  # the smallest patch is over the budget: a coarser spacing cannot help, narrower may
            fallback = fallback or candidate
            if min(p / m for p, m in zip(fitted.patch, median)) >= MIN_PATCH_COVERAGE:
                chosen = candidate
                break
        if chosen:
            break
    return chosen or fallback or candidate


_NORMALIZATION = {
    "ct": "CT: clip to the foreground's 0.5-99.5 percentiles, then z-score",
    "mri": "MRI: z-score per channel",
    "rgb": "photographs: scale to 0-1, then the dataset's mean and std",
}


def _levels(options: dict[str, Any], model: str) -> int:
    if model == "unet":
        return len(options["strides"])
    if model == "dynunet":
        return int(options["levels"]) - 1
    return len(options["blocks_down"]) - 1


def cpu_step_target_s(time_limit_min: float | None) -> float:
    """Seconds one CPU training step may take (module docstring, rule 2)."""
    if not time_limit_min:
        return CPU_STEP_TARGET_S
    return min(CPU_STEP_TARGET_S, time_limit_min * 60.0 / MIN_STEPS_IN_BUDGET)


# Networks whose widths the planner may narrow: option name and published value (rule 2).
_WIDTH_OPTIONS = {
    "iacnn": ("features", (64, 128, 256, 512, 1024)),
    "axunet": ("features", (32, 64, 128, 256, 512)),
    "danie": ("feature_sizes", (48, 96, 192, 384)),
    "unetrpp": ("feature_sizes", (32, 64, 128, 256)),
    "swinnext": ("feature_size", 48),
}


def narrowed_widths(model: str, network_dims: int, divisor: int) -> dict[str, Any] | None:
    """Constructor options with the network's widths divided by ``divisor``; ``{}`` for the
    published widths; ``None`` where the network takes no narrower widths (not a seed network, or
    a width its attention heads or groups cannot divide)."""
    if divisor == 1:
        return {}
    if model not in _WIDTH_OPTIONS:
        return None
    name, published = _WIDTH_OPTIONS[model]
    if isinstance(published, tuple):
        if any(value % divisor for value in published):
            return None
        options = {name: [value // divisor for value in published]}
    else:
        if published % divisor:
            return None
        options = {name: published // divisor}
    from AttentionSegLib.models import get_model_info
    from AttentionSegLib.training.memory import build_without_weights

    info = get_model_info(model)
    smallest = [info.min_patch_multiples * m for m in info.patch_multiple(network_dims, options)]
    spec = {"name": model, "spatial_dims": network_dims, "in_channels": 1, "out_channels": 2}
    try:  # the constructor is the judge of what its heads and groups allow
        build_without_weights({**spec, "patch_size": smallest, "options": options})
    except (ValueError, TypeError):
        return None
    return options


@dataclass(frozen=True)
class _Fit:
    patch: tuple[int, ...]
    options: dict[str, Any]
    batch: int
    reason: str
    fits: bool
    spec: dict[str, Any]
    macs: int


_TOPOLOGY_MODELS = ("unet", "dynunet", "segresnet")


def _budget_text(device: DeviceBudget, step_target_s: float) -> str:
    if device.kind == "cpu":
        return f"{step_target_s:.2g} s on {device.threads} thread(s)"
    return f"{device.memory_bytes / 2**30:.0f} GiB"


def _fit_patch_and_batch(
    fingerprint,
    model,
    info,
    network_dims,
    median,
    device,
    step_target_s,
    width_options,
    rate=CPU_STEP_MACS_PER_THREAD_S,
):
    """Patch (network's own dims), options and batch size fitted to the device."""
    from AttentionSegLib.training.memory import estimate_step

    patch = [max(int(math.ceil(v)), 1) for v in median]
    shrunk = 0
    while True:
        options = dict(width_options)
        if model in _TOPOLOGY_MODELS:
            options.update(network_topology(model, pooling_levels(tuple(patch)), device.kind)[0])
        multiple = info.patch_multiple(network_dims, options)
        fitted = [max(m * math.ceil(p / m), info.min_patch_multiples * m) for p, m in zip(patch, multiple)]
        spec = {
            "name": model,
            "spatial_dims": network_dims,
            "in_channels": len(fingerprint.channel_names),
            "out_channels": len(fingerprint.labels),
            "patch_size": fitted,
            "clinical_features": 0,
            "options": {**options, **({"deep_supervision": True} if info.deep_supervision else {})},
        }
        estimate = estimate_step(spec, 2)
        fits_memory = estimate.training_bytes() <= device.memory_bytes
        step_s = estimate.step_macs / (rate * max(device.threads, 1))
        fits_compute = device.kind != "cpu" or step_s <= step_target_s
        smallest = [info.min_patch_multiples * m for m in multiple]
        can_shrink = any(f > s for f, s in zip(fitted, smallest))
        if (fits_memory and fits_compute) or not can_shrink:
            break
        # Shrink the axis that is longest relative to the median shape, by one multiple.
        ratios = [f / max(m, 1) if f > s else -1 for f, m, s in zip(fitted, median, smallest)]
        axis = int(np.argmax(ratios))
        patch = list(fitted)
        patch[axis] = fitted[axis] - multiple[axis]
        shrunk += 1
    batch = 2
    if device.kind == "cuda":
        batch = _gpu_batch(fingerprint, spec, estimate, device)
    gib = estimate.training_bytes() / 2**30
    reason = f"rounded to multiples of {'x'.join(map(str, multiple))}"
    if shrunk:
        reason += f", shrunk {shrunk} step(s) to fit the device"
    reason += f"; one step of batch 2 ~{gib:.2f} GiB"
    if device.kind == "cpu":
        reason += f", ~{step_s:.2f} s on {device.threads} thread(s) (budget {step_target_s:.2g} s)"
    fits = fits_memory and fits_compute
    if not fits:
        reason += " (the smallest patch the network takes; over the budget)"
    return _Fit(tuple(fitted), options, batch, reason, fits, spec, estimate.step_macs)


def _gpu_batch(fingerprint, spec, estimate, device) -> int:
    """Largest batch that fits the GPU memory and covers at most 5 % of the dataset's voxels."""
    from AttentionSegLib.training.memory import BACKWARD_PEAK_PER_ACTIVATION_BYTE

    # The estimate is for a batch of 2: activations grow with the batch, the rest does not.
    per_sample = max(BACKWARD_PEAK_PER_ACTIVATION_BYTE * estimate.activation_bytes / 2, 1)
    fixed = estimate.training_bytes() - 2 * per_sample
    by_memory = int((device.memory_bytes - fixed) // per_sample)
    dataset_voxels = float(np.sum(np.prod(fingerprint.shapes, axis=1)))
    by_dataset = int(0.05 * dataset_voxels // max(np.prod(spec["patch_size"]), 1))
    return max(2, min(by_memory, by_dataset, 64))


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
        # of the time (PH2: 9 windows a case made validation as long as training, 50 s an epoch).
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
    unset); the network topology is not planned for ``--compact`` runs or when options are given.
    """
    from dataclasses import fields, replace

    from AttentionSegLib.training.config import field_default

    defaults = {item.name: field_default(item) for item in fields(config)}
    applied = {}
    for name, planned in plan.values.items():
        if name not in defaults or getattr(config, name) != defaults[name]:
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
    multiple = info.patch_multiple(plan.network_dims, options)
    rounded = [max(m * math.ceil(p / m), info.min_patch_multiples * m) for p, m in zip(spatial, multiple)]
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
