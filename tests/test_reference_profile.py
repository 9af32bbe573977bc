"""build_reference_profile: JSON-able, bounded, deterministic, typed by the feature schema, refuses what it cannot
profile; profiles of earlier versions still load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.constants import REFERENCE_PROFILE_FILENAME, REFERENCE_PROFILE_SCHEMA_VERSION
from components.features import Feature, FeatureSchema, feature_matrix
from components.reference_profile import (
    KIND_CATEGORICAL,
    KIND_NUMERIC,
    MIN_ROWS_PER_BIN,
    CategoricalProfile,
    ReferenceProfileError,
    bin_proportions,
    build_reference_profile,
    load_reference_profile,
    write_reference_profile,
)

COLOURS = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def iris_frame() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    return load_iris(as_frame=True).data


def typed_schema(task: str = "classification") -> FeatureSchema:
    return FeatureSchema(
        task=task,
        task_reason="given",
        label_column="y",
        features=[
            Feature(name="age", kind="numeric", nullable=True),
            Feature(name="colour", kind="categorical", categories=COLOURS, nullable=True),
            Feature(name="size", kind="numeric"),
        ],
        class_names=["0", "1"] if task == "classification" else [],
    )


def typed_frame(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    """Training rows: colour red/green/blue at 50/30/20% with 10% missing, age with 5% missing."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, size=rows)
    age[: rows // 20] = np.nan
    colour = np.array(["red"] * (rows // 2) + ["green"] * (rows * 3 // 10) + ["blue"] * (rows // 5), dtype=object)
    colour[rows - rows // 10 :] = None
    return pd.DataFrame(
        {"age": age, "colour": colour, "size": rng.exponential(size=rows), "y": rng.integers(0, 2, rows)}
    )


def test_profile_round_trips_through_the_model_directory(tmp_path: Path, iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame)
    path = write_reference_profile(tmp_path, profile)
    assert path.name == REFERENCE_PROFILE_FILENAME
    assert load_reference_profile(tmp_path).model_dump() == json.loads(json.dumps(profile))
    # A URI goes through a pyarrow filesystem (as s3:// does on a cluster): the directory or the file itself.
    assert (
        load_reference_profile(tmp_path.as_uri())
        == load_reference_profile(path.as_uri())
        == load_reference_profile(path)
    )


def test_profile_contents(iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame, bins=10)
    assert profile["feature_names"] == list(iris_frame.columns) and profile["rows"] == 150
    for name in iris_frame.columns:
        entry = profile["features"][name]
        assert entry["count"] == 150
        assert entry["mean"] == pytest.approx(iris_frame[name].mean())
        assert entry["std"] == pytest.approx(iris_frame[name].std())
        assert entry["bin_edges"] == sorted(set(entry["bin_edges"]))  # discrete values: no duplicate edges
        assert len(entry["bin_proportions"]) == len(entry["bin_edges"]) + 1
        assert sum(entry["bin_proportions"]) == pytest.approx(1.0)
        assert min(entry["bin_proportions"]) > 0
        assert sorted(entry["sample"]) == sorted(iris_frame[name].tolist())  # small data: all of it


def test_sample_is_bounded_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=20_000), "y": rng.exponential(size=20_000)})
    first = build_reference_profile(frame, sample_size=500, seed=3)
    assert len(first["features"]["x"]["sample"]) == 500
    assert first == build_reference_profile(frame, sample_size=500, seed=3)
    assert len(json.dumps(first)) < 100_000


def test_unprofilable_data_is_refused(iris_frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ReferenceProfileError, match="at least"):
        build_reference_profile(iris_frame.head(5))
    with pytest.raises(ReferenceProfileError, match="not numeric"):
        build_reference_profile(iris_frame.assign(kind="a"))
    with pytest.raises(ReferenceProfileError, match="missing"):
        build_reference_profile(iris_frame.assign(extra=[np.nan] * 150))
    with pytest.raises(FileNotFoundError, match="retrain"):
        load_reference_profile(tmp_path)
    (tmp_path / REFERENCE_PROFILE_FILENAME).write_text('{"schema_version": 99}')
    with pytest.raises(ReferenceProfileError, match="schema_version"):
        load_reference_profile(tmp_path)


def test_no_training_value_sits_on_a_bin_edge_so_tie_groups_stay_in_one_bin(iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame)
    for name in iris_frame.columns:
        values = iris_frame[name].to_numpy()
        edges = profile["features"][name]["bin_edges"]
        assert not set(edges) & set(values.tolist())
        distinct = np.unique(values)
        for edge in edges:  # halfway between two neighbouring distinct values
            below, above = distinct[distinct < edge].max(), distinct[distinct > edge].min()
            assert edge == pytest.approx((below + above) / 2)
        # a value nudged by less than half the 0.1 cm grid lands in the same bin as the value itself
        assert bin_proportions(values + 0.04, edges) == bin_proportions(values, edges)
        assert bin_proportions(values - 0.04, edges) == bin_proportions(values, edges)


def test_small_data_gets_fewer_bins() -> None:
    rng = np.random.default_rng(0)
    small = build_reference_profile(pd.DataFrame({"x": rng.normal(size=120)}))
    large = build_reference_profile(pd.DataFrame({"x": rng.normal(size=1000)}))
    assert len(small["features"]["x"]["bin_proportions"]) == 120 // MIN_ROWS_PER_BIN
    assert len(large["features"]["x"]["bin_proportions"]) == 10


def test_a_version_1_profile_is_read_with_tie_safe_bins(tmp_path: Path, iris_frame: pd.DataFrame) -> None:
    # given: a profile as the first version wrote it: decile edges on tied Iris values
    current = build_reference_profile(iris_frame)
    old = json.loads(json.dumps(current))
    old["schema_version"] = 1
    entry = old["features"]["petal width (cm)"]
    entry["bin_edges"] = [0.2, 1.0, 1.3, 1.8]
    entry["bin_proportions"] = [0.2, 0.2, 0.2, 0.2, 0.2]
    (tmp_path / REFERENCE_PROFILE_FILENAME).write_text(json.dumps(old))
    # when it is loaded, then: the bins are rebuilt from the stored sample, as a new profile would have them
    loaded = load_reference_profile(tmp_path)
    assert loaded.schema_version == REFERENCE_PROFILE_SCHEMA_VERSION
    assert loaded.features["petal width (cm)"].bin_edges == current["features"]["petal width (cm)"]["bin_edges"]
    assert loaded.model_dump()["features"] == current["features"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.update(schema_version=99), "schema_version 99 is not 3; rebuild it"),
        (lambda p: p.pop("schema_version"), "schema_version None is not 3"),
        (lambda p: p.update(feature_names=[]), "has no feature_names"),
        (lambda p: p["features"].pop("f1"), "has no entry for feature 'f1'"),
        (lambda p: p["features"].update(f1=3), "has no entry for feature 'f1'"),
        (lambda p: p["features"]["f1"].pop("std"), "entry for 'f1' lacks 'std'"),
        (lambda p: p["features"]["f1"].update(bin_edges=[0.5] * 20), "entry for 'f1': bins and edges do not match"),
        (lambda p: p["features"]["f1"].update(sample=[]), "entry for 'f1': empty or non-finite sample"),
        (lambda p: p["features"]["f1"].update(mean="abc"), "features.f1.mean: Input should be a valid number"),
    ],
)
def test_a_damaged_profile_is_named_in_one_line(tmp_path: Path, damage, message: str) -> None:
    profile = build_reference_profile(pd.DataFrame({"f0": np.arange(40.0), "f1": np.arange(40.0) % 7}))
    damage(profile)
    (tmp_path / REFERENCE_PROFILE_FILENAME).write_text(json.dumps(profile))
    with pytest.raises(ReferenceProfileError) as caught:
        load_reference_profile(tmp_path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_typed_profile_holds_category_shares_and_missing_rates() -> None:
    frame = typed_frame()
    profile = build_reference_profile(frame, typed_schema())
    assert profile["feature_names"] == ["age", "colour", "size"] and profile["rows"] == 200  # the label is no feature
    assert profile["task"] == "classification" and profile["prediction"] is None
    colour = profile["features"]["colour"]
    assert colour["kind"] == KIND_CATEGORICAL and colour["categories"] == COLOURS
    # 20 of 200 rows missing; among the 180 present: 100 red, 60 green, 20 blue (the last 20 blue rows are missing)
    assert colour["missing_rate"] == pytest.approx(0.1) and colour["count"] == 180
    assert colour["category_proportions"] == pytest.approx([20 / 180, 60 / 180, 100 / 180])
    age = profile["features"]["age"]
    assert age["kind"] == KIND_NUMERIC and age["missing_rate"] == pytest.approx(0.05) and age["count"] == 190
    assert age["mean"] == pytest.approx(frame["age"].mean()) and len(age["sample"]) == 190  # NaN left out
    assert profile["features"]["size"]["missing_rate"] == 0.0


def test_the_feature_matrix_gives_the_same_profile_as_the_frame() -> None:
    # the server and train hand over feature_matrix's object array; the frame (label included) is read by name
    frame, schema = typed_frame(), typed_schema()
    assert build_reference_profile(feature_matrix(frame, schema), schema) == build_reference_profile(frame, schema)


def test_a_category_the_schema_does_not_list_is_profiled_too() -> None:
    frame = typed_frame()
    frame.loc[0, "colour"] = "purple"
    profile = build_reference_profile(frame, typed_schema())
    assert profile["features"]["colour"]["categories"] == ["blue", "green", "purple", "red"]


def test_a_regression_profile_holds_the_training_predictions() -> None:
    frame = typed_frame()
    predictions = np.linspace(0.0, 10.0, len(frame))
    profile = build_reference_profile(frame, typed_schema("regression"), predictions)
    assert profile["task"] == "regression"
    prediction = profile["prediction"]
    assert prediction["count"] == 200 and prediction["mean"] == pytest.approx(5.0)
    assert prediction["min"] == 0.0 and prediction["max"] == 10.0 and len(prediction["bin_proportions"]) == 10
    # a classifier's labels are no distribution to compare: ignored
    assert build_reference_profile(frame, typed_schema(), np.zeros(200))["prediction"] is None
    with pytest.raises(ReferenceProfileError, match="199 predictions for 200 training rows"):
        build_reference_profile(frame, typed_schema("regression"), predictions[:-1])


def test_a_typed_profile_round_trips_and_is_typed_when_loaded(tmp_path: Path) -> None:
    profile = build_reference_profile(typed_frame(), typed_schema("regression"), np.arange(200.0))
    write_reference_profile(tmp_path, profile)
    loaded = load_reference_profile(tmp_path)
    assert loaded.model_dump() == json.loads(json.dumps(profile))
    assert isinstance(loaded.features["colour"], CategoricalProfile)
    assert loaded.numeric("age").missing_rate == pytest.approx(0.05)
    assert loaded.prediction is not None and loaded.prediction.count == 200
    with pytest.raises(KeyError, match="categorical"):
        loaded.numeric("colour")


def test_typed_data_that_cannot_be_profiled_is_refused() -> None:
    with pytest.raises(ReferenceProfileError, match=r"no column for \['colour'\]"):
        build_reference_profile(typed_frame().drop(columns=["colour"]), typed_schema())
    with pytest.raises(ReferenceProfileError, match="must have 3 columns"):
        build_reference_profile(np.zeros((50, 2)), typed_schema())
    with pytest.raises(ReferenceProfileError, match="numeric feature 'size' has a non-numeric value"):
        build_reference_profile(typed_frame().assign(size="big"), typed_schema())
    with pytest.raises(ReferenceProfileError, match="needs its schema"):
        build_reference_profile(np.zeros((50, 3)))


def test_a_version_2_profile_loads_as_numeric_features_without_missing_values(
    tmp_path: Path, iris_frame: pd.DataFrame
) -> None:
    # given: a profile as version 2 wrote it (no kinds, no missing rates, no task or predictions)
    old = json.loads(json.dumps(build_reference_profile(iris_frame)))
    old["schema_version"] = 2
    for key in ("task", "prediction"):
        old.pop(key)
    for entry in old["features"].values():
        entry.pop("kind"), entry.pop("missing_rate")
    (tmp_path / REFERENCE_PROFILE_FILENAME).write_text(json.dumps(old))
    # when it is loaded, then: the current version, every feature numeric with nothing missing
    loaded = load_reference_profile(tmp_path)
    assert loaded.schema_version == REFERENCE_PROFILE_SCHEMA_VERSION == 3
    assert {entry.kind for entry in loaded.features.values()} == {KIND_NUMERIC}
    assert all(entry.missing_rate == 0.0 for entry in loaded.features.values())
    assert loaded.task is None and loaded.prediction is None
    assert loaded.model_dump()["features"] == build_reference_profile(iris_frame)["features"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda e: e.update(category_proportions=[1.0]), "entry for 'colour': categories and proportions do not match"),
        (lambda e: e.update(categories=["a", "a", "b"]), "entry for 'colour': duplicate categories"),
        (lambda e: e.pop("missing_rate"), "entry for 'colour' lacks 'missing_rate'"),
        (lambda e: e.update(kind="text"), "entry for 'colour': kind 'text' is not numeric or categorical"),
    ],
)
def test_a_damaged_categorical_entry_is_named_in_one_line(tmp_path: Path, damage, message: str) -> None:
    profile = build_reference_profile(typed_frame(), typed_schema())
    damage(profile["features"]["colour"])
    (tmp_path / REFERENCE_PROFILE_FILENAME).write_text(json.dumps(profile))
    with pytest.raises(ReferenceProfileError) as caught:
        load_reference_profile(tmp_path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
