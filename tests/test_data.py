import http.server
import threading

import numpy as np
import pandas as pd
import pytest

from components.constants import BUILTIN_DATASETS, DEFAULT_LABEL_COLUMN
from components.data import (
    DataValidationError,
    check_dataset_source,
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
def test_files_load_from_a_local_path(tmp_path, suffix):
    data = small_valid()
    path = tmp_path / f"data{suffix}"
    data.to_csv(path, index=False) if suffix == ".csv" else data.to_parquet(path, index=False)
    loaded = load_dataset(str(path), label_column=LABEL)
    pd.testing.assert_frame_equal(loaded, data, check_dtype=False)


def test_unknown_format_and_missing_file_are_named(tmp_path):
    with pytest.raises(DataValidationError, match=r"cannot tell the format of 'data\.txt'"):
        load_dataset("data.txt", label_column=LABEL)
    with pytest.raises(DataValidationError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.csv"), label_column=LABEL)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("file:///etc/passwd#.csv", "scheme 'file' is not supported"),
        ("file:///tmp/data.csv", "scheme 'file' is not supported"),
        ("ftp://example.org/data.csv", "scheme 'ftp' is not supported"),
        ("s3://bucket/data.csv", "scheme 's3' is not supported"),
        ("http://example.org/passwd#.csv", r"format of 'http://example\.org/passwd'"),
        ("https://example.org/export?format=.csv", r"format of 'https://example\.org/export'"),
        ("https:///data.csv", "names no host"),
        ("http://[::1/data.csv", "cannot be parsed"),
        ("data.csv\nx", "control characters"),
        ("", "must be a built-in dataset"),
    ],
)
def test_only_the_documented_forms_are_accepted(source, message):
    with pytest.raises(DataValidationError, match=message) as refused:
        check_dataset_source(source)
    with pytest.raises(DataValidationError, match=message):
        load_dataset(source, label_column=LABEL)
    assert "\n" not in str(refused.value)


def test_errors_never_quote_a_file(tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    with pytest.raises(DataValidationError, match="not found among the dataset's 1 columns") as refused:
        validate_dataset(load_dataset(str(secret), label_column=LABEL), label_column=LABEL, test_fraction=0.2)
    assert "root" not in str(refused.value)
    not_parquet = tmp_path / "secret.parquet"
    not_parquet.write_text("SECRET-TOKEN-1234 " * 100)
    with pytest.raises(DataValidationError, match="could not read parquet") as refused:
        load_dataset(str(not_parquet), label_column=LABEL)
    assert "SECRET" not in str(refused.value)


def test_a_local_file_over_the_cap_is_refused(tmp_path):
    path = tmp_path / "big.csv"
    small_valid().to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="more than the 10 bytes allowed"):
        load_dataset(str(path), label_column=LABEL, max_bytes=10)


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
    assert summary.task == "classification" and summary.schema.all_numeric


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pd.DataFrame(), "empty"),
        (frame(a=[], **{LABEL: []}), "empty"),
        (frame(a=[1.0, 2.0]), "label column 'target' not found among the dataset's 1 columns"),
        (frame(timestamp=[1.0, 2.0, 3.0, 4.0], **{LABEL: [0, 1, 0, 1]}), "feature column 'timestamp' has the name of"),
        (frame(a=[1.0, 2.0, 3.0, 4.0], model_sha256=[1.0] * 4, **{LABEL: [0, 1, 0, 1]}), "'model_sha256' has the"),
        (frame(**{LABEL: [0, 1, 0, 1]}), "no feature columns"),
        (frame(a=[1.0, 2.0, 3.0, 4.0], b=[np.nan] * 4, **{LABEL: [0, 1, 0, 1]}), r"all NaN\): b"),
        (frame(a=[1.0, np.inf, 3.0, 4.0], **{LABEL: [0, 1, 0, 1]}), "infinite values: a"),
        (frame(a=[1.0, 2.0, 3.0, 4.0], **{LABEL: [0, None, 0, 1]}), "label column 'target' has 1 missing"),
        (frame(a=[1.0, 2.0, 3.0, 4.0], **{LABEL: [0.5, np.inf, 1.5, 2.5]}), "label column 'target' has infinite"),
        (frame(a=[1.0, 2.0, 3.0], **{LABEL: [0, 0, 0]}), "at least two classes, found 1"),
        (frame(a=[1.0, 2.0, 3.0, 4.0], **{LABEL: [0, 0, 0, 1]}), r"too few: 1 \(1\)"),
    ],
)
def test_every_bad_dataset_is_refused_with_a_message_naming_the_problem(data, message):
    with pytest.raises(DataValidationError, match=message) as refused:
        validate_dataset(data, label_column=LABEL, test_fraction=0.5)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("feature_types", "message"),
    [
        ({"a": "numeric"}, "infinite values: a"),  # text declared numeric is checked like any number
        ({"c": "drop"}, "feature_types names columns that are not in the data: c"),
        ({"a": "text"}, r"feature_types\['a'\] must be one of numeric, categorical, drop"),
    ],
)
def test_feature_types_refusals_are_data_validation_errors(feature_types, message):
    data = frame(a=["1", "-inf", "3", "4"], b=[0.1, 0.2, 0.3, 0.4], **{LABEL: [0, 1, 0, 1]})
    with pytest.raises(DataValidationError, match=message):
        validate_dataset(data, label_column=LABEL, test_fraction=0.5, feature_types=feature_types)


