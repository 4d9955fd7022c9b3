"""Predictors kept between calls, so that repeated clicks and segmentations do not reload the model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from AttentionSegLib.errors import AttentionSegError

if TYPE_CHECKING:  # PyTorch loads only when a model runs (Slicer starts without it)
    from AttentionSegLib.inference.predictor import Predictor

__all__ = ["PredictorCache"]

PredictorFactory = Callable[[Path, str, bool], "Predictor"]


def _default_predictor(model_file, device: str, tta: bool) -> Predictor:
    from AttentionSegLib.inference.model_source import open_predictor

    return open_predictor(model_file, device=device, tta=tta)


class PredictorCache:
    """One predictor per model file (path and modification time), device and TTA setting; a
    server's model (``http(s)://HOST:PORT/models/NAME``) is one per address, token and TTA setting.

    Args:
        predictor_factory: ``(model_file, device, tta) -> Predictor``; default builds
            :class:`~AttentionSegLib.inference.predictor.Predictor`.

    Example:
        >>> predictors = PredictorCache()  # doctest: +SKIP
        >>> predictors.get("model.pt", "cpu") is predictors.get("model.pt", "cpu")  # doctest: +SKIP
        True
    """

    def __init__(self, predictor_factory: PredictorFactory | None = None) -> None:
        self.predictor_factory = predictor_factory or _default_predictor
        self._predictors: dict[tuple, Predictor] = {}

    def get(self, model_file: str | Path, device: str = "auto", tta: bool = False) -> Predictor:
        """The predictor of ``model_file``; a rewritten file is loaded again.

        Raises:
            AttentionSegError: the model file does not exist.
        """
        from AttentionSegLib.inference.model_source import is_model_url

        if is_model_url(model_file):
            import os

            from AttentionSegLib.serve.tokens import TOKEN_VARIABLE

            source, key = model_file, (model_file, os.environ.get(TOKEN_VARIABLE, ""), device, tta)
        else:
            source = Path(model_file)
            if not source.is_file():
                raise AttentionSegError(f"{source}: model file not found")
            key = (str(source.resolve()), source.stat().st_mtime_ns, device, tta)
        if key not in self._predictors:
            self._predictors[key] = self.predictor_factory(source, device, tta)
        return self._predictors[key]
