"""Segment volume nodes with a model file, in this process (blocking; see
:mod:`~AttentionSegLib.slicer.background` for the separate process)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from AttentionSegLib.inference.model_store import model_display_name
from AttentionSegLib.io.image import Image
from AttentionSegLib.slicer.predictor_cache import PredictorCache
from AttentionSegLib.slicer.segments import segmentation_node_for_model
from AttentionSegLib.slicer.volumes import model_inputs, on_volume_grid

if TYPE_CHECKING:
    from AttentionSegLib.inference.predictor import Predictor

__all__ = ["SegmentLogic"]


class SegmentLogic:
    """Segmentation nodes from volume nodes and model files.

    Args:
        scene: the MRML scene.
        predictors: the predictor cache (shared with the other logics of the module); default a new one.

    Example:
        >>> node = SegmentLogic(scene).segment(volume_node, "liver.pt", device="cpu")  # doctest: +SKIP
    """

    def __init__(self, scene, predictors: PredictorCache | None = None) -> None:
        self.scene = scene
        self.predictors = predictors or PredictorCache()

    def predict(
        self,
        volume_nodes,
        predictor: Predictor,
        progress: Callable[[float], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> tuple[list, Image]:
        """``(volume nodes, label image on the first volume's grid)``; nothing is added to the scene."""
        nodes, images, inputs = model_inputs(volume_nodes, predictor.model_file.image_dims)
        prediction = predictor.predict(inputs, progress=progress, cancel=cancel, names=[n.GetName() for n in nodes])
        return nodes, on_volume_grid(prediction.label_image.array, images[0])

    def segment(
        self,
        volume_nodes,
        model_file: str | Path,
        device: str = "auto",
        tta: bool = False,
        progress: Callable[[float], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        name: str | None = None,
    ):
        """Segment the volume(s) (one per model channel) with ``model_file``.

        Returns a new segmentation node named after the model, one segment per label with the
        model's names and colours, referring to the first volume's geometry. A cancelled run
        (``cancel()`` true) raises :class:`~AttentionSegLib.inference.predictor.PredictionCancelled` and adds
        nothing to the scene.
        """
        predictor = self.predictors.get(model_file, device, tta)
        nodes, label_image = self.predict(volume_nodes, predictor, progress, cancel)
        return segmentation_node_for_model(
            self.scene, label_image, predictor.model_file, name or model_display_name(model_file), nodes[0]
        )
