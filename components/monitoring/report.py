"""The drift report as one self-contained HTML page (KFP UI shows `HTML` artifacts inline).

Plots are inline SVG written here: no plotting library in the image, no scripts, no external requests.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from components.constants import DRIFT_STATUS_DRIFT, DRIFT_STATUS_NOT_ENOUGH_DATA, PAYLOAD_COLUMN_TIMESTAMP

if TYPE_CHECKING:
    import pandas as pd

    from components.monitoring.drift import DriftReport, FeatureDrift

_REFERENCE_COLOUR = "#4c78a8"
_WINDOW_COLOUR = "#f58518"
_STATUS_COLOUR = {DRIFT_STATUS_DRIFT: "#c62828", DRIFT_STATUS_NOT_ENOUGH_DATA: "#ef6c00"}
_WIDTH, _HEIGHT, _MARGIN = 520, 220, 36


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def _bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all"]
    labels = [f"<{_fmt(edges[0])}"]
    labels += [f"{_fmt(lo)}\u2013{_fmt(hi)}" for lo, hi in pairwise(edges)]  # en dash: a range, not a minus
    labels.append(f"≥{_fmt(edges[-1])}")
    return labels


def feature_svg(name: str, reference: list[float], window: list[float], edges: list[float]) -> str:
    """Grouped bars: share of training rows (blue) and of logged rows (orange) in each PSI bin."""
    bins = len(reference)
    plot_w, plot_h = _WIDTH - 2 * _MARGIN, _HEIGHT - 2 * _MARGIN
    top = max([*reference, *window, 0.01])
    slot = plot_w / bins
    bar = slot * 0.4
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" role="img" '
        f'aria-label="{html.escape(name)}: share of rows per bin, training vs logged">',
        f'<line x1="{_MARGIN}" y1="{_MARGIN + plot_h}" x2="{_MARGIN + plot_w}" y2="{_MARGIN + plot_h}" stroke="#333"/>',
        f'<text x="{_MARGIN}" y="{_MARGIN - 12}" font-size="11">max share {top:.0%}</text>',
    ]
    labels = _bin_labels(edges)
    for i in range(bins):
        x0 = _MARGIN + i * slot + slot * 0.1
        for offset, share, colour in ((0.0, reference[i], _REFERENCE_COLOUR), (bar, window[i] if window else 0.0,
                                                                              _WINDOW_COLOUR)):  # fmt: skip
            height = plot_h * share / top
            parts.append(
                f'<rect x="{x0 + offset:.1f}" y="{_MARGIN + plot_h - height:.1f}" width="{bar:.1f}" '
                f'height="{height:.1f}" fill="{colour}"><title>{share:.1%}</title></rect>'
            )
        parts.append(
            f'<text x="{x0 + bar:.1f}" y="{_MARGIN + plot_h + 12}" font-size="8" text-anchor="middle">'
            f"{html.escape(labels[i])}</text>"
        )
    legend_y = _HEIGHT - 8
    parts.append(f'<rect x="{_MARGIN}" y="{legend_y - 8}" width="10" height="8" fill="{_REFERENCE_COLOUR}"/>')
    parts.append(f'<text x="{_MARGIN + 14}" y="{legend_y}" font-size="10">training</text>')
    parts.append(f'<rect x="{_MARGIN + 80}" y="{legend_y - 8}" width="10" height="8" fill="{_WINDOW_COLOUR}"/>')
    parts.append(f'<text x="{_MARGIN + 94}" y="{legend_y}" font-size="10">logged window</text>')
    parts.append("</svg>")
    return "".join(parts)


def _feature_row(feature: FeatureDrift) -> str:
    flag = "DRIFT" if feature.drifted else "ok"
    style = ' style="color:#c62828;font-weight:bold"' if feature.drifted else ""
    return (
        f"<tr><td>{html.escape(feature.name)}</td><td{style}>{flag}</td><td>{_fmt(feature.psi)}</td>"
        f"<td>{_fmt(feature.ks_statistic)}</td><td>{_fmt(feature.ks_pvalue)}</td>"
        f"<td>{_fmt(feature.reference_mean)}</td><td>{_fmt(feature.window_mean)}</td>"
        f"<td>{_fmt(feature.mean_shift_in_std, 2)}</td></tr>"
    )


def render_drift_report_html(report: DriftReport, profile: dict[str, Any], window: pd.DataFrame) -> str:
    """One HTML page: the decision, a per-feature table, and a bar chart per feature.

    Args:
        report: From `detect_drift`.
        profile: The reference profile the report was computed against.
        window: The logged rows that were checked (for the time span shown in the header).

    Returns:
        A complete HTML document.
    """
    colour = _STATUS_COLOUR.get(report.status, "#2e7d32")
    span = "no records"
    if len(window) and PAYLOAD_COLUMN_TIMESTAMP in window.columns:
        span = f"{window[PAYLOAD_COLUMN_TIMESTAMP].min()} to {window[PAYLOAD_COLUMN_TIMESTAMP].max()}"
    rows = "".join(_feature_row(f) for f in report.features)
    charts = []
    for feature in report.features:
        ref = profile["features"][feature.name]
        charts.append(
            f"<figure><figcaption><b>{html.escape(feature.name)}</b> — PSI {_fmt(feature.psi)}, "
            f"KS p {_fmt(feature.ks_pvalue)}{' — drifted' if feature.drifted else ''}</figcaption>"
            f"{feature_svg(feature.name, ref['bin_proportions'], feature.window_bin_proportions, ref['bin_edges'])}"
            "</figure>"
        )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}
figure{{display:inline-block;margin:0.5em}}</style></head><body>
<h1>Data drift report</h1>
<p style="font-size:1.3em;color:{colour}"><b>{html.escape(report.status)}</b>: {html.escape(report.message)}</p>
<p>Records: {report.records} (minimum {report.min_records}); window: {html.escape(span)}.<br>
A feature drifts when KS p &lt; {_fmt(report.ks_alpha_per_feature)} (= {_fmt(report.ks_alpha)} / {len(report.features)}
features, Bonferroni) and PSI ≥ {_fmt(report.psi_threshold)}. Reference: {profile.get("rows", "?")} training rows.</p>
<table><tr><th>feature</th><th>status</th><th>PSI</th><th>KS D</th><th>KS p</th><th>train mean</th>
<th>window mean</th><th>shift (std)</th></tr>{rows}</table>
<h2>Per-feature distributions</h2>{"".join(charts)}
<p style="color:#777">Generated {generated}.</p></body></html>
"""
