"""PayloadLogWriter and read_payload_window: nothing lost, nothing half-written, windows honoured, typed columns as
the schema says (strings for categories, nulls kept), older logs still read."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components.constants import (
    PAYLOAD_COLUMN_MODEL_SHA256,
    PAYLOAD_COLUMN_PREDICTION,
    PAYLOAD_COLUMN_REQUEST_ID,
    PAYLOAD_COLUMN_SOURCE,
    PAYLOAD_COLUMN_TIMESTAMP,
    PAYLOAD_LOG_DATE_PREFIX,
    PAYLOAD_SOURCE_LOCAL,
)
from components.features import Feature, FeatureSchema, feature_matrix
from components.monitoring.payload_reader import list_payload_files, read_payload_window
from components.payload_log import DEFAULT_FLUSH_INTERVAL_S, METADATA_COLUMNS, PayloadLogError, PayloadLogWriter

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def make_writer(log_dir: Path, **kwargs) -> PayloadLogWriter:
    options: dict[str, Any] = {"batch_size": 7, "flush_interval_s": 0.05, "feature_names": FEATURES} | kwargs
    return PayloadLogWriter(log_dir, model_name="iris", model_sha256="ab" * 32, **options)


def test_close_writes_every_recorded_row_from_many_threads(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, batch_size=50, flush_interval_s=5.0)
    calls_per_thread, rows_per_call, threads = 200, 3, 4

    def produce(thread: int) -> None:
        for i in range(calls_per_thread):
            value = thread * 10_000 + i
            writer.record(np.full((rows_per_call, 4), float(value)), [value % 3] * rows_per_call)

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    writer.close()

    frame = read_payload_window(tmp_path, model_name="iris", start=None, end=None)
    expected = threads * calls_per_thread * rows_per_call
    assert len(frame) == expected
    stats = writer.stats()
    assert stats.recorded == stats.written == expected and stats.dropped == 0 and stats.failed == 0
    # every produced value arrives exactly rows_per_call times, with its own prediction
    counts = frame["sepal length (cm)"].value_counts()
    assert len(counts) == threads * calls_per_thread and (counts == rows_per_call).all()
    assert (frame[PAYLOAD_COLUMN_PREDICTION] == (frame["sepal width (cm)"].astype(int) % 3).astype(str)).all()
    # one id per record() call (a request), shared by its rows
    assert (frame[PAYLOAD_COLUMN_REQUEST_ID].value_counts() == rows_per_call).all()
    assert frame[PAYLOAD_COLUMN_REQUEST_ID].nunique() == threads * calls_per_thread


def test_records_are_flushed_by_time_without_close(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, batch_size=10_000, flush_interval_s=0.05)
    writer.record(np.ones((2, 4)), ["setosa", "virginica"])
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    while not list_payload_files(tmp_path, model_name="iris") and datetime.now(UTC) < deadline:
        threading.Event().wait(0.05)
    frame = read_payload_window(tmp_path, model_name="iris", start=None, end=None)
    writer.close()
    assert list(frame[PAYLOAD_COLUMN_PREDICTION]) == ["setosa", "virginica"]


def test_schema_and_layout(tmp_path: Path) -> None:
    with make_writer(tmp_path) as writer:
        writer.record(np.arange(8, dtype=float).reshape(2, 4), np.array([1, 2]))
    (file,) = list_payload_files(tmp_path, model_name="iris")
    day = datetime.now(UTC).date().isoformat()
    assert Path(file).parent == tmp_path / "iris" / f"{PAYLOAD_LOG_DATE_PREFIX}{day}"
    table = pq.read_table(file)
    assert table.column_names[:4] == [PAYLOAD_COLUMN_REQUEST_ID, PAYLOAD_COLUMN_TIMESTAMP, "model_name",
                                      PAYLOAD_COLUMN_MODEL_SHA256]  # fmt: skip
    assert table.column_names[4:8] == FEATURES
    frame = table.to_pandas()
    assert frame[PAYLOAD_COLUMN_PREDICTION].tolist() == ["1", "2"]
    assert frame[PAYLOAD_COLUMN_SOURCE].unique().tolist() == [PAYLOAD_SOURCE_LOCAL]
    assert frame[FEATURES].to_numpy().tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_reader_skips_temporary_and_foreign_files(tmp_path: Path) -> None:
    with make_writer(tmp_path) as writer:
        writer.record(np.ones((1, 4)), [0])
    (file,) = list_payload_files(tmp_path, model_name="iris")
    folder = Path(file).parent
    (folder / ".tmp-part-half-written.parquet").write_bytes(b"PAR1 not finished")
    (folder / "notes.txt").write_text("not a log")
    assert len(read_payload_window(tmp_path, model_name="iris", start=None, end=None)) == 1
    assert not list(tmp_path.rglob(".*.tmp"))  # components.atomic's temporary names


def test_window_bounds_and_day_partitions(tmp_path: Path) -> None:
    base = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    with make_writer(tmp_path) as writer:
        for hours in range(6):  # 23:00 on day 1 to 04:00 on day 2
            writer.record(np.full((1, 4), float(hours)), [hours], timestamp=base + timedelta(hours=hours))
    days = sorted(p.name for p in (tmp_path / "iris").iterdir())
    assert days == [f"{PAYLOAD_LOG_DATE_PREFIX}2026-03-01", f"{PAYLOAD_LOG_DATE_PREFIX}2026-03-02"]
    window = read_payload_window(
        tmp_path, model_name="iris", start=base + timedelta(hours=1), end=base + timedelta(hours=4)
    )
    assert window["sepal length (cm)"].tolist() == [1.0, 2.0, 3.0]  # end is exclusive
    naive = read_payload_window(tmp_path, model_name="iris", start=datetime(2026, 3, 2, 3), end=None)
    assert naive["sepal length (cm)"].tolist() == [4.0, 5.0]  # naive times are UTC


def test_files_from_before_a_feature_was_added_are_read_with_the_new_column_empty(tmp_path: Path) -> None:
    # given: the model was retrained under the same name with one more feature
    first = datetime(2026, 3, 1, 12, tzinfo=UTC)
    with make_writer(tmp_path) as writer:
        writer.record(np.ones((2, 4)), [0, 1], timestamp=first)
    with make_writer(tmp_path, feature_names=[*FEATURES, "stem length (cm)"]) as writer:
        writer.record(np.full((1, 5), 2.0), [2], timestamp=first + timedelta(days=1))
    # when: one window spans both, then: every column is there, the old rows without the new feature
    window = read_payload_window(tmp_path, model_name="iris", start=None, end=None)
    assert window["stem length (cm)"].isna().tolist() == [True, True, False]
    assert window[PAYLOAD_COLUMN_PREDICTION].tolist() == ["0", "1", "2"]


def test_unknown_model_gives_empty_frame_but_missing_dir_is_an_error(tmp_path: Path) -> None:
    assert read_payload_window(tmp_path, model_name="nobody", start=None, end=None).empty
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_payload_window(tmp_path / "typo", model_name="iris", start=None, end=None)
    with pytest.raises(PayloadLogError, match="not before"):
        read_payload_window(tmp_path, model_name="iris", start=datetime(2026, 1, 2), end=datetime(2026, 1, 1))


def test_bad_calls_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(PayloadLogError, match="collide"):
        PayloadLogWriter(tmp_path, model_name="m", model_sha256="", feature_names=["prediction"])
    with pytest.raises(PayloadLogError, match="model_name"):
        PayloadLogWriter(tmp_path, model_name="a/b", model_sha256="", feature_names=["x"])
    writer = make_writer(tmp_path)
    with pytest.raises(PayloadLogError, match="4 columns"):
        writer.record(np.ones((2, 3)), [0, 0])
    with pytest.raises(PayloadLogError, match="2 instance rows but 1 predictions"):
        writer.record(np.ones((2, 4)), [0])
    writer.close()
    with pytest.raises(PayloadLogError, match="closed"):
        writer.record(np.ones((1, 4)), [0])


def test_a_broken_destination_never_reaches_the_caller(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log directory should be")
    writer = make_writer(blocker)
    writer.record(np.ones((3, 4)), [0, 1, 2])  # must not raise: the prediction already succeeded
    writer.close()
    assert writer.stats().failed == 3 and writer.stats().written == 0


def test_a_broken_destination_is_logged_once_not_per_flush(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log directory should be")
    writer = make_writer(blocker, batch_size=1)  # every record() is its own flush, hence its own failure
    with caplog.at_level(logging.WARNING, logger="components.payload_log"):
        for _ in range(20):
            writer.record(np.ones((1, 4)), [0])
        writer.close()
    assert writer.stats().failed == 20
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage() and errors[0].exc_info is None
    assert "not logged again" in errors[0].getMessage()


def test_feature_names_that_clash_with_log_columns_are_refused_at_the_data_step() -> None:
    from components.data import DataValidationError, validate_dataset

    assert set(METADATA_COLUMNS) == {"timestamp", "source", "prediction", "request_id", "model_name", "model_sha256"}
    for column in METADATA_COLUMNS:
        frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], column: [1.0, 2.0, 3.0, 4.0], "target": [0, 1, 0, 1]})
        with pytest.raises(DataValidationError, match=f"feature column '{column}' has the name of a payload-log"):
            validate_dataset(frame, label_column="target", test_fraction=0.5)


_RECORD_THEN_HANG = """
import sys, threading
import numpy as np
from components.payload_log import PayloadLogWriter
writer = PayloadLogWriter(sys.argv[1], model_name="iris", model_sha256="ab" * 32, feature_names=list("abcd"))
writer.record(np.full((3, 4), 7.0), [1, 2, 3])
print("recorded", flush=True)
threading.Event().wait(120)  # never closes: only the timed flush can save the rows
"""


def test_rows_reach_the_disk_without_close_so_kill_9_loses_at_most_the_flush_interval(tmp_path: Path) -> None:
    assert DEFAULT_FLUSH_INTERVAL_S <= 1.0  # the documented loss window
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-c", _RECORD_THEN_HANG, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "recorded"
        for _ in range(300):  # bounded wait (30 s) for the timed flush; typically one interval
            if list_payload_files(tmp_path, model_name="iris"):
                break
            threading.Event().wait(0.1)
    finally:
        child.kill()  # SIGKILL: no close(), no atexit
        child.wait(timeout=30)
    assert child.returncode == -9
    frame = read_payload_window(tmp_path, model_name="iris", start=None, end=None)
    assert frame[PAYLOAD_COLUMN_PREDICTION].tolist() == ["1", "2", "3"] and (frame["a"] == 7.0).all()


TYPED = [
    Feature(name="age", kind="numeric", nullable=True),
    Feature(name="colour", kind="categorical", categories=["blue", "red"], nullable=True),
    Feature(name="size", kind="numeric"),
]


def typed_writer(log_dir: Path, **kwargs) -> PayloadLogWriter:
    return PayloadLogWriter(log_dir, model_name="mixed", model_sha256="cd" * 32, features=TYPED, **kwargs)


def test_typed_columns_hold_strings_for_categories_and_keep_nulls(tmp_path: Path) -> None:
    # given: what the server hands over: feature_matrix's object array, a missing value as NaN
    schema = FeatureSchema(task="classification", task_reason="given", label_column="y", features=TYPED,
                           class_names=["no", "yes"])  # fmt: skip
    frame = pd.DataFrame({"age": [31.0, np.nan, 50.5], "colour": ["red", None, "green"], "size": [1.0, 2.0, 3.0]})
    with typed_writer(tmp_path) as writer:
        writer.record(feature_matrix(frame, schema), np.array(["no", "yes", "no"]))
    # then: the Parquet columns are typed by kind, and nothing missing became a number or the text "nan"
    (file,) = list_payload_files(tmp_path, model_name="mixed")
    table = pq.read_table(file)
    assert [str(table.schema.field(n).type) for n in ("age", "colour", "size")] == ["double", "string", "double"]
    assert table["age"].to_pylist() == [31.0, None, 50.5] and table["age"].null_count == 1
    assert table["colour"].to_pylist() == ["red", None, "green"]  # an unseen category is logged as received
    window = read_payload_window(tmp_path, model_name="mixed", start=None, end=None)
    assert window["colour"].tolist() == ["red", None, "green"] and window["age"].isna().tolist() == [False, True, False]


def test_categorical_values_that_are_not_strings_are_logged_as_their_category_text(tmp_path: Path) -> None:
    rows = np.array([[1.0, 3, 1.0], [2.0, True, 1.0], [3.0, 4.0, 1.0], [4.0, float("nan"), 1.0]], dtype=object)
    with typed_writer(tmp_path) as writer:
        writer.record(rows, [0, 1, 0, 1])
    window = read_payload_window(tmp_path, model_name="mixed", start=None, end=None)
    assert window["colour"].tolist() == ["3", "true", "4", None]  # as features.category_value writes them


def test_regression_predictions_read_back_as_the_same_numbers(tmp_path: Path) -> None:
    predictions = np.array([0.1, 152.25, -3.0, 1e-7])
    with make_writer(tmp_path) as writer:
        writer.record(np.ones((4, 4)), predictions)
    window = read_payload_window(tmp_path, model_name="iris", start=None, end=None)
    assert pd.to_numeric(window[PAYLOAD_COLUMN_PREDICTION]).tolist() == predictions.tolist()


def test_a_feature_that_changed_kind_is_read_from_old_and_new_logs(tmp_path: Path) -> None:
    # given: the model was first trained with 'colour' read as numbers (float64 log), then as categories
    first = datetime(2026, 3, 1, 12, tzinfo=UTC)
    with PayloadLogWriter(tmp_path, model_name="mixed", model_sha256="0" * 64,
                          feature_names=["age", "colour", "size"]) as writer:  # fmt: skip
        writer.record(np.array([[30.0, 1.0, 1.0], [31.0, 2.0, 1.0]]), [0, 1], timestamp=first)
    with typed_writer(tmp_path) as writer:
        writer.record(np.array([[32.0, "red", 1.0]], dtype=object), [1], timestamp=first + timedelta(days=1))
    # when: one window spans both, then: every row is read, oldest first, each value as it was logged
    window = read_payload_window(tmp_path, model_name="mixed", start=None, end=None)
    assert window["colour"].tolist() == [1.0, 2.0, "red"] and window["age"].tolist() == [30.0, 31.0, 32.0]


def test_typed_features_and_names_must_agree(tmp_path: Path) -> None:
    with pytest.raises(PayloadLogError, match="differ from the features' names"):
        PayloadLogWriter(tmp_path, model_name="m", model_sha256="", feature_names=["age"], features=TYPED)
    with pytest.raises(PayloadLogError, match="give feature_names or features"):
        PayloadLogWriter(tmp_path, model_name="m", model_sha256="")
    writer = typed_writer(tmp_path, feature_names=["age", "colour", "size"])
    assert writer.categorical == ["colour"]
    writer.close()
