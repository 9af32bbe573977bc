import numpy as np
import pandas as pd
import pytest

from components.constants import BUILTIN_DATASETS, DEFAULT_LABEL_COLUMN
from components.data import (
    DataValidationError,
    fingerprint,
    load_dataset,
    split_dataset,
    validate_dataset,
)

LABEL = DEFAULT_LABEL_COLUMN


def frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


def small_valid(rows_per_class: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 2 * rows_per_class
    return frame(a=rng.normal(size=n), b=rng.normal(size=n), **{LABEL: [0, 1] * rows_per_class})


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_builtin_datasets_load_with_the_label_column_named_as_asked(name):
    loaded = load_dataset(name, label_column="y")
    assert "y" in loaded.columns
    assert loaded.drop(columns=["y"]).shape[1] >= 4
    assert loaded["y"].nunique() >= 2


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_files_load_from_a_path_and_a_file_url(tmp_path, suffix):
    data = small_valid()
    path = tmp_path / f"data{suffix}"
    data.to_csv(path, index=False) if suffix == ".csv" else data.to_parquet(path, index=False)
    for source in (str(path), path.as_uri()):
        loaded = load_dataset(source, label_column=LABEL)
        pd.testing.assert_frame_equal(loaded, data, check_dtype=False)


def test_unknown_format_and_missing_file_are_named(tmp_path):
    with pytest.raises(DataValidationError, match=r"cannot tell the format of 'data\.txt'"):
        load_dataset("data.txt", label_column=LABEL)
    with pytest.raises(DataValidationError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.csv"), label_column=LABEL)


def test_unreadable_file_is_a_validation_error(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataValidationError, match="could not read parquet"):
        load_dataset(str(bad), label_column=LABEL)


def test_a_valid_frame_is_described():
    data = small_valid()
    summary = validate_dataset(data, label_column=LABEL, test_fraction=0.2)
    assert summary.rows == 10
    assert summary.feature_names == ["a", "b"]
    assert summary.class_names == ["0", "1"]
    assert summary.fingerprint == fingerprint(data)
    assert summary.as_metadata()["columns"] == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pd.DataFrame(), "empty"),
        (frame(a=[], **{LABEL: []}), "empty"),
        (frame(a=[1.0, 2.0]), "label column 'target' not found; columns are: a"),
        (frame(**{LABEL: [0, 1, 0, 1]}), "no feature columns"),
        (frame(a=[1.0, 2.0, 3.0, 4.0], b=[np.nan] * 4, **{LABEL: [0, 1, 0, 1]}), r"all NaN\): b"),
        (frame(a=["x", "y", "x", "y"], **{LABEL: [0, 1, 0, 1]}), r"numeric; encode these first: a \(object\)"),
        (frame(a=[True, False, True, False], **{LABEL: [0, 1, 0, 1]}), r"a \(bool\)"),
        (frame(a=[1.0, np.nan, 3.0, 4.0], **{LABEL: [0, 1, 0, 1]}), r"missing values.*a \(1 rows\)"),
        (frame(a=[1.0, np.inf, 3.0, 4.0], **{LABEL: [0, 1, 0, 1]}), "infinite values: a"),
        (frame(a=[1.0, 2.0, 3.0, 4.0], **{LABEL: [0, None, 0, 1]}), "label column 'target' has 1 missing"),
        (frame(a=[1.0, 2.0, 3.0], **{LABEL: [0, 0, 0]}), "at least two classes, found 1"),
        (frame(a=[1.0, 2.0, 3.0, 4.0], **{LABEL: [0, 0, 0, 1]}), r"too few: 1 \(1\)"),
    ],
)
def test_every_bad_dataset_is_refused_with_a_message_naming_the_problem(data, message):
    with pytest.raises(DataValidationError, match=message):
        validate_dataset(data, label_column=LABEL, test_fraction=0.5)


def test_a_split_too_small_for_every_class_is_refused():
    data = frame(a=np.arange(6.0), **{LABEL: [0, 0, 1, 1, 2, 2]})
    with pytest.raises(DataValidationError, match=r"gives 4 train / 2 test rows, fewer than the 3 classes"):
        validate_dataset(data, label_column=LABEL, test_fraction=0.2)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_test_fraction_outside_the_open_interval_is_refused(fraction):
    with pytest.raises(DataValidationError, match="test_fraction must be between 0 and 1"):
        validate_dataset(small_valid(), label_column=LABEL, test_fraction=fraction)


def test_split_is_stratified_seeded_and_loses_no_row():
    data = load_dataset("iris", label_column=LABEL)
    train, test = split_dataset(data, label_column=LABEL, test_fraction=0.2, seed=7)
    again, _ = split_dataset(data, label_column=LABEL, test_fraction=0.2, seed=7)
    assert len(train) + len(test) == len(data) == 150
    assert test[LABEL].value_counts().to_dict() == {0: 10, 1: 10, 2: 10}
    pd.testing.assert_frame_equal(train, again)
    assert list(train.index) == list(range(len(train)))


def test_fingerprint_follows_content_not_row_labels():
    data = small_valid()
    assert fingerprint(data) == fingerprint(data.set_axis(range(100, 110)))
    changed = data.copy()
    changed.loc[0, "a"] += 1e-9
    assert fingerprint(changed) != fingerprint(data)
    assert fingerprint(data.astype({"a": "float32"})) != fingerprint(data)


def test_csv_loads_from_an_http_url(tmp_path):
    import functools
    import http.server
    import threading

    small_valid().to_csv(tmp_path / "data.csv", index=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/data.csv"
        try:
            loaded = load_dataset(url, label_column=LABEL)
            with pytest.raises(DataValidationError, match="could not read csv"):
                load_dataset(url.replace("data.csv", "missing.csv"), label_column=LABEL)
        finally:
            server.shutdown()
    pd.testing.assert_frame_equal(loaded, small_valid())