def test_categorical_boolean_and_missing_feature_values_are_accepted_and_recorded():
    # Given text, boolean and numeric columns with gaps (refused before typed schemas: now they are features)
    data = frame(
        size=[1.0, np.nan, 3.0, 4.0, 5.0, 6.0],
        colour=["red", "blue", None, "red", "blue", "red"],
        member=[True, False, True, True, False, False],
        **{LABEL: ["a", "b"] * 3},
    )

    summary = validate_dataset(data, label_column=LABEL, test_fraction=0.5)

    kinds = {f.name: (f.kind, f.nullable) for f in summary.schema.features}
    assert kinds == {
        "size": ("numeric", True),
        "colour": ("categorical", True),
        "member": ("categorical", False),
    }
    assert summary.task == "classification" and summary.class_names == ["a", "b"]
    metadata = summary.as_metadata()
    assert metadata["categorical_features"] == ["colour", "member"]
    assert metadata["nullable_features"] == ["size", "colour"]
    assert metadata["task"] == "classification"
    lines = summary.describe()
    assert lines[0].startswith("data: 6 rows, 3 features (1 numeric, 2 categorical), task classification (inferred: ")
    assert "data: classes ['a', 'b']" in lines
    assert "data: missing values (allowed at serve time) in: size, colour" in lines
    assert any(line.startswith("data: note: feature 'member' is boolean") for line in lines)


def test_a_dropped_column_is_not_validated_or_described():
    data = frame(a=[1.0, 2.0, 3.0, 4.0], timestamp=[np.nan] * 4, **{LABEL: [0, 1, 0, 1]})
    summary = validate_dataset(data, label_column=LABEL, test_fraction=0.5, feature_types={"timestamp": "drop"})
    assert summary.feature_names == ["a"] and summary.columns == 1


def test_an_id_like_column_is_refused_by_the_data_step_with_the_fix():
    data = frame(id=[f"row-{i}" for i in range(40)], x=np.linspace(0, 1, 40), **{LABEL: [0, 1] * 20})
    with pytest.raises(DataValidationError, match=r"'id' looks like an ID .*\{\"id\": \"drop\"\}"):
        validate_dataset(data, label_column=LABEL, test_fraction=0.5)


