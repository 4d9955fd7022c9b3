"""The robot-user benchmark: how a click tool does when a simulated user corrects it.

The protocol of the CVPR 2025 interactive 3D segmentation challenge, on every object (label) of
every case: an initial prompt (one positive click at the object's interior-most voxel, or the
reference's bounding box), then clicks at the interior-most voxel of the largest error region
(:mod:`AttentionSegLib.interactive.robot`). After every interaction the object's mask is scored
against the reference: Dice and NSD (``nsd_tolerance_mm``, 2 mm by default). Per object: DSC-AUC
and NSD-AUC (trapezoid over the interactions, one unit apart, as the challenge: at most N - 1 for N
interactions), final Dice, NoC@85 and NoC@90 (interactions needed to reach that Dice; N + 1 when
never), and the seconds of each interaction.

With ``initial="point"`` the N interactions are N clicks; with ``"box"`` the box and N - 1 clicks;
``"box2d"`` draws the object's box on the slice through its interior-most voxel across the coarsest
axis (read through the slices as a 3D box as deep as its larger side) and ``"scribble"`` a stroke
along the object's row through that voxel on the same slice, each then N - 1 clicks.
A tool is anything with ``add_click(index, positive)``, ``set_box(start, stop)`` and ``mask``:
an :class:`~AttentionSegLib.interactive.session.InteractiveSession` (interactive models) or a
:class:`~AttentionSegLib.interactive.component_click.ComponentClicks` (automatic models), so one
report compares both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.evaluation.metrics import compute_label_metrics
from AttentionSegLib.interactive.robot import bounding_box, interior_point, next_click

__all__ = [
    "Interaction",
    "ObjectResult",
    "run_robot_user",
    "evaluate_cases",
    "summarize_objects",
    "INITIAL_PROMPTS",
]

INITIAL_PROMPTS = ("point", "box", "box2d", "scribble")
NOC_THRESHOLDS = (0.85, 0.90)


@dataclass(frozen=True)
class Interaction:
    """One interaction: what the robot did and the mask's scores after it."""

    kind: str  # "click+", "click-", "box" or "none" (nothing left to correct)
    index: tuple[int, ...] | None
    dice: float
    nsd: float
    seconds: float


@dataclass(frozen=True)
class ObjectResult:
    """One object of one case under the protocol."""

    case_id: str
    value: int
    name: str
    interactions: tuple[Interaction, ...]

    @property
    def dice(self) -> list[float]:
        return [step.dice for step in self.interactions]

    @property
    def nsd(self) -> list[float]:
        return [step.nsd for step in self.interactions]

    @property
    def dice_auc(self) -> float:
        return float(np.trapezoid(self.dice)) if len(self.dice) > 1 else self.dice[0]

    @property
    def nsd_auc(self) -> float:
        return float(np.trapezoid(self.nsd)) if len(self.nsd) > 1 else self.nsd[0]

    def clicks_to(self, threshold: float) -> int:
        """Interactions needed to reach ``threshold`` Dice; N + 1 when never reached."""
        for number, dice in enumerate(self.dice, start=1):
            if dice >= threshold:
                return number
        return len(self.dice) + 1

    def to_dict(self) -> dict:
        return {
            "case": self.case_id,
            "value": self.value,
            "name": self.name,
            "dice": self.dice,
            "nsd": self.nsd,
            "kinds": [step.kind for step in self.interactions],
            "seconds": [step.seconds for step in self.interactions],
            "dice_auc": self.dice_auc,
            "nsd_auc": self.nsd_auc,
            "final_dice": self.dice[-1],
            **{f"noc{round(t * 100)}": self.clicks_to(t) for t in NOC_THRESHOLDS},
        }


def _scores(mask: np.ndarray, reference: np.ndarray, spacing, tolerance_mm: float | None) -> tuple[float, float]:
    if tolerance_mm is None:  # Dice only (training's validation): no surface distances
        overlap = float(np.logical_and(mask, reference).sum())
        total = float(mask.sum() + reference.sum())
        return (2 * overlap / total if total else 1.0), math.nan
    row = compute_label_metrics(
        mask.astype(np.uint8), reference.astype(np.uint8), spacing, labels=[1], nsd_tolerance_mm=tolerance_mm
    )[0]
    dice, nsd = row["dice"], row["nsd"]
    return (0.0 if math.isnan(dice) else float(dice)), (0.0 if math.isnan(nsd) else float(nsd))


