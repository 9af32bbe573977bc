"""Graceful shutdown finishes in-flight requests; the payload-log hook records every answered row."""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from components.constants import (
    DEFAULT_LABEL_COLUMN,
    PAYLOAD_COLUMN_MODEL_SHA256,
    PAYLOAD_COLUMN_PREDICTION,
)
from components.model_artifact import save_model
from tests.serving.servers import start_server, train_iris_model_dir
from tests.serving.serving_cases import FEATURES, SLOW_ROWS, slow_identity


def _slow_model_dir(directory: Path, marker: Path):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = load_iris(return_X_y=True)
    estimator = make_pipeline(
        FunctionTransformer(slow_identity, kw_args={"marker": str(marker)}), LogisticRegression(max_iter=500)
    ).fit(x, y)
    card = save_model(
        directory,
        estimator,
        feature_names=FEATURES,
        class_names=[str(c) for c in estimator.classes_],
        model_family="logistic_regression",
        hyperparameters={},
        training_data_fingerprint=hashlib.sha256(x.tobytes()).hexdigest(),
        label_column=DEFAULT_LABEL_COLUMN,
    )
    return card, estimator, x


def test_sigterm_finishes_in_flight_requests_and_flushes_the_payload_log(tmp_path: Path) -> None:
    pytest.importorskip("components.payload_log", reason="the PayloadLogWriter (issue 6) is not in this tree yet")
    import pandas as pd

    marker = tmp_path / "in-flight"
    card, estimator, x = _slow_model_dir(tmp_path / "model", marker)
    log_dir = tmp_path / "payloads"
    server = start_server(tmp_path / "model", tmp_path / "server.log", f"--payload_log_dir={log_dir}")
    url = f"{server.url}/v1/models/iris:predict"
    try:
        # Given two answered requests (1 and 3 rows) and a 7-row request that is still being computed
        for rows in (x[:1], x[50:53]):
            assert httpx.post(url, json={"instances": rows.tolist()}).status_code == 200
        slow_rows = x[100 : 100 + SLOW_ROWS]
        result: dict = {}
        caller = threading.Thread(
            target=lambda: result.update(reply=httpx.post(url, json={"instances": slow_rows.tolist()}, timeout=60))
        )
        caller.start()
        while not marker.exists():
            assert caller.is_alive() and server.proc.poll() is None, server.output()[-2000:]
            time.sleep(0.02)

        # When the server is told to stop (twice, like an impatient operator) while that request is in flight
        server.proc.send_signal(signal.SIGTERM)
        server.proc.send_signal(signal.SIGTERM)
        caller.join(timeout=60)
        code = server.proc.wait(timeout=60)
    finally:
        server.stop(signal.SIGKILL)

    # Then the in-flight request got its answer, the process exited cleanly, and every row was logged
    assert result["reply"].status_code == 200
    assert result["reply"].json()["predictions"] == estimator.predict(slow_rows).tolist()
    assert code == 0, server.output()[-2000:]
    files = sorted(p for p in log_dir.rglob("*.parquet") if not p.name.startswith("."))
    assert files, f"no payload files under {log_dir}"
    logged = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
    assert len(logged) == 1 + 3 + SLOW_ROWS
    assert set(logged[PAYLOAD_COLUMN_MODEL_SHA256]) == {card.model_sha256}
    expected_rows = np.concatenate([x[:1], x[50:53], slow_rows])
    got = logged.sort_values(FEATURES).reset_index(drop=True)
    want = pd.DataFrame(expected_rows, columns=FEATURES).sort_values(FEATURES).reset_index(drop=True)
    np.testing.assert_array_equal(got[FEATURES].to_numpy(), want.to_numpy())
    assert sorted(logged[PAYLOAD_COLUMN_PREDICTION]) == sorted(str(p) for p in estimator.predict(expected_rows))


@pytest.mark.slow
def test_two_workers_serve_the_onnx_model(tmp_path: Path) -> None:
    directory, _, estimator = train_iris_model_dir(tmp_path / "model", family="random_forest", onnx=True)
    server = start_server(directory, tmp_path / "server.log", "--workers=2")
    try:
        from sklearn.datasets import load_iris

        x = load_iris().data
        with httpx.Client(timeout=30) as client:
            # Several connections, so both workers are likely to answer; each must give sklearn's labels.
            for start in range(0, 150, 25):
                reply = client.post(
                    f"{server.url}/v1/models/iris:predict",
                    json={"instances": x[start : start + 25].tolist()},
                    headers={"connection": "close"},
                )
                assert reply.status_code == 200, reply.text
                assert reply.json()["predictions"] == estimator.predict(x[start : start + 25]).tolist()
    finally:
        assert server.stop() == 0, server.output()[-2000:]