def regression_frame(rows: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    x = rng.normal(size=rows)
    return frame(x=x, **{LABEL: 3.0 * x + rng.normal(scale=0.1, size=rows)})


def test_a_regression_dataset_skips_the_class_checks_and_describes_its_target():
    # Every label value is distinct: as classes, each would have one row and the stratified split would refuse it.
    data = regression_frame()

    summary = validate_dataset(data, label_column=LABEL, test_fraction=0.25)

    assert summary.task == "regression"
    assert summary.class_names == [] and summary.as_metadata()["class_names"] == []
    assert summary.label_stats["min"] == pytest.approx(data[LABEL].min())
    assert summary.label_stats["mean"] == pytest.approx(data[LABEL].mean())
    lines = summary.describe()
    assert "task regression (inferred: label 'target' holds non-integral numbers)" in lines[0]
    assert lines[1].startswith("data: target 'target' min ")
    assert not any("classes" in line for line in lines)


def test_a_given_task_is_recorded_and_one_the_label_cannot_support_is_refused():
    summary = validate_dataset(small_valid(), label_column=LABEL, test_fraction=0.5, task="regression")
    assert (summary.task, summary.schema.task_reason) == ("regression", "given")
    with pytest.raises(DataValidationError, match="task classification needs classes, but label 'target'"):
        validate_dataset(regression_frame(), label_column=LABEL, test_fraction=0.5, task="classification")
    with pytest.raises(DataValidationError, match="task must be one of classification, regression"):
        validate_dataset(small_valid(), label_column=LABEL, test_fraction=0.5, task="forecast")


@pytest.mark.parametrize(
    ("data", "fraction", "message"),
    [
        (frame(x=[1.0, 2.0, 3.0, 4.0], **{LABEL: [2.5] * 4}), 0.5, "has one value only"),
        (regression_frame(3), 0.5, r"gives 1 train / 2 test rows; regression needs at least 2 on each side"),
        (regression_frame(10), 0.1, r"gives 9 train / 1 test rows"),
    ],
)
def test_a_regression_dataset_too_small_or_constant_is_refused(data, fraction, message):
    with pytest.raises(DataValidationError, match=message):
        validate_dataset(data, label_column=LABEL, test_fraction=fraction, task="regression")


def test_the_regression_split_is_shuffled_and_seeded_not_stratified():
    data = regression_frame(40)
    train, test = split_dataset(data, label_column=LABEL, test_fraction=0.25, seed=3, task="regression")
    again, _ = split_dataset(data, label_column=LABEL, test_fraction=0.25, seed=3, task="regression")
    assert (len(train), len(test)) == (30, 10)
    pd.testing.assert_frame_equal(train, again)
    assert sorted(pd.concat([train, test])[LABEL]) == sorted(data[LABEL])
    assert list(test[LABEL]) != list(data[LABEL].iloc[30:])  # shuffled, not the last rows


def test_the_builtin_diabetes_dataset_is_a_regression_dataset():
    data = load_dataset("diabetes", label_column=LABEL)
    summary = validate_dataset(data, label_column=LABEL, test_fraction=0.2)
    assert summary.rows == 442 and summary.columns == 10
    assert summary.task == "regression"
    assert "214 distinct values" in summary.schema.task_reason
    assert summary.schema.all_numeric


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


class _Server:
    """A real HTTP server on 127.0.0.1 whose handler is one of the behaviours below; stopped on exit."""

    def __init__(self, behaviour, tmp_path):
        import functools
        import http.server

        self.stop = threading.Event()
        handler = functools.partial(_Handler, behaviour=behaviour, stop=self.stop, directory=str(tmp_path))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, behaviour, stop, **kwargs):
        self.behaviour, self.stop = behaviour, stop
        super().__init__(*args, **kwargs)

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.behaviour == "files":
            return super().do_GET()
        if self.behaviour == "redirect-to-ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/data.csv")  # urllib itself refuses file://
            self.end_headers()
            return None
        self.send_response(200)
        if self.behaviour == "declares-too-much":
            self.send_header("Content-Length", str(10**12))
        self.end_headers()
        try:  # bounded: at most 50 MB or until the client goes away or the test ends
            for _ in range(50 * 1024):
                if self.stop.is_set():
                    break
                if self.behaviour == "drips":
                    self.stop.wait(0.05)
                    self.wfile.write(b"a")
                else:
                    self.wfile.write(b"a,b,target\n" * 100)
                self.wfile.flush()
        except OSError:
            pass
        return None


def test_csv_loads_from_an_http_url_and_errors_hide_credentials(tmp_path):
    small_valid().to_csv(tmp_path / "data.csv", index=False)
    with _Server("files", tmp_path) as server:
        loaded = load_dataset(f"{server.url}/data.csv", label_column=LABEL)
        secret_url = server.url.replace("http://", "http://user:hunter2@") + "/missing.csv?token=hunter2"
        with pytest.raises(
            DataValidationError, match=r"could not download 'http://127\.0\.0\.1:\d+/missing\.csv': HTTP 404"
        ) as refused:
            load_dataset(secret_url, label_column=LABEL)
        assert "hunter2" not in str(refused.value) and "user" not in str(refused.value)
    pd.testing.assert_frame_equal(loaded, small_valid())


