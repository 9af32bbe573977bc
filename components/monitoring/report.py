"""The drift report as one self-contained HTML page (KFP UI shows `HTML` artifacts inline).

Plots are inline SVG written here: no plotting library in the image, no scripts, no external requests.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from components.constants import (
    DRIFT_STATUS_DRIFT,
    DRIFT_STATUS_NOT_ENOUGH_DATA,
    DRIFT_STATUS_OK,
    PAYLOAD_COLUMN_TIMESTAMP,
)
from components.reference_profile import ReferenceProfile, validate_reference_profile

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

    from components.monitoring.drift import DriftReport, FeatureDrift

_REFERENCE_COLOUR = "#4c78a8"
_WINDOW_COLOUR = "#f58518"
_STATUS_COLOUR = {DRIFT_STATUS_DRIFT: "#c62828", DRIFT_STATUS_NOT_ENOUGH_DATA: "#ef6c00"}
NOT_EVALUATED = "not evaluated"
"""A feature's status under `not_enough_data`: its numbers are shown, but no decision was made."""
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


def _ticks(top: float) -> list[float]:
    """Three or four round shares from 0 to at least `top` (the y axis' scale)."""
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25):
        if top / step <= 4:
            break
    count = math.ceil(top / step - 1e-9)
    return [round(i * step, 4) for i in range(count + 1)]


def feature_svg(name: str, reference: list[float], window: list[float], edges: list[float]) -> str:
    """Grouped bars: share of training rows (blue) and of logged rows (orange) in each PSI bin, on a labelled axis."""
    bins = len(reference)
    plot_w, plot_h = _WIDTH - 2 * _MARGIN, _HEIGHT - 2 * _MARGIN
    ticks = _ticks(max([*reference, *window, 0.01]))
    top = ticks[-1]
    slot = plot_w / bins
    bar = slot * 0.4
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" role="img" '
        f'aria-label="{html.escape(name)}: share of rows per bin, training vs logged">',
        f'<text x="4" y="{_MARGIN - 12}" font-size="10">share of rows</text>',
    ]
    for tick in ticks:  # the y axis: gridline and label per tick, so bar heights read as shares
        y = _MARGIN + plot_h - plot_h * tick / top
        parts.append(f'<line x1="{_MARGIN}" y1="{y:.1f}" x2="{_MARGIN + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text class="tick" x="{_MARGIN - 3}" y="{y + 3:.1f}" font-size="9" text-anchor="end">{tick:.0%}</text>'
        )
    parts.append(f'<line x1="{_MARGIN}" y1="{_MARGIN}" x2="{_MARGIN}" y2="{_MARGIN + plot_h}" stroke="#333"/>')
    parts.append(
        f'<line x1="{_MARGIN}" y1="{_MARGIN + plot_h}" x2="{_MARGIN + plot_w}" y2="{_MARGIN + plot_h}" stroke="#333"/>'
    )
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


def feature_verdict(feature: FeatureDrift, evaluated: bool) -> str:
    """What the status column says: `not evaluated` when the window was too small to judge."""
    if not evaluated:
        return NOT_EVALUATED
    return f"DRIFT ({', '.join(feature.reasons)})" if feature.drifted else DRIFT_STATUS_OK


def _feature_row(feature: FeatureDrift, evaluated: bool) -> str:
    verdict = feature_verdict(feature, evaluated)
    style = ' style="color:#c62828;font-weight:bold"' if feature.drifted and evaluated else ""
    style = style if evaluated else ' style="color:#777"'
    return (
        f"<tr><td>{html.escape(feature.name)}</td><td{style}>{html.escape(verdict)}</td><td>{_fmt(feature.psi)}</td>"
        f"<td>{_fmt(feature.ks_statistic)}</td><td>{_fmt(feature.ks_pvalue_adjusted)}</td>"
        f"<td>{_fmt(feature.std_ratio)}</td><td>{_fmt(feature.spread_pvalue_adjusted)}</td>"
        f"<td>{_fmt(feature.reference_mean)}</td><td>{_fmt(feature.window_mean)}</td>"
        f"<td>{_fmt(feature.mean_shift_in_std, 2)}</td></tr>"
    )


def render_drift_report_html(
    report: DriftReport, profile: Mapping[str, Any] | ReferenceProfile, window: pd.DataFrame
) -> str:
    """One HTML page: the decision, a per-feature table, and a bar chart per feature.

    Args:
        report: From `detect_drift`.
        profile: The reference profile the report was computed against (a dict is validated first).
        window: The logged rows that were checked (for the time span shown in the header).

    Returns:
        A complete HTML document.
    """
    reference = validate_reference_profile(profile)
    rows_note = reference.rows if reference.rows is not None else "?"
    colour = _STATUS_COLOUR.get(report.status, "#2e7d32")
    span = "no records"
    if len(window) and PAYLOAD_COLUMN_TIMESTAMP in window.columns:
        span = f"{window[PAYLOAD_COLUMN_TIMESTAMP].min()} to {window[PAYLOAD_COLUMN_TIMESTAMP].max()}"
    rows = "".join(_feature_row(f, report.evaluated) for f in report.features)
    charts = []
    for feature in report.features:
        ref = reference.features[feature.name]
        charts.append(
            f"<figure><figcaption><b>{html.escape(feature.name)}</b> — PSI {_fmt(feature.psi)}, "
            f"KS p {_fmt(feature.ks_pvalue_adjusted)}, std ratio {_fmt(feature.std_ratio)}"
            f"{' — drifted' if feature.drifted else ''}</figcaption>"
            f"{feature_svg(feature.name, ref.bin_proportions, feature.window_bin_proportions, ref.bin_edges)}"
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
A feature drifts when its KS p ≤ {_fmt(report.ks_alpha)} and PSI ≥ {_fmt(report.psi_threshold)}
(distribution), or its spread p ≤ {_fmt(report.ks_alpha)} and its std ratio is at least
{_fmt(report.std_ratio_threshold)} or at most 1/{_fmt(report.std_ratio_threshold)} (spread). p-values are
Holm-adjusted over all {2 * len(report.features)} tests (KS and Brown-Forsythe per feature), so the chance of any
false alarm is at most {_fmt(report.ks_alpha)}. Reference: {rows_note} training rows.</p>
<table><tr><th>feature</th><th>status</th><th>PSI</th><th>KS D</th><th>KS p (adj.)</th><th>std ratio</th>
<th>spread p (adj.)</th><th>train mean</th><th>window mean</th><th>shift (std)</th></tr>{rows}</table>
<h2>Per-feature distributions</h2>{"".join(charts)}
<p style="color:#777">Generated {generated}.</p></body></html>
"""
