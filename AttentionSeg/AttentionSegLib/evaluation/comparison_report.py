"""``report.html``: one self-contained page (images embedded) of a model comparison.

Per-label box plots of Dice and HD95 per model, the pairwise statistics with their bootstrap
intervals and Holm-corrected p-values, the ranking and its stability, and for each model its
worst cases with a thumbnail: the slice through the largest error region, the image in grey, the
reference contour in green and the prediction contour in magenta, drawn in the slice's physical
aspect ratio. Deterministic: the same comparison gives the same page.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from AttentionSegLib.io.atomic import write_text_atomic

__all__ = ["write_report", "strip_thumbnails"]

_THUMBNAIL_KEYS = ("image", "reference", "prediction")


def strip_thumbnails(comparison: dict) -> dict:
    """The comparison without the thumbnails' arrays (for JSON)."""
    if "worst" not in comparison:
        return comparison
    worst = {
        model: [{k: v for k, v in entry.items() if k not in _THUMBNAIL_KEYS} for entry in entries]
        for model, entries in comparison["worst"].items()
    }
    return {**comparison, "worst": worst}


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})  # no timestamp: deterministic
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _number(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _box_plots(comparison: dict, plt) -> list[str]:
    models = list(comparison["models"])
    first = comparison["models"][models[0]]
    labels = [(entry["value"], entry["name"]) for entry in first["per_label"]]
    images = []
    for key, title in (("dice", "Dice"), ("hd95_mm", "HD95 (mm)")):
        figure, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3.2), dpi=100, squeeze=False)
        for column, (value, name) in enumerate(labels):
            data = []
            for model in models:
                rows = [row for case in comparison["models"][model]["cases"] for row in case["labels"]]
                values = [row[key] for row in rows if row["value"] == value and row[key] is not None]
                data.append([v for v in values if math.isfinite(v)])
            axis = axes[0, column]
            axis.boxplot(data, tick_labels=models, showmeans=True)
            axis.set_title(f"{value} {name}", fontsize=9)
            axis.set_ylabel(title, fontsize=8)
            axis.tick_params(labelsize=7)
        figure.tight_layout()
        images.append(_png(figure))
        plt.close(figure)
    return images


def _thumbnail(entry: dict, plt) -> str:
    spacing = entry["spacing"]
    height, width = entry["image"].shape
    aspect = spacing[0] / spacing[1]  # rows are spacing[0] mm apart, columns spacing[1]
    size = 2.6
    figure, axis = plt.subplots(figsize=(size, size * height * aspect / width), dpi=100)
    axis.imshow(entry["image"], cmap="gray", aspect=aspect, interpolation="nearest")
    reference, prediction = entry["reference"] > 0, entry["prediction"] > 0
    if reference.any():
        axis.contour(reference.astype(float), levels=[0.5], colors="lime", linewidths=1)
    if prediction.any():
        axis.contour(prediction.astype(float), levels=[0.5], colors="magenta", linewidths=1)
    error = entry.get("largest_error")
    if error:
        index = error["index"][1:] if len(error["index"]) == 3 else error["index"]
        axis.plot(index[1], index[0], marker="+", color="yellow", markersize=10)
    axis.set_axis_off()
    figure.subplots_adjust(0, 0, 1, 1)
    image = _png(figure)
    plt.close(figure)
    return image


