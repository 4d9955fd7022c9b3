"""The Metrics panel: the working segmentation against the reference, in the engine's metric
table (the cells of ``attentionseg evaluate``)."""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from AttentionSegLib.evaluation.report import metrics_table_cells
from AttentionSegLib.web.panels.panel import Panel, guarded

__all__ = ["MetricsPanel", "metrics_table"]


class MetricsPanel(Panel):
    title = "Metrics against the reference"

    def initial_state(self) -> dict:
        return {"as_metrics_rows": [], "as_metrics_headers": [], "as_metrics_notes": []}

    def build(self) -> None:
        v3.VBtn("Compute metrics", click=self._metrics, classes="as-metrics")
        v3.VDataTable(
            headers=("as_metrics_headers",),
            items=("as_metrics_rows",),
            density="compact",
            classes="as-metrics-table as-table",
            items_per_page=-1,
            hide_default_footer=True,
        )
        html.Div("{{ note }}", v_for="note in as_metrics_notes", classes="text-caption as-metrics-note")

    def case_loaded(self) -> None:
        with self.state:
            self.state.as_metrics_rows, self.state.as_metrics_notes = [], []

    @guarded
    def _metrics(self) -> None:
        headers, rows, notes = metrics_table(self.workspace.metrics())
        with self.state:
            self.state.as_metrics_headers, self.state.as_metrics_rows = headers, rows
            self.state.as_metrics_notes = notes
        self.say("metrics computed")


def metrics_table(report: dict) -> tuple[list[dict], list[dict], list[str]]:
    """``(headers, rows, notes)`` for the page's table: one row per label, then the means; the
    cells, titles and notes of :func:`~AttentionSegLib.evaluation.report.metrics_table_cells`."""
    keys, titles, rows, mean_row, notes = metrics_table_cells(report)
    headers = [{"title": title, "key": key} for key, title in zip(keys, titles)]
    return headers, [dict(zip(keys, cells)) for cells in [*rows, mean_row]], notes
