"""Patch fitting: rules 2 to 4 of the experiment planner (:mod:`~AttentionSegLib.training.experiment_planner`,
whose docstring states them): the patch, the network's widths and topology, and the batch size, fitted
to a device's step budget, with the spacing made coarser where the fitted patch would see too little of
an image; and the rule every patch follows (:func:`network_patch`), which the run plan
(:mod:`~AttentionSegLib.training.run_plan`) applies too when planning is off.

The step's memory and multiply-adds are estimated on the meta device
(:func:`AttentionSegLib.models.memory.estimate_step`); on a CPU, :func:`refit_at_measured_speed`
checks the estimate against one real step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from AttentionSegLib.data.fingerprint import DatasetFingerprint
from AttentionSegLib.models.spec import ModelInfo
from AttentionSegLib.training.device_budget import DeviceBudget

__all__ = [
    "CPU_STEP_MACS_PER_THREAD_S",
    "CPU_STEP_TARGET_S",
    "MAX_MEASURED_SLOWDOWN",
    "MIN_PATCH_COVERAGE",
    "COARSENING_FACTORS",
    "PatchChoice",
    "PatchFit",
    "PatchSearch",
    "cpu_step_target_s",
    "narrowed_widths",
    "network_patch",
    "network_topology",
    "options_reason",
    "pooling_levels",
    "refit_at_measured_speed",
]

MIN_FEATURE_MAP = 4
MAX_POOLINGS = 5
# Multiply-adds per second of one CPU thread in a training step (forward + backward): about half of
# what the registry's UNet reaches, as small networks do (bench/RESULTS.md, "Planner calibration
# measurements").
CPU_STEP_MACS_PER_THREAD_S = 12e9
CPU_STEP_TARGET_S = 1.0
# A real step this much slower than the multiply-add estimate makes the planner refit: attention
# networks spend time in memory-bound operations (norms, softmax, reshapes) the count misses.
MEASURED_SLOWDOWN_TOLERANCE = 1.25
MAX_MEASURED_SLOWDOWN = 4.0
MIN_STEPS_IN_BUDGET = 1000
# Width divisors tried, in turn, for networks whose smallest patch is over the device budget.
WIDTH_DIVISORS = (1, 2, 4, 8)
# A patch should see at least half of a typical image along every axis; where the device cannot fit
# that at the target spacing, the spacing is made coarser by these factors, in turn.
MIN_PATCH_COVERAGE = 0.5
COARSENING_FACTORS = (1, 1.5, 2, 3, 4)
# Networks whose topology the planner sets (rule 3); the others keep their paper's.
TOPOLOGY_MODELS = ("unet", "dynunet", "segresnet")


def network_patch(
    shape, multiple: tuple[int, ...], min_multiples: int, ceiling: tuple[int, ...] | None = None
) -> list[int]:
    """The patch rule: ``shape`` (voxels per axis) rounded up to the network's ``multiple``, at most
    ``ceiling`` per axis where given (the run plan's network default), at least the network's
    smallest patch (``min_multiples`` multiples)."""
    rounded = [m * math.ceil(s / m) for s, m in zip(shape, multiple)]
    if ceiling is not None:
        rounded = [min(c, r) for c, r in zip(ceiling, rounded)]
    return [max(r, min_multiples * m) for r, m in zip(rounded, multiple)]


def pooling_levels(patch: tuple[int, ...]) -> int:
    """Downsamplings that keep every axis of the bottleneck at least ``MIN_FEATURE_MAP`` voxels."""
    smallest = min(patch)
    return max(1, min(MAX_POOLINGS, int(math.floor(math.log2(max(smallest, 1) / MIN_FEATURE_MAP)))))


def network_topology(model: str, levels: int, device_kind: str) -> tuple[dict[str, Any], str]:
    """Constructor options giving ``levels`` downsamplings (rule 3); {} for networks whose topology
    is their paper's."""
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


def _topology_levels(options: dict[str, Any], model: str) -> int:
    """The downsamplings of a planned topology (the inverse of :func:`network_topology`)."""
    if model == "unet":
        return len(options["strides"])
    if model == "dynunet":
        return int(options["levels"]) - 1
    return len(options["blocks_down"]) - 1


def cpu_step_target_s(time_limit_min: float | None) -> float:
    """Seconds one CPU training step may take (rule 2)."""
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
    from AttentionSegLib.models.memory import build_without_weights

    info = get_model_info(model)
    smallest = [info.min_patch_multiples * m for m in info.patch_multiple(network_dims, options)]
    spec = {"name": model, "spatial_dims": network_dims, "in_channels": 1, "out_channels": 2}
    try:  # the constructor is the judge of what its heads and groups allow
        build_without_weights({**spec, "patch_size": smallest, "options": options})
    except (ValueError, TypeError):
        return None
    return options


@dataclass(frozen=True)
class PatchFit:
    """A patch (the network's own dims), the options and batch size fitted with it, why, whether
    it is within the device's budget, the network spec and the step's multiply-adds."""

    patch: tuple[int, ...]
    options: dict[str, Any]
    batch: int
    reason: str
    fits: bool
    spec: dict[str, Any]
    macs: int


@dataclass(frozen=True)
class PatchChoice:
    """A fit and where the search found it: the spacing's coarsening factor, the width divisor,
    the spacing and the median shape at it (the network's dims)."""

    fit: PatchFit
    factor: float
    divisor: int
    spacing: tuple[float, ...]
    median: np.ndarray


@dataclass(frozen=True)
class PatchSearch:
    """The search for one network on one dataset and device: ``spacing`` is rule 1's target
    spacing, ``step_target_s`` the CPU step budget."""

    fingerprint: DatasetFingerprint
    model: str
    info: ModelInfo
    network_dims: int
    spacing: tuple[float, ...]
    slice_wise: bool
    device: DeviceBudget
    step_target_s: float

    def run(self, rate: float = CPU_STEP_MACS_PER_THREAD_S) -> PatchChoice:
        """Published widths at the finest spacing that gives the patch enough context; then
        narrower widths; failing all, the first candidate that fits, else the last one tried.
        ``rate``: multiply-adds per second of one CPU thread."""
        chosen = fallback = None
        for divisor in WIDTH_DIVISORS:
            width_options = narrowed_widths(self.model, self.network_dims, divisor)
            if width_options is None:
                break
            for factor in COARSENING_FACTORS:  # coarser spacing rather than a patch without context
                coarse = tuple(value * factor for value in self.spacing)
                median = np.median(self.fingerprint.shapes_at(coarse), axis=0)
                median = median[1:] if self.slice_wise else median
                fitted = self.fit(median, width_options, rate)
                candidate = PatchChoice(fitted, factor, divisor, coarse, median)
                if not fitted.fits:
                    break  # the smallest patch is over the budget: a coarser spacing cannot help, narrower may
                fallback = fallback or candidate
                if min(p / m for p, m in zip(fitted.patch, median)) >= MIN_PATCH_COVERAGE:
                    chosen = candidate
                    break
            if chosen:
                break
        return chosen or fallback or candidate

    def fit(self, median, width_options: dict[str, Any], rate: float = CPU_STEP_MACS_PER_THREAD_S) -> PatchFit:
        """The median shape as a patch (:func:`network_patch`), shrunk until one step fits the
        device, with its options and batch size."""
        from AttentionSegLib.models.memory import estimate_step

        fingerprint, model, info, device = self.fingerprint, self.model, self.info, self.device
        patch = [max(int(math.ceil(v)), 1) for v in median]
        shrunk = 0
        while True:
            options = dict(width_options)
            if model in TOPOLOGY_MODELS:
                options.update(network_topology(model, pooling_levels(tuple(patch)), device.kind)[0])
            multiple = info.patch_multiple(self.network_dims, options)
            fitted = network_patch(patch, multiple, info.min_patch_multiples)
            spec = {
                "name": model,
                "spatial_dims": self.network_dims,
                "in_channels": len(fingerprint.channel_names),
                "out_channels": len(fingerprint.labels),
                "patch_size": fitted,
                "clinical_features": 0,
                "options": {**options, **({"deep_supervision": True} if info.deep_supervision else {})},
            }
            estimate = estimate_step(spec, 2)
            fits_memory = estimate.training_bytes() <= device.memory_bytes
            step_s = estimate.step_macs / (rate * max(device.threads, 1))
            fits_compute = device.kind != "cpu" or step_s <= self.step_target_s
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
            reason += f", ~{step_s:.2f} s on {device.threads} thread(s) (budget {self.step_target_s:.2g} s)"
        fits = fits_memory and fits_compute
        if not fits:
            reason += " (the smallest patch the network takes; over the budget)"
        return PatchFit(tuple(fitted), options, batch, reason, fits, spec, estimate.step_macs)


def refit_at_measured_speed(search: PatchSearch, first: PatchChoice) -> tuple[PatchChoice, str]:
    """Rule 2's check of the estimate on a CPU: time one real step of ``first``; when it is more than
    ``MEASURED_SLOWDOWN_TOLERANCE`` times slower than its multiply-adds say and over the step budget,
    search again at the measured speed and keep the refitted choice only if a real step of it is
    faster (narrower widths or a smaller patch do not speed up every network). Returns the choice and
    a note for the patch's reason."""
    # The multiply-add count misses what attention networks spend in memory-bound operations
    # (norms, softmax, reshapes): a real step tells.
    from AttentionSegLib.models.memory import time_cpu_step

    rate = CPU_STEP_MACS_PER_THREAD_S
    measured = time_cpu_step(first.fit.spec)
    estimated = first.fit.macs / (rate * max(search.device.threads, 1))
    # At most MAX_MEASURED_SLOWDOWN: a step timed while other work loads the machine must not
    # shrink the plan to nothing.
    ratio = min(measured / max(estimated, 1e-9), MAX_MEASURED_SLOWDOWN)
    # Refit only a step that is over the budget too: a tiny network's fixed overheads make it
    # slower than its multiply-adds say, but not slow.
    if not (ratio > MEASURED_SLOWDOWN_TOLERANCE and measured > search.step_target_s):
        return first, f"; a real step measured {measured:.2f} s"
    refitted = search.run(rate / ratio)
    remeasured = time_cpu_step(refitted.fit.spec)
    if remeasured * MEASURED_SLOWDOWN_TOLERANCE > measured:
        return first, (
            f"; a real step measured {measured:.2f} s, {ratio:.1f}x the multiply-add estimate, and "
            f"{remeasured:.2f} s at the plan refitted to it: no faster, so the first plan stands"
        )
    first_patch = "x".join(map(str, first.fit.patch))
    return refitted, (
        f"; a real step at {first_patch} measured {measured:.2f} s, {ratio:.1f}x the multiply-add "
        f"estimate: refitted at the measured speed ({remeasured:.2f} s a step)"
    )


def options_reason(search: PatchSearch, choice: PatchChoice) -> str:
    """Why the chosen options: the planned topology (rule 3) and the narrowed widths (rule 2)."""
    reasons = []
    if search.model in TOPOLOGY_MODELS:
        levels = _topology_levels(choice.fit.options, search.model)
        reasons.append(network_topology(search.model, levels, search.device.kind)[1])
    if choice.divisor != 1:
        reasons.append(
            f"widths / {choice.divisor}: at the published widths no patch within the device's step budget "
            f"({_budget_text(search.device, search.step_target_s)}) covers {MIN_PATCH_COVERAGE:.0%} of the "
            f"median shape, even at x{COARSENING_FACTORS[-1]:g} spacing"
        )
    return "; ".join(reasons)


def _budget_text(device: DeviceBudget, step_target_s: float) -> str:
    if device.kind == "cpu":
        return f"{step_target_s:.2g} s on {device.threads} thread(s)"
    return f"{device.memory_bytes / 2**30:.0f} GiB"


def _gpu_batch(fingerprint, spec, estimate, device) -> int:
    """Largest batch that fits the GPU memory and covers at most 5 % of the dataset's voxels."""
    from AttentionSegLib.models.memory import BACKWARD_PEAK_PER_ACTIVATION_BYTE

    # The estimate is for a batch of 2: activations grow with the batch, the rest does not.
    per_sample = max(BACKWARD_PEAK_PER_ACTIVATION_BYTE * estimate.activation_bytes / 2, 1)
    fixed = estimate.training_bytes() - 2 * per_sample
    by_memory = int((device.memory_bytes - fixed) // per_sample)
    dataset_voxels = float(np.sum(np.prod(fingerprint.shapes, axis=1)))
    by_dataset = int(0.05 * dataset_voxels // max(np.prod(spec["patch_size"]), 1))
    return max(2, min(by_memory, by_dataset, 64))
