"""build_reference_profile: JSON-able, bounded, deterministic, and refuses what it cannot profile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.constants import REFERENCE_PROFILE_FILENAME
from components.monitoring.reference import (
    ReferenceProfileError,
    build_reference_profile,
    load_reference_profile,
    load_reference_profile_from_uri,
    write_reference_profile,
)


def test_profile_round_trips_through_the_model_directory(tmp_path: Path, iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame)
    path = write_reference_profile(tmp_path, profile)
    assert path.name == REFERENCE_PROFILE_FILENAME
    assert load_reference_profile(tmp_path) == json.loads(json.dumps(profile))
    assert load_reference_profile_from_uri(str(tmp_path)) == load_reference_profile(path)


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
