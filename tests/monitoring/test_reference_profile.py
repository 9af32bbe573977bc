"""build_reference_profile: JSON-able, bounded, deterministic, and refuses what it cannot profile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.constants import REFERENCE_PROFILE_FILENAME, REFERENCE_PROFILE_SCHEMA_VERSION
from components.reference_profile import (
    MIN_ROWS_PER_BIN,
    ReferenceProfileError,
    bin_proportions,
    build_reference_profile,
    load_reference_profile,
    write_reference_profile,
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
        (lambda p: p.update(schema_version=99), "schema_version 99 is not 2; rebuild it"),
        (lambda p: p.pop("schema_version"), "schema_version None is not 2"),
        (lambda p: p.update(feature_names=[]), "has no feature_names"),
        (lambda p: p["features"].pop("f1"), "has no entry for feature 'f1'"),
        (lambda p: p["features"].update(f1=3), "has no entry for feature 'f1'"),
        (lambda p: p["features"]["f1"].pop("std"), "entry for 'f1' lacks 'std'"),
        (lambda p: p["features"]["f1"].update(bin_edges=[0.5] * 20), "entry for 'f1': bins and edges do not match"),
        (lambda p: p["features"]["f1"].update(sample=[]), "entry for 'f1' has an empty or non-finite sample"),
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
