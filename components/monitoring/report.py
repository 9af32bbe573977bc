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
from components.reference_profile import CategoricalProfile, ReferenceProfile, validate_reference_profile

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
CHART_CATEGORIES = 12
"""Categories drawn per categorical feature (those with the largest share on either side); the rest are one bar."""
_LABEL_CHARS = 12
"""Longest category name drawn under a bar (the table and the JSON carry the full names)."""
OTHER_LABEL = "(other)"
UNSEEN_LABEL = "(unseen)"
ACTIONS = {
    "distribution": "The feature's values moved (KS or chi-square, and PSI). Check the upstream source for a change "
    "of meaning or unit; if the new values are real, retrain on recent labelled data.",
    "spread": "The feature became wider or narrower. Look for a mixed-in population or a capped/clipped source; "
    "retrain if the new range is real.",
    "missing": "The feature is missing more (or less) often than in training. The model imputes missing values, so "
    "predictions degrade quietly: find the producer that stopped sending it.",
    "unseen": "Values arrive in categories training never saw; the model encodes them as 'no known category'. "
    "Map them to known categories upstream, or retrain with data that contains them.",
    "prediction": "The model's answers moved against its answers on the training rows. Check the inputs' signals "
    "above; with none of them firing, the features changed jointly: retrain on recent data.",
}
"""What to do when a signal fires (the report lists the ones that did; the README says the same)."""


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


def feature_svg(
    name: str, reference: list[float], window: list[float], edges: list[float], labels: list[str] | None = None
) -> str:
    """Grouped bars: share of training rows (blue) and of logged rows (orange) per bin, on a labelled axis.

    The bins are PSI's (labelled by their `edges`), or categories named by `labels`.
    """
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
    labels = labels if labels is not None else _bin_labels(edges)
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


def category_bars(reference: CategoricalProfile, feature: FeatureDrift) -> tuple[list[str], list[float], list[float]]:
    """(labels, training shares, window shares) of a categorical feature's chart, over non-missing values.

    The `CHART_CATEGORIES` categories with the largest share on either side get a bar each, the rest one bar,
    and values of unseen categories one more (the window's only).
    """
    known = 1.0 - feature.unseen_share
    window = [share * known for share in feature.window_bin_proportions] or [0.0] * len(reference.categories)
    shares = list(zip(reference.categories, reference.category_proportions, window, strict=True))
    shares.sort(key=lambda item: -max(item[1], item[2]))
    shown, rest = shares[:CHART_CATEGORIES], shares[CHART_CATEGORIES:]
    labels = [c for c, _, _ in shown]
    ref_bars, win_bars = [r for _, r, _ in shown], [w for _, _, w in shown]
    if rest:
        labels.append(OTHER_LABEL)
        ref_bars.append(sum(r for _, r, _ in rest))
        win_bars.append(sum(w for _, _, w in rest))
    if feature.unseen_share > 0:
        labels.append(UNSEEN_LABEL)
        ref_bars.append(0.0)
        win_bars.append(feature.unseen_share)
    return labels, ref_bars, win_bars