@pytest.mark.timeout(60)
def test_a_server_that_never_answers_times_out():
    import socket

    with socket.socket() as silent:  # listens, so connections complete, but never accepts or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/data.csv"
        with pytest.raises(DataValidationError, match=r"could not download .*: no answer within 0\.5 s"):
            load_dataset(url, label_column=LABEL, timeout_s=0.5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("declares-too-much", "it is 1000000000000 bytes, more than the 100000 allowed"),
        ("sends-too-much", "it is more than the 100000 bytes allowed"),
        ("drips", r"not complete within 1 s"),
        ("redirect-to-ftp", "redirects to a scheme that is not http"),
    ],
)
def test_a_download_is_capped_in_size_and_time(tmp_path, behaviour, message):
    with _Server(behaviour, tmp_path) as server, pytest.raises(DataValidationError, match=message):
        load_dataset(f"{server.url}/data.csv", label_column=LABEL, timeout_s=1.0, max_bytes=100_000)


def test_the_mixed_demo_data_reads_back_from_csv_with_the_types_it_was_made_with(tmp_path):
    from benchmarks.make_mixed_data import CLASSIFICATION_LABEL, NULLABLE_COLUMNS, make_mixed_data, write_frame
    from components.features import feature_matrix

    path = write_frame(make_mixed_data(400, seed=3), tmp_path / "customers.csv")

    data = load_dataset(str(path), label_column=CLASSIFICATION_LABEL)
    summary = validate_dataset(data, label_column=CLASSIFICATION_LABEL, test_fraction=0.25)
    kinds = {f.name: f.kind for f in summary.schema.features}
    assert kinds == {
        "age": "numeric",
        "income": "numeric",
        "tenure_months": "numeric",
        "plan": "categorical",
        "region": "categorical",
        "channel": "categorical",
        "autopay": "categorical",
        "store": "numeric",  # codes look like numbers: the walkthrough declares it categorical
    }
    assert [f.name for f in summary.schema.features if f.nullable] == list(NULLABLE_COLUMNS)
    assert summary.schema.features[3].categories == ["basic", "premium", "standard"]
    assert summary.task == "classification" and summary.class_names == ["no", "yes"]
    _, test = split_dataset(data, label_column=CLASSIFICATION_LABEL, test_fraction=0.25, seed=0)
    matrix = feature_matrix(test, summary.schema)
    assert matrix.shape == (100, 8) and matrix.dtype == object


def test_the_mixed_demo_data_is_seeded_and_its_regression_id_variant_needs_feature_types(tmp_path):
    from benchmarks.make_mixed_data import ID_COLUMN, REGRESSION_LABEL, make_mixed_data, write_frame

    made = make_mixed_data(300, task="regression", seed=5, with_id=True)
    pd.testing.assert_frame_equal(made, make_mixed_data(300, task="regression", seed=5, with_id=True))
    assert not made.equals(make_mixed_data(300, task="regression", seed=6, with_id=True))
    data = load_dataset(str(write_frame(made, tmp_path / "spend.parquet")), label_column=REGRESSION_LABEL)

    with pytest.raises(DataValidationError, match=f"'{ID_COLUMN}' looks like an ID"):
        validate_dataset(data, label_column=REGRESSION_LABEL, test_fraction=0.2)
    summary = validate_dataset(
        data,
        label_column=REGRESSION_LABEL,
        test_fraction=0.2,
        feature_types={ID_COLUMN: "drop", "store": "categorical"},
    )
    assert summary.task == "regression" and "non-integral" in summary.schema.task_reason
    assert ID_COLUMN not in summary.feature_names
    store = next(f for f in summary.schema.features if f.name == "store")
    assert (store.kind, store.categories) == ("categorical", [str(n) for n in range(1, 9)])


def test_the_mixed_demo_data_command_writes_the_file_or_says_why_not(tmp_path, capsys):
    from benchmarks.make_mixed_data import main

    assert main([str(tmp_path / "d.csv"), "--rows", "50", "--task", "regression"]) == 0
    assert "50 rows, 8 features, label 'spend' (regression)" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "d.csv")) == 50
    assert main([str(tmp_path / "d.txt"), "--rows", "50"]) == 2
    assert main([str(tmp_path / "d.csv"), "--rows", "5"]) == 2
    assert "rows must be at least 10" in capsys.readouterr().err
