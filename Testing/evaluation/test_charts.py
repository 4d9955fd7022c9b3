"""The Dice bar chart as PNG bytes: a PNG of the asked size, and NaN drawn as a zero bar."""

from __future__ import annotations

import math
import struct

from AttentionSegLib.evaluation.charts import CHART_DPI, dice_bar_chart_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from the IHDR chunk, the first after the signature."""
    assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def test_a_png_of_the_asked_size_and_of_the_default_size():
    dice = {"unet": {"liver": 0.9, "spleen": 0.7}, "danie": {"liver": 0.8, "spleen": 0.75}}
    errors = {"unet": {"liver": 0.05, "spleen": 0.1}, "danie": {"liver": 0.02, "spleen": 0.0}}
    png = dice_bar_chart_png(dice, errors, y_label="Dice (mean over cases)", size_inches=(4.0, 2.5))
    assert png_size(png) == (4 * CHART_DPI, round(2.5 * CHART_DPI))
    # Default: grows with labels x sqrt(groups), at least 5 inches wide, 3.6 high.
    one = dice_bar_chart_png({"unet": {"liver": 0.9}})
    assert png_size(one) == (5 * CHART_DPI, round(3.6 * CHART_DPI))
    many = dice_bar_chart_png({"a": {f"label {i}": 0.5 for i in range(6)}})
    assert png_size(many) == (round((1.2 * 6 + 2) * CHART_DPI), round(3.6 * CHART_DPI))


def test_nan_and_missing_values_are_drawn_as_zero():
    size = (3.0, 2.0)
    zero = dice_bar_chart_png({"a vs b": {"liver": 0.0, "spleen": 0.5}}, size_inches=size)
    nan = dice_bar_chart_png({"a vs b": {"liver": math.nan, "spleen": 0.5}}, size_inches=size)
    assert nan == zero
    # A label one group lacks is a zero bar too; NaN spreads are no error bar.
    pairs = {"a": {"liver": 0.4, "spleen": 0.5}, "b": {"liver": 0.6, "spleen": 0.0}}
    missing = {"a": {"liver": 0.4, "spleen": 0.5}, "b": {"liver": 0.6}}
    spread = {"a": {"liver": 0.1, "spleen": 0.0}, "b": {"liver": 0.0, "spleen": 0.0}}
    spread_nan = {"a": {"liver": 0.1, "spleen": math.nan}, "b": {"liver": math.nan}}
    assert dice_bar_chart_png(missing, spread_nan, size_inches=size) == dice_bar_chart_png(
        pairs, spread, size_inches=size
    )
    assert png_size(dice_bar_chart_png({}, size_inches=size)) == (3 * CHART_DPI, 2 * CHART_DPI)
