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
