"""The Models panel's second part: compare the chosen models on the case, a table and a Dice
chart (the engine's metric columns and chart)."""

from __future__ import annotations

import asyncio
import base64

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from AttentionSegLib.evaluation.charts import dice_bar_chart_png
from AttentionSegLib.evaluation.report import format_value, metric_pattern, metric_title
from AttentionSegLib.inference.predictor import PredictionCancelled
from AttentionSegLib.web.panels.panel import Panel, guarded

__all__ = ["ComparePanel", "comparison_table", "COMPARED_METRIC_KEYS"]

# The metrics the comparison's table shows per model and label (report keys of the engine).
COMPARED_METRIC_KEYS = ("dice", "hd95_mm", "assd_mm")
CHART_SIZE_INCHES = (4.2, 2.6)  # the side panel's width at the chart's 100 dpi


class ComparePanel(Panel):
    title = "Models"

    def initial_state(self) -> dict:
        return {"as_compare_models": [], "as_compare_rows": [], "as_compare_headers": [], "as_compare_chart": ""}

    def build(self) -> None:
        v3.VSelect(
            label="Models to compare",
            items=("as_models",),
            v_model=("as_compare_models",),
            multiple=True,
            chips=True,
            density="compact",
            classes="as-compare-select",
        )
        v3.VBtn(
            "Compare selected models",
            click=(self._compare, "[as_compare_models, as_device]"),
            disabled=("as_busy || as_compare_models.length < 1",),
            classes="as-compare",
        )
        html.Img(src=("as_compare_chart",), v_if=("as_compare_chart",), classes="as-compare-chart mt-2")
        v3.VDataTable(
            headers=("as_compare_headers",),
            items=("as_compare_rows",),
            density="compact",
            v_if=("as_compare_rows.length",),
            classes="as-compare-table as-table",
            items_per_page=-1,
            hide_default_footer=True,
        )

    def case_loaded(self) -> None:
        with self.state:
            self.state.as_compare_rows, self.state.as_compare_chart = [], ""

    @guarded
    async def _compare(self, models: list, device: str) -> None:
        models = list(models)
        self.page.job_started(f"comparing {len(models)} model(s) ...")
        cancelled = self.page.cancel_requested
        progress = [0.0]  # written by the worker thread, shown by this one
        task = asyncio.get_running_loop().run_in_executor(
            None, lambda: self.workspace.compare(models, device, lambda f: progress.__setitem__(0, f), cancelled.is_set)
        )
        while not task.done():
            await asyncio.sleep(0.2)
            with self.state:
                self.state.as_progress = progress[0]
        try:
            result = task.result()
        except PredictionCancelled:  # the Logic removed what it had added: the scene is as before
            self.page.job_ended("comparison cancelled")
            return
        headers, rows, dice = comparison_table(result["reports"])
        chart = dice_bar_chart_png(dice, size_inches=CHART_SIZE_INCHES)
        with self.state:
            self.state.as_compare_rows, self.state.as_compare_headers = rows, headers
            self.state.as_compare_chart = "data:image/png;base64," + base64.b64encode(chart).decode()
        self.page.job_ended(f"compared {len(models)} model(s)")


def comparison_table(reports: dict) -> tuple[list[dict], list[dict], dict[str, dict[str, float]]]:
    """``(headers, rows, dice)`` of the Logic's compare reports: per model and label the engine's
    metric cells (:data:`COMPARED_METRIC_KEYS` against the reference), or without a reference the
    Dice between every pair of models per label; ``dice`` the same Dice values as numbers (group ->
    label -> Dice) for the chart."""
    dice: dict[str, dict[str, float]] = {}
    if "agreement" in reports:
        keys = ("dice",)
        headers = [{"title": "Models", "key": "model"}, {"title": "Label", "key": "label"}]
        entries = [(f"{r['model_a']} vs {r['model_b']}", str(r["name"]), r) for r in reports["agreement"]]
    else:
        keys = COMPARED_METRIC_KEYS
        headers = [{"title": "Model", "key": "model"}, {"title": "Label", "key": "label"}]
        entries = [
            (model, str(row.get("name", row.get("value"))), row)
            for model, report in reports.items()
            for row in report["labels"]
        ]
    headers += [{"title": metric_title(key), "key": key} for key in keys]
    rows = []
    for group, label, entry in entries:
        rows.append(
            {"model": group, "label": label, **{k: format_value(entry.get(k), metric_pattern(k)) for k in keys}}
        )
        dice.setdefault(group, {})[label] = float(entry["dice"]) if entry.get("dice") is not None else float("nan")
    return headers, rows, dice