def write_report(comparison: dict, statistics: dict, path: Path, title: str = "Model comparison") -> Path:
    """Write the comparison's page to ``path`` (atomically) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    models = list(comparison["models"])
    label_names = {e["value"]: e["name"] for e in comparison["models"][models[0]]["per_label"]}
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
        "th{background:#eee}td.l{text-align:left}.thumbs{display:flex;gap:12px;flex-wrap:wrap}"
        "figure{margin:0}figcaption{font-size:12px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(comparison['cases'])} case(s); models: {', '.join(html.escape(m) for m in models)}. "
        f"Bootstrap: {statistics['n_bootstrap']} resamples of the cases, seed {statistics['seed']}.</p>",
        "<h2>Per-label distributions</h2>",
    ]
    parts += [f"<img alt='box plots' src='{image}'>" for image in _box_plots(comparison, plt)]
    parts.append("<h2>Means over cases</h2><table><tr><th>Model</th><th>Label</th><th>Cases</th>")
    parts.append("<th>Dice</th><th>HD95 (mm)</th><th>ASSD (mm)</th><th>NSD</th><th>s/case</th></tr>")
    for model, result in comparison["models"].items():
        for entry in result["per_label"]:
            cells = [_number(entry[f"{key}_mean"]) for key in ("dice", "hd95_mm", "assd_mm", "nsd")]
            parts.append(
                f"<tr><td class=l>{html.escape(model)}</td><td class=l>{entry['value']} {html.escape(entry['name'])}"
                f"</td><td>{entry['n_cases']}</td>"
                + "".join(f"<td>{c}</td>" for c in cells)
                + f"<td>{result['seconds_per_case']:.2f}</td></tr>"
            )
    parts.append("</table>")
    if statistics["pairwise"]:
        parts.append(
            "<h2>Pairwise differences (first minus second)</h2><p>Mean paired difference over the cases, "
            "95 % bootstrap interval, Wilcoxon signed-rank p-value and its Holm correction over every row; "
            "wins: cases where each model is better (higher Dice, lower HD95). n: cases compared "
            "(inf: cases left out of the mean because one HD95 is infinite).</p><table><tr><th>First</th>"
            "<th>Second</th><th>Label</th><th>Metric</th><th>Mean diff.</th><th>95 % CI</th><th>p</th>"
            "<th>p (Holm)</th><th>Wins first / second / ties</th><th>n (inf)</th></tr>"
        )
        for row in statistics["pairwise"]:
            parts.append(
                f"<tr><td class=l>{html.escape(row['first'])}</td><td class=l>{html.escape(row['second'])}</td>"
                f"<td class=l>{row['label']} {html.escape(label_names.get(row['label'], ''))}</td>"
                f"<td class=l>{row['metric']}</td><td>{_number(row['mean_difference'])}</td>"
                f"<td>[{_number(row['ci_low'])}, {_number(row['ci_high'])}]</td><td>{_number(row['p'], 3)}</td>"
                f"<td>{_number(row['p_holm'], 3)}</td><td>{row['wins_first']} / {row['wins_second']} / "
                f"{row['ties']}</td><td>{row['n']} ({row['n_infinite']})</td></tr>"
            )
        parts.append("</table>")
    for metric, result in statistics["ranking"].items():
        if not result["overall"]:
            continue
        parts.append(
            f"<h2>Ranking by {metric}</h2><p>Rank per case (1 = best), mean over cases per label, then over "
            "labels; P(first): how often the model ranks first when the cases are resampled.</p>"
            "<table><tr><th>Model</th><th>Mean rank</th><th>P(first)</th>"
            + "".join(f"<th>{v} {html.escape(label_names.get(v, ''))}</th>" for v in result["labels"])
            + "</tr>"
        )
        order = sorted(models, key=lambda m: result["overall"]["mean_rank"][m])
        for model in order:
            per_label = "".join(
                f"<td>{_number(result['labels'][v]['mean_rank'][model], 3)}</td>" for v in result["labels"]
            )
            parts.append(
                f"<tr><td class=l>{html.escape(model)}</td><td>{_number(result['overall']['mean_rank'][model], 3)}"
                f"</td><td>{_number(result['overall']['first'][model], 3)}</td>{per_label}</tr>"
            )
        parts.append("</table>")
    if comparison.get("worst"):
        parts.append(
            "<h2>Worst cases</h2><p>Per model, the cases of lowest mean Dice: the slice through the largest "
            "error region (yellow +), reference in green, prediction in magenta.</p>"
        )
        for model, entries in comparison["worst"].items():
            parts.append(f"<h3>{html.escape(model)}</h3><div class=thumbs>")
            for entry in entries:
                error = entry.get("largest_error")
                where = f", slice {entry['slice']}" if entry.get("slice") is not None else ""
                size = f", largest error {error['volume_ml']:.3g} mL" if error else ""
                parts.append(
                    f"<figure><img alt='{html.escape(entry['case'])}' src='{_thumbnail(entry, plt)}'>"
                    f"<figcaption>{html.escape(entry['case'])}: Dice {entry['dice']:.3f}{where}{size}</figcaption>"
                    "</figure>"
                )
            parts.append("</div>")
    parts.append("</body></html>")
    return write_text_atomic(path, "\n".join(parts))