def run_robot_user(
    tool,
    reference: np.ndarray,
    spacing: Sequence[float],
    interactions: int = 5,
    initial: str = "point",
    nsd_tolerance_mm: float | None = 2.0,
    case_id: str = "",
    value: int = 1,
    name: str = "",
) -> ObjectResult:
    """Run the protocol on one object with a fresh ``tool``; ``reference``: the object's mask (bool)
    on the tool's grid. ``nsd_tolerance_mm=None`` scores Dice only (NSD NaN)."""
    if initial not in INITIAL_PROMPTS:
        raise ValueError(f"initial must be one of {INITIAL_PROMPTS}, got {initial!r}")
    reference = reference.astype(bool)
    steps = []
    for number in range(interactions):
        if number == 0 and initial == "box":
            start, stop = bounding_box(reference)
            kind, index, step = "box", None, tool.set_box(start, stop)
        elif number == 0 and initial in ("box2d", "scribble"):
            kind, index, step = initial, None, _slice_prompt(tool, reference, spacing, initial)
        elif number == 0:
            index = interior_point(reference, spacing)
            kind, step = "click+", tool.add_click(index, True)
        else:
            click = next_click(tool.mask, reference, spacing)
            if click is None:  # nothing left to correct: the mask stands
                steps.append(Interaction("none", None, *_scores(tool.mask, reference, spacing, nsd_tolerance_mm), 0.0))
                continue
            index, kind = click.index, "click+" if click.positive else "click-"
            step = tool.add_click(index, click.positive)
        dice, nsd = _scores(tool.mask, reference, spacing, nsd_tolerance_mm)
        steps.append(Interaction(kind, index, dice, nsd, step.seconds))
    return ObjectResult(case_id, int(value), name, tuple(steps))


def slice_through(reference: np.ndarray, spacing: Sequence[float]) -> tuple[int, int]:
    """``(axis, index)`` of the slice a reader draws on: across the coarsest axis (the acquired
    slices; the first on an isotropic grid), through the object's interior-most voxel."""
    axis = int(np.argmax(np.asarray(spacing)))
    return axis, int(interior_point(reference, spacing)[axis])


def _slice_prompt(tool, reference: np.ndarray, spacing: Sequence[float], kind: str):
    """The robot's first prompt drawn on one slice: the object's box on it, through the slices
    (``box2d``), or a stroke along the object's row through its interior-most voxel there
    (``scribble``: every object voxel of that row, in order)."""
    from AttentionSegLib.interactive.strokes import on_slice, slice_box

    if reference.ndim == 2:  # one slice already: the prompt is drawn on the image
        section, axis, at = reference, None, None
    else:
        axis, at = slice_through(reference, spacing)
        section = np.take(reference, at, axis=axis)
    if kind == "box2d":
        start, stop = bounding_box(section)
        if axis is not None:
            start, stop = slice_box(start, stop, axis, at, reference.shape)
        return tool.set_box(start, stop)
    in_plane_spacing = list(spacing) if axis is None else [s for d, s in enumerate(spacing) if d != axis]
    row, column = interior_point(section, in_plane_spacing)
    voxels = [(row, c) for c in np.flatnonzero(section[row])]
    if axis is not None:
        voxels = [on_slice(voxel, axis, at) for voxel in voxels]
    if not hasattr(tool, "add_scribble"):
        raise AttentionSegError(
            "an initial scribble needs an interactive model (an automatic model takes clicks and boxes)"
        )
    return tool.add_scribble(voxels, True)


def summarize_objects(results: Sequence[ObjectResult]) -> dict:
    """Means over objects: Dice and NSD after each interaction, the AUCs, final Dice, NoC@85/90,
    and the latency percentiles (p50, p95 over every interaction that ran the model), seconds."""
    if not results:
        return {"objects": 0}
    dice = np.asarray([r.dice for r in results])
    nsd = np.asarray([r.nsd for r in results])
    latency = [step.seconds for r in results for step in r.interactions if step.kind != "none"]
    summary = {
        "objects": len(results),
        "dice_per_interaction": dice.mean(axis=0).tolist(),
        "nsd_per_interaction": nsd.mean(axis=0).tolist(),
        "dice_auc": float(np.mean([r.dice_auc for r in results])),
        "nsd_auc": float(np.mean([r.nsd_auc for r in results])),
        "final_dice": float(dice[:, -1].mean()),
        "latency_p50_s": float(np.percentile(latency, 50)) if latency else math.nan,
        "latency_p95_s": float(np.percentile(latency, 95)) if latency else math.nan,
        # Interactions after which the mean Dice dropped: the protocol's "never worse" check.
        "mean_dice_drops": [i + 1 for i in range(dice.shape[1] - 1) if dice[:, i + 1].mean() < dice[:, i].mean()],
    }
    for threshold in NOC_THRESHOLDS:
        summary[f"noc{round(threshold * 100)}"] = float(np.mean([r.clicks_to(threshold) for r in results]))
    return summary


def evaluate_cases(
    make_tool: Callable[[object, int], object],
    cases: Sequence,
    labels: dict[int, str],
    interactions: int = 5,
    initial: str = "point",
    nsd_tolerance_mm: float = 2.0,
    on_object: Callable[[int, int, ObjectResult], None] | None = None,
) -> list[ObjectResult]:
    """The protocol on every object (label of ``labels`` present in the reference) of every case.

    Args:
        make_tool: ``(case, label value) -> tool`` (a fresh tool per object).
        cases: :class:`~AttentionSegLib.evaluation.batch.EvaluationCase` objects, loaded lazily or not.
        on_object: called after each object with (done, total cases, result).
    """
    results = []
    for number, case in enumerate(cases, start=1):
        reference = np.asarray(case.reference.array)
        spacing = case.reference.spacing_array_order
        for value, name in labels.items():
            mask = reference == value
            if not mask.any():
                continue
            result = run_robot_user(
                make_tool(case, value),
                mask,
                spacing,
                interactions,
                initial,
                nsd_tolerance_mm,
                case.case_id,
                value,
                name,
            )
            results.append(result)
            if on_object is not None:
                on_object(number, len(cases), result)
    return results
