"""Charts of evaluation results as PNG bytes, drawn with matplotlib's Agg backend (no display).

:func:`dice_bar_chart_png` draws the grouped Dice bars of ``attentionseg compare``'s ``dice.png``
(:func:`AttentionSegLib.evaluation.batch.write_comparison_chart`) and of the web page's
comparison.
"""

from __future__ import annotations

import io
import math

import numpy as np

__all__ = ["dice_bar_chart_png", "CHART_DPI"]

CHART_DPI = 120  # pixels per inch of the PNG


def _zero_if_nan(value: float) -> float:
    return 0.0 if math.isnan(value) else float(value)


def dice_bar_chart_png(
    dice: dict[str, dict[str, float]],
    errors: dict[str, dict[str, float]] | None = None,
    y_label: str = "Dice",
    size_inches: tuple[float, float] | None = None,
) -> bytes:
    """Grouped bars as PNG bytes: one group of bars per label (x axis, in the order the labels
    first appear), one bar per entry of ``dice`` (a model name, or an "A vs B" pair).

    ``dice``: group -> label name -> Dice; NaN, or a label the group lacks, is drawn as 0.
    ``errors``: the same shape with one standard deviation per bar, drawn as error bars (NaN or
    missing: 0); None draws none. ``size_inches``: (width, height); None sizes the chart to the
    number of labels and groups. Drawn at :data:`CHART_DPI`, y from 0 to 1, a legend and grid.
    """
    import matplotlib

    matplotlib.use("Agg")  # bytes only: no display needed
    import matplotlib.pyplot as plt

    groups = list(dice)
    labels = list(dict.fromkeys(label for values in dice.values() for label in values))
    if size_inches is None:
        size_inches = (max(5.0, 1.2 * len(labels) * len(groups) ** 0.5 + 2), 3.6)
    width = 0.8 / max(len(groups), 1)
    figure, axes = plt.subplots(figsize=size_inches, dpi=CHART_DPI)
    try:
        for index, group in enumerate(groups):
            positions = np.arange(len(labels)) + (index - (len(groups) - 1) / 2) * width
            heights = [_zero_if_nan(dice[group].get(label, math.nan)) for label in labels]
            spread = None
            if errors is not None:
                spread = [_zero_if_nan(errors.get(group, {}).get(label, math.nan)) for label in labels]
            axes.bar(positions, heights, width, yerr=spread, capsize=2, label=group)
        axes.set_xticks(np.arange(len(labels)), labels, rotation=20 if len(labels) > 4 else 0)
        axes.set_ylim(0, 1)
        axes.set_ylabel(y_label)
        if groups:  # an empty legend only warns
            axes.legend(fontsize="small", loc="lower right")
        axes.grid(axis="y", alpha=0.3)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)
