"""The HTML drift report: one self-contained page with a chart per feature, names escaped."""

from __future__ import annotations

from html.parser import HTMLParser

import pandas as pd

from components.constants import DRIFT_STATUS_DRIFT, DRIFT_STATUS_NOT_ENOUGH_DATA
from components.monitoring.drift import detect_drift
from components.monitoring.reference import build_reference_profile
from components.monitoring.report import render_drift_report_html


class TagCounter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1


def parse(page: str) -> dict[str, int]:
    counter = TagCounter()
    counter.feed(page)
    return counter.tags


def test_report_has_a_chart_per_feature_and_the_decision(iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame)
    window = iris_frame.assign(**{"petal length (cm)": iris_frame["petal length (cm)"] + 1.0})
    report = detect_drift(profile, window, min_records=100)
    page = render_drift_report_html(report, profile, window)
    tags = parse(page)
    assert report.status == DRIFT_STATUS_DRIFT
    assert tags["svg"] == 4 and tags["figure"] == 4 and tags["tr"] == 5
    assert DRIFT_STATUS_DRIFT in page and "petal length (cm)" in page
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_feature_names_are_escaped_and_empty_windows_render() -> None:
    frame = pd.DataFrame({"<b>x</b>": range(50), "y&z": range(50)}).astype(float)
    profile = build_reference_profile(frame)
    empty = pd.DataFrame()
    page = render_drift_report_html(detect_drift(profile, empty), profile, empty)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "y&amp;z" in page
    assert DRIFT_STATUS_NOT_ENOUGH_DATA in page and parse(page)["svg"] == 2
