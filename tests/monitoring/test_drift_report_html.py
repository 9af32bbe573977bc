"""The HTML drift report: one self-contained page with a chart per feature, names escaped."""

from __future__ import annotations

from html.parser import HTMLParser

import pandas as pd
import pytest

from components.constants import DRIFT_STATUS_DRIFT, DRIFT_STATUS_NOT_ENOUGH_DATA, DRIFT_STATUS_OK
from components.monitoring.drift import detect_drift
from components.monitoring.report import NOT_EVALUATED, feature_svg, render_drift_report_html
from components.reference_profile import build_reference_profile


class TagCounter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.cells: list[list[str]] = []
        self.ticks: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "tr":
            self.cells.append([])
        if tag == "td" or (tag == "text" and ("class", "tick") in attrs):
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "td":
            self.cells[-1].append(data)
        elif self._in == "text":
            self.ticks.append(data)


def parse(page: str) -> dict[str, int]:
    return parse_all(page).tags


def parse_all(page: str) -> TagCounter:
    counter = TagCounter()
    counter.feed(page)
    return counter


def test_report_has_a_chart_per_feature_and_the_decision(iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame)
    window = iris_frame.assign(**{"petal length (cm)": iris_frame["petal length (cm)"] + 1.0})
    report = detect_drift(profile, window, min_records=100)
    page = render_drift_report_html(report, profile, window)
    tags = parse(page)
    assert report.status == DRIFT_STATUS_DRIFT
    assert tags["svg"] == 4 and tags["figure"] == 4 and tags["tr"] == 5
    assert "std ratio" in page and "DRIFT (distribution)" in page
    assert DRIFT_STATUS_DRIFT in page and "petal length (cm)" in page
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_feature_names_are_escaped_and_empty_windows_render() -> None:
    frame = pd.DataFrame({"<b>x</b>": range(50), "y&z": range(50)}).astype(float)
    profile = build_reference_profile(frame)
    empty = pd.DataFrame()
    page = render_drift_report_html(detect_drift(profile, empty), profile, empty)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "y&amp;z" in page
    assert DRIFT_STATUS_NOT_ENOUGH_DATA in page and parse(page)["svg"] == 2


def test_not_enough_data_marks_every_feature_not_evaluated_never_ok(iris_frame: pd.DataFrame) -> None:
    # given: a tiny window moved far away (a huge PSI), too small to decide on
    profile = build_reference_profile(iris_frame)
    window = iris_frame.head(50).assign(**{"petal width (cm)": iris_frame["petal width (cm)"].head(50) + 3.0})
    report = detect_drift(profile, window)
    page = parse_all(render_drift_report_html(report, profile, window))
    assert report.status == DRIFT_STATUS_NOT_ENOUGH_DATA and report.max_psi > 1
    statuses = [row[1] for row in page.cells if row]
    assert statuses == [NOT_EVALUATED] * 4
    assert DRIFT_STATUS_OK not in statuses


def test_bar_charts_have_a_labelled_share_axis_that_covers_the_tallest_bar() -> None:
    reference, window = [0.1, 0.3, 0.6], [0.05, 0.25, 0.7]
    chart = parse_all(feature_svg("x", reference, window, [1.0, 2.0]))
    ticks = [float(t.rstrip("%")) / 100 for t in chart.ticks]
    assert ticks[0] == 0 and ticks == sorted(ticks) and 3 <= len(ticks) <= 5
    assert max(window) <= ticks[-1] < max(window) + 0.25
    assert "share of rows" in feature_svg("x", reference, window, [1.0, 2.0])


def test_the_table_has_a_std_ratio_column_with_each_features_ratio(iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame)
    column = "sepal width (cm)"
    mean = iris_frame[column].mean()
    window = iris_frame.assign(**{column: mean + (iris_frame[column] - mean) * 2.0})
    report = detect_drift(profile, window, min_records=100)
    page = render_drift_report_html(report, profile, window)
    rows = {row[0]: row for row in parse_all(page).cells if row}
    assert rows[column][1] == "DRIFT (spread)" and float(rows[column][5]) == pytest.approx(2.0, rel=1e-3)
    assert float(rows["sepal length (cm)"][5]) == pytest.approx(1.0)


def test_a_typed_report_names_the_categories_that_moved_and_says_what_to_do() -> None:
    import numpy as np

    from components.features import Feature, FeatureSchema

    # given: a regression model on a categorical and a numeric feature; live traffic brings a new category
    rng = np.random.default_rng(0)
    schema = FeatureSchema(task="regression", task_reason="given", label_column="y", features=[
        Feature(name="city", kind="categorical", categories=["Lyon", "Oslo", "Rome"]),
        Feature(name="rooms", kind="numeric"),
    ])  # fmt: skip
    train = pd.DataFrame({"city": rng.choice(["Lyon", "Oslo", "Rome"], 600), "rooms": rng.normal(3, 1, 600)})
    profile = build_reference_profile(train, schema, rng.normal(200, 30, 600))
    window = pd.DataFrame({"city": rng.choice(["Lyon", "Oslo", "Rome", "Kyiv<"], 300), "rooms": rng.normal(3, 1, 300),
                           "prediction": rng.normal(200, 30, 300)})  # fmt: skip
    report = detect_drift(profile, window)
    page = render_drift_report_html(report, profile, window)
    parsed = parse_all(page)
    rows = {row[0]: row for row in parsed.cells if row}
    # then: the feature, the reason, the share and the new category are on the page, escaped
    assert rows["city"][1] == "DRIFT (unseen)" and rows["city"][10] == "categorical"
    assert float(rows["city"][12].rstrip("%")) == pytest.approx(100 * report.features[0].unseen_share, abs=0.1)
    assert "new: Kyiv&lt; (" in page and "Kyiv<" not in page
    assert "What to do" in page and "never saw" in page and "(unseen)" in page  # the action and the unseen bar
    assert rows["prediction"][1] == DRIFT_STATUS_OK  # the predictions have a row and a chart of their own
    assert parsed.tags["svg"] == 3 and parsed.tags["tr"] == 4