def _share(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _what_moved(feature: FeatureDrift) -> str:
    """Categorical: the categories whose share moved most, and the unseen ones with their counts."""
    moved = [
        f"{c['category']} {_share(c['reference_share'])}\u2192{_share(c['window_share'])}"
        for c in feature.category_changes[:3]
        if abs(c["window_share"] - c["reference_share"]) >= 0.005
    ]
    unseen = [f"new: {c['category']} ({c['count']})" for c in feature.unseen_categories[:3]]
    return "; ".join(moved + unseen)


def feature_verdict(feature: FeatureDrift, evaluated: bool) -> str:
    """What the status column says: `not evaluated` when the window was too small to judge."""
    if not evaluated:
        return NOT_EVALUATED
    return f"DRIFT ({', '.join(feature.reasons)})" if feature.drifted else DRIFT_STATUS_OK


def _feature_row(feature: FeatureDrift, evaluated: bool) -> str:
    verdict = feature_verdict(feature, evaluated)
    style = ' style="color:#c62828;font-weight:bold"' if feature.drifted and evaluated else ""
    style = style if evaluated else ' style="color:#777"'
    categorical = feature.kind == "categorical"
    statistic = feature.chi2_statistic if categorical else feature.ks_statistic
    pvalue = feature.chi2_pvalue_adjusted if categorical else feature.ks_pvalue_adjusted
    missing = f"{_share(feature.missing_rate_reference)}\u2192{_share(feature.missing_rate_window)}"
    return (
        f"<tr><td>{html.escape(feature.name)}</td><td{style}>{html.escape(verdict)}</td><td>{_fmt(feature.psi)}</td>"
        f"<td>{_fmt(statistic)}</td><td>{_fmt(pvalue)}</td>"
        f"<td>{_fmt(feature.std_ratio)}</td><td>{_fmt(feature.spread_pvalue_adjusted)}</td>"
        f"<td>{_fmt(feature.reference_mean)}</td><td>{_fmt(feature.window_mean)}</td>"
        f"<td>{_fmt(feature.mean_shift_in_std, 2)}</td><td>{html.escape(feature.kind)}</td>"
        f"<td>{html.escape(missing)}</td><td>{_share(feature.unseen_share) if categorical else ''}</td>"
        f"<td>{html.escape(_what_moved(feature))}</td></tr>"
    )


def _actions(report: DriftReport) -> str:
    """A "what to do" paragraph per signal that fired, naming the features it fired for."""
    if not report.evaluated:
        return ""
    fired: dict[str, list[str]] = {}
    for feature in report.features:
        for reason in feature.reasons:
            fired.setdefault(reason, []).append(feature.name)
    if report.prediction is not None and report.prediction.drifted:
        fired["prediction"] = [report.prediction.name]
    items = "".join(
        f"<li><b>{html.escape(reason)}</b> ({html.escape(', '.join(names))}): {html.escape(ACTIONS[reason])}</li>"
        for reason, names in fired.items()
        if reason in ACTIONS
    )
    return f"<h2>What to do</h2><ul>{items}</ul>" if items else ""


def _chart(feature: FeatureDrift, reference: Any) -> str:
    caption = f"PSI {_fmt(feature.psi)}"
    if isinstance(reference, CategoricalProfile):
        labels, ref_bars, win_bars = category_bars(reference, feature)
        caption += f", chi-square p {_fmt(feature.chi2_pvalue_adjusted)}, unseen {_share(feature.unseen_share)}"
        short = [label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "\u2026" for label in labels]
        svg = feature_svg(feature.name, ref_bars, win_bars, [], short)
    else:
        caption += f", KS p {_fmt(feature.ks_pvalue_adjusted)}, std ratio {_fmt(feature.std_ratio)}"
        svg = feature_svg(feature.name, reference.bin_proportions, feature.window_bin_proportions, reference.bin_edges)
    return (
        f"<figure><figcaption><b>{html.escape(feature.name)}</b> — {caption}"
        f"{' — drifted' if feature.drifted else ''}</figcaption>{svg}</figure>"
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
    checked = [*report.features, *([report.prediction] if report.prediction is not None else [])]
    rows = "".join(_feature_row(f, report.evaluated) for f in checked)
    charts = [_chart(f, reference.features[f.name]) for f in report.features]
    if report.prediction is not None and reference.prediction is not None:
        charts.append(_chart(report.prediction, reference.prediction))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}
figure{{display:inline-block;margin:0.5em}}</style></head><body>
<h1>Data drift report</h1>
<p style="font-size:1.3em;color:{colour}"><b>{html.escape(report.status)}</b>: {html.escape(report.message)}</p>
<p>Records: {report.records} (minimum {report.min_records}); window: {html.escape(span)}.<br>
A feature drifts when its KS p (numeric) or chi-square p (categorical) ≤ {_fmt(report.ks_alpha)} and PSI ≥
{_fmt(report.psi_threshold)} (distribution), or its spread p ≤ {_fmt(report.ks_alpha)} and its std ratio is at
least {_fmt(report.std_ratio_threshold)} or at most 1/{_fmt(report.std_ratio_threshold)} (spread), or its missing
rate moved by at least {_share(report.missing_rate_threshold)} with missing-rate p ≤ {_fmt(report.ks_alpha)}
(missing), or at least {_share(report.unseen_threshold)} of its values are categories training never saw (unseen).
p-values are Holm-adjusted over all {report.tests} tests, so the chance of any false alarm is at most
{_fmt(report.ks_alpha)}. Reference: {rows_note} training rows.</p>{_actions(report)}
<table><tr><th>feature</th><th>status</th><th>PSI</th><th>KS D / χ²</th><th>KS / χ² p (adj.)</th><th>std ratio</th>
<th>spread p (adj.)</th><th>train mean</th><th>window mean</th><th>shift (std)</th><th>kind</th>
<th>missing (train→window)</th><th>unseen</th><th>what moved</th></tr>{rows}</table>
<h2>Per-feature distributions</h2>{"".join(charts)}
<p style="color:#777">Generated {generated}.</p></body></html>
"""
