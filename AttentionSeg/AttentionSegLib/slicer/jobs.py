"""The AttentionSeg module's job logics on one scene, sharing one predictor cache.

The Slicer module's Logic and any other front end on the same MRML (scripts, a web page) build
this once per scene instead of wiring the five logics themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from AttentionSegLib.slicer.click_logic import ClickLogic
from AttentionSegLib.slicer.compare_logic import CompareLogic
from AttentionSegLib.slicer.corrections_logic import CorrectionsLogic
from AttentionSegLib.slicer.metrics_logic import MetricsLogic
from AttentionSegLib.slicer.predictor_cache import PredictorCache, PredictorFactory
from AttentionSegLib.slicer.segment_logic import SegmentLogic

__all__ = ["SegmentationJobs"]


@dataclass(frozen=True)
class SegmentationJobs:
    """Segment, compare, click-to-segment, metrics and corrections on ``scene``.

    Example:
        >>> jobs = SegmentationJobs.for_scene(scene)  # doctest: +SKIP
        >>> node = jobs.segment.segment(volume_node, "model.pt")  # doctest: +SKIP
    """

    scene: object
    segment: SegmentLogic
    compare: CompareLogic
    click: ClickLogic
    metrics: MetricsLogic
    corrections: CorrectionsLogic

    @classmethod
    def for_scene(cls, scene, predictor_factory: PredictorFactory | None = None) -> SegmentationJobs:
        predictors = PredictorCache(predictor_factory)
        return cls(
            scene=scene,
            segment=SegmentLogic(scene, predictors),
            compare=CompareLogic(scene, predictors),
            click=ClickLogic(scene, predictors),
            metrics=MetricsLogic(scene),
            corrections=CorrectionsLogic(scene),
        )
