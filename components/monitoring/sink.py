"""Payload-log sink for KServe's inference logger: CloudEvents in, the local server's Parquet records out.

KServe's logger agent (`spec.predictor.logger`) POSTs one CloudEvent per request and one per response (binary
content mode, `ce-*` headers; kserve `pkg/logger/worker.go`), both carrying the same `ce-id`. The response is
only sent when the model answered 200. This sink pairs the two by id and hands the rows to a
`PayloadLogWriter`, so the cluster writes exactly the schema and layout `serve --payload_log_dir` writes.

Why a sink and not KServe's own blob logger (`logger.url: s3://...` with `storage`, `batchSize`,
`batchInterval`, marshaller `json|csv|parquet`)? Its records are one row per request OR response with the body
base64-encoded, the Parquet/CSV rows carry no timestamp, object keys are `<id>-<request|response>.<ext>`
without a date partition, and a request and its response may land in different batches. Monitoring would have
to re-pair and re-parse every object to read a time window. The README documents the built-in option.

Run it: `python -m components.monitoring.sink --log_dir s3://mlpipeline/payload-logs --feature_names '[...]'`, or
for a model with categorical features `--features '<model.json "features">'` (categories are logged as strings).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from components.constants import (
    CE_TYPE_INFERENCE_REQUEST,
    CE_TYPE_INFERENCE_RESPONSE,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SINK_PORT,
    MODEL_SHA256_ANNOTATION,
    PAYLOAD_SOURCE_KSERVE_LOGGER,
)
from components.monitoring.payload_reader import s3_filesystem
from components.payload_log import PayloadLogWriter, to_utc

if TYPE_CHECKING:
    from components.features import Feature

logger = logging.getLogger(__name__)

DEFAULT_PAIRING_TTL_S = 60.0
"""How long a request waits for its response. KServe never sends a response event for a non-200 answer, so
an unanswered request is a rejected one and is dropped (counted) rather than logged as traffic."""


class CloudEventError(ValueError):
    """The POSTed event is not a KServe inference-logger event we can decode; the message says why."""


@dataclass(frozen=True)
class InferenceEvent:
    """One decoded logger event."""

    id: str
    type: str
    time: datetime
    inference_service: str
    namespace: str
    payload: Any
    annotations: dict[str, str] = field(default_factory=dict)


def parse_rfc3339(text: str | None) -> datetime:
    """An RFC 3339 time as Go writes it (nanoseconds are cut to microseconds) in UTC; empty means now."""
    if not text:
        return datetime.now(UTC)
    from pydantic import ValidationError

    try:
        return to_utc(_datetime_adapter().validate_python(text))
    except ValidationError:
        raise CloudEventError(f"ce-time {text!r} is not an RFC 3339 time") from None


@functools.cache
def _datetime_adapter() -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(datetime)


def decode_cloudevent(headers: Mapping[str, str], body: bytes) -> InferenceEvent:
    """Decode a binary-mode (KServe's) or structured-mode CloudEvent carrying a JSON inference payload.

    Raises:
        CloudEventError: Missing id/type/source/specversion, a time that is not RFC 3339, an unknown type, or a
            body that is not JSON.
    """
    from cloudevents.exceptions import GenericException
    from cloudevents.http import from_http

    try:
        # The SDK matches `ce-*` headers in lower case only; HTTP header names are case-insensitive.
        event = from_http({k.lower(): v for k, v in headers.items()}, body)
    except GenericException as error:
        raise CloudEventError(f"not a CloudEvent: ce-id and ce-type are required ({error})") from None
    attributes = event.get_attributes()
    event_id, event_type = str(attributes["id"]), str(attributes["type"])
    if event_type not in (CE_TYPE_INFERENCE_REQUEST, CE_TYPE_INFERENCE_RESPONSE):
        raise CloudEventError(f"unexpected CloudEvent type {event_type!r}; this sink takes KServe logger events")
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError as error:
            raise CloudEventError(f"event {event_id}: payload is not JSON ({error})") from error
    annotations: dict[str, str] = {}
    raw_annotations = attributes.get("annotations")
    if raw_annotations:
        try:
            parsed = json.loads(raw_annotations) if isinstance(raw_annotations, str) else raw_annotations
            annotations = {str(k): str(v) for k, v in parsed.items()}
        except (ValueError, AttributeError):
            logger.warning("event %s: ignoring unparsable annotations %r", event_id, raw_annotations)
    return InferenceEvent(
        id=event_id,
        type=event_type,
        time=parse_rfc3339(attributes.get("time")),
        inference_service=str(attributes.get("inferenceservicename", "")),
        namespace=str(attributes.get("namespace", "")),
        payload=data,
        annotations=annotations,
    )


def instances_from_request(payload: Any, feature_names: Sequence[str] | None = None) -> list[list[Any]]:
    """Rows of a request body, each a list of values in `feature_names` order.

    V1: `instances` (or `inputs`) as lists, or as objects keyed by feature name. V2: `inputs[0]` with
    `shape`/`data` (one tensor, every feature numeric), or one input per feature named as the feature (typed
    models; `BYTES` data arrive as JSON strings). Objects and per-feature inputs need `feature_names`.
    """
    if isinstance(payload, dict) and "instances" in payload:
        rows = payload["instances"]
    elif isinstance(payload, dict) and isinstance(payload.get("inputs"), list) and payload["inputs"]:
        inputs = payload["inputs"]
        first = inputs[0]
        named = {i.get("name") for i in inputs if isinstance(i, dict)}
        if feature_names and len(inputs) == len(feature_names) > 1 and named == set(feature_names):
            rows = _rows_from_feature_inputs(inputs, feature_names)
        elif isinstance(first, dict) and "data" in first:
            data, shape = first["data"], first.get("shape") or []
            flat = [v for row in data for v in row] if data and isinstance(data[0], list) else list(data)
            width = shape[-1] if len(shape) == 2 else len(flat)
            rows = [flat[i : i + width] for i in range(0, len(flat), width)] if width else []
        else:
            rows = inputs
    else:
        raise CloudEventError("request payload has neither 'instances' nor 'inputs'")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        if not feature_names:
            raise CloudEventError("request rows are objects: the sink needs the model's feature names (--features)")
        rows = [[row.get(name) for name in feature_names] for row in rows]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise CloudEventError("request instances must be a list of rows (lists of values, or objects)")
    return rows


def _rows_from_feature_inputs(inputs: list[dict[str, Any]], feature_names: Sequence[str]) -> list[list[Any]]:
    """V2 with one input per feature: columns by name, zipped into rows."""
    columns = {}
    for tensor in inputs:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise CloudEventError(f"V2 input {tensor.get('name')!r} has no data list")
        columns[tensor["name"]] = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]
    lengths = {len(c) for c in columns.values()}
    if len(lengths) != 1:
        raise CloudEventError(f"V2 per-feature inputs differ in length: {sorted(lengths)}")
    return [list(row) for row in zip(*(columns[name] for name in feature_names), strict=True)]


def typed_rows(rows: list[list[Any]], feature_names: Sequence[str], categorical: Sequence[str] = ()) -> Any:
    """Rows as the matrix the payload writer takes, float64 or (with categorical features) objects.

    The object matrix holds floats (None -> NaN) and category texts (`features.category_value`; None stays None).

    Raises:
        ValueError: A row has the wrong width, or a numeric feature a value that is not a number.
    """
    import numpy as np

    if any(len(row) != len(feature_names) for row in rows):
        raise ValueError(f"every row must have {len(feature_names)} values")
    if not categorical:
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(feature_names))
    from components.features import category_value

    kinds = [name in categorical for name in feature_names]
    out = np.empty((len(rows), len(feature_names)), dtype=object)
    for i, row in enumerate(rows):
        for j, (value, is_category) in enumerate(zip(row, kinds, strict=True)):
            if value is None:
                out[i, j] = None if is_category else np.nan
            elif is_category:
                out[i, j] = category_value(value)
            elif isinstance(value, bool | str):  # JSON true or "3" is no number for a numeric feature
                raise ValueError(f"feature '{feature_names[j]}' is numeric, got {value!r}")
            else:
                out[i, j] = float(value)
    return out


def predictions_from_response(payload: Any) -> list[Any]:
    """Predictions of a V1 (`predictions`) or V2 (`outputs[0].data`) response body."""
    if isinstance(payload, dict) and isinstance(payload.get("predictions"), list):
        return list(payload["predictions"])
    if isinstance(payload, dict) and isinstance(payload.get("outputs"), list) and payload["outputs"]:
        first = payload["outputs"][0]
        if isinstance(first, dict) and isinstance(first.get("data"), list):
            return list(first["data"])
    raise CloudEventError("response payload has neither 'predictions' nor 'outputs[0].data'")


@dataclass
class SinkStats:
    """What the sink did so far."""

    events: int = 0
    rejected_events: int = 0
    records: int = 0
    unanswered_requests: int = 0
    orphan_responses: int = 0
    mismatched_pairs: int = 0


WriterFactory = Callable[[str, str], PayloadLogWriter]
"""(model_name, model_sha256) -> writer; one writer per InferenceService name."""


class PayloadEventSink:
    """Pairs request and response events by id and records the rows; thread-safe.

    Args:
        writer_factory: Makes the writer for an InferenceService (called once per name).
        mode: The logger mode the InferenceService uses (`all` pairs; `request` records without predictions).
        pairing_ttl_s: How long half a pair waits for the other half.
        default_model_sha256: Used when events carry no `MODEL_SHA256_ANNOTATION`.
        feature_names: The model's features in order: rows sent as objects or as per-feature V2 inputs need them.
        categorical: Which of them are categorical (logged as strings); the rest are numbers.
    """

    def __init__(
        self,
        writer_factory: WriterFactory,
        *,
        mode: str = "all",
        pairing_ttl_s: float = DEFAULT_PAIRING_TTL_S,
        default_model_sha256: str = "",
        feature_names: Sequence[str] = (),
        categorical: Sequence[str] = (),
    ) -> None:
        if mode not in ("all", "request"):
            raise ValueError(f"sink mode must be 'all' or 'request', got {mode!r}")
        self.mode = mode
        self.pairing_ttl_s = pairing_ttl_s
        self.default_model_sha256 = default_model_sha256
        self.feature_names = list(feature_names)
        self.categorical = list(categorical)
        self.stats = SinkStats()
        self._writer_factory = writer_factory
        self._writers: dict[str, PayloadLogWriter] = {}
        self._requests: dict[str, tuple[float, InferenceEvent]] = {}
        self._responses: dict[str, tuple[float, InferenceEvent]] = {}
        self._lock = threading.Lock()

    def handle(self, headers: Mapping[str, str], body: bytes) -> None:
        """Decode one POSTed event and record it once its pair is complete.

        Raises:
            CloudEventError: The event is malformed (the HTTP layer answers 400).
        """
        try:
            event = decode_cloudevent(headers, body)
            if event.type == CE_TYPE_INFERENCE_REQUEST:
                instances_from_request(event.payload, self.feature_names)  # fail now, on the request that is wrong
            else:
                predictions_from_response(event.payload)
        except CloudEventError:
            with self._lock:
                self.stats.rejected_events += 1
            raise
        now = time.monotonic()
        with self._lock:
            self.stats.events += 1
            if event.type == CE_TYPE_INFERENCE_REQUEST:
                if self.mode == "request":
                    self._record(event, None)
                elif event.id in self._responses:
                    self._record(event, self._responses.pop(event.id)[1])
                else:
                    self._requests[event.id] = (now, event)
            elif event.id in self._requests:
                self._record(self._requests.pop(event.id)[1], event)
            else:
                self._responses[event.id] = (now, event)
            self._expire(now)

    def expire(self) -> None:
        """Drop halves of pairs older than the TTL (the server calls this on a timer too)."""
        with self._lock:
            self._expire(time.monotonic())

    def close(self) -> None:
        """Count still-unpaired halves and flush and close every writer."""
        with self._lock:
            self.stats.unanswered_requests += len(self._requests)
            self.stats.orphan_responses += len(self._responses)
            self._requests.clear()
            self._responses.clear()
            writers = list(self._writers.values())
        for writer in writers:
            writer.close()

    def _expire(self, now: float) -> None:
        cutoff = now - self.pairing_ttl_s
        for pending, counter in ((self._requests, "unanswered_requests"), (self._responses, "orphan_responses")):
            stale = [key for key, (arrived, _) in pending.items() if arrived < cutoff]
            for key in stale:
                del pending[key]
            setattr(self.stats, counter, getattr(self.stats, counter) + len(stale))

    def _record(self, request: InferenceEvent, response: InferenceEvent | None) -> None:
        rows = instances_from_request(request.payload, self.feature_names)
        predictions: list[Any] = [None] * len(rows)
        if response is not None:
            predictions = predictions_from_response(response.payload)
            if len(predictions) != len(rows):
                self.stats.mismatched_pairs += 1
                logger.warning("event %s: %d rows but %d predictions; skipped", request.id, len(rows), len(predictions))
                return
        name = request.inference_service or "unknown"
        sha = request.annotations.get(MODEL_SHA256_ANNOTATION, self.default_model_sha256)
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = self._writer_factory(name, sha)
        try:
            matrix = typed_rows(rows, writer.feature_names, writer.categorical)
            writer.record(matrix, predictions, request_ids=[request.id] * len(rows), timestamp=request.time)
        except (ValueError, TypeError) as error:
            self.stats.mismatched_pairs += 1
            logger.warning("event %s: cannot record rows (%s); skipped", request.id, error)
            return
        self.stats.records += len(rows)


def build_app(
    sink: PayloadEventSink, *, expire_every_s: float = 10.0, max_body_bytes: int = 4 * DEFAULT_MAX_BODY_BYTES
) -> Any:
    """A Starlette app: `POST /` takes events, `GET /healthz` and `GET /stats` report.

    Args:
        sink: Where decoded events go.
        expire_every_s: How often unpaired halves are expired.
        max_body_bytes: Larger events get 413 (the predictor caps its own bodies at `DEFAULT_MAX_BODY_BYTES`;
            a response with probabilities can be larger than its request).
    """
    import asyncio
    import contextlib
    from dataclasses import asdict

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def receive(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            return JSONResponse({"error": f"event larger than {max_body_bytes} bytes"}, status_code=413)
        body = await request.body()
        if len(body) > max_body_bytes:
            return JSONResponse({"error": f"event larger than {max_body_bytes} bytes"}, status_code=413)
        try:
            sink.handle(dict(request.headers), body)
        except CloudEventError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse({"status": "accepted"})

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def stats(_: Request) -> JSONResponse:
        return JSONResponse(asdict(sink.stats))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async def expire_forever() -> None:
            while True:
                await asyncio.sleep(expire_every_s)
                sink.expire()

        task = asyncio.create_task(expire_forever())
        try:
            yield
        finally:
            task.cancel()
            sink.close()  # flush every batch before the pod goes away

    routes = [Route("/", receive, methods=["POST"]), Route("/healthz", healthz), Route("/stats", stats)]
    return Starlette(routes=routes, lifespan=lifespan)


def parse_features(text: str) -> list[Feature]:
    """The model card's `features` as JSON (`'[{"name": "city", "kind": "categorical", ...}, ...]'`)."""
    from pydantic import TypeAdapter, ValidationError

    from components.features import Feature

    try:
        features = TypeAdapter(list[Feature]).validate_json(text)
    except ValidationError as error:
        raise ValueError(f"--features must be the model card's features list: {error.errors()[0]['msg']}") from None
    if not features:
        raise ValueError("--features is empty")
    return features


def parse_feature_names(text: str) -> list[str]:
    """A JSON list (`'["sepal length (cm)", ...]'`) or a comma-separated list of feature names."""
    stripped = text.strip()
    if stripped.startswith("["):
        names = json.loads(stripped)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("--feature_names JSON must be a list of strings")
        return names
    return [n.strip() for n in stripped.split(",") if n.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the sink (the Deployment in manifests/monitoring runs this)."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m components.monitoring.sink", description=__doc__.splitlines()[0])
    parser.add_argument("--log_dir", required=True, help="directory or s3://bucket/prefix for the Parquet logs")
    columns = parser.add_mutually_exclusive_group(required=True)
    columns.add_argument("--feature_names", help="JSON list or comma-separated, in model order (all numeric)")
    columns.add_argument("--features", help="the model card's typed features as JSON (model.json 'features')")
    parser.add_argument("--mode", default="all", choices=["all", "request"])
    parser.add_argument("--model_sha256", default="", help="used when events carry no sha256 annotation")
    parser.add_argument("--s3_endpoint", default="", help="e.g. http://seaweedfs.kubeflow:9000 (S3-compatible)")
    parser.add_argument("--s3_region", default="us-east-1")
    parser.add_argument(
        "--s3_credentials_dir",
        default="",
        help="folder with files AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (a mounted Secret); "
        "without it pyarrow reads the AWS_* environment variables",
    )
    parser.add_argument("--batch_size", type=int, default=1000)
    parser.add_argument("--flush_interval_s", type=float, default=60.0)
    parser.add_argument("--max_body_bytes", type=int, default=4 * DEFAULT_MAX_BODY_BYTES, help="larger events: 413")
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104  # a pod must listen on its own IP
    parser.add_argument("--port", type=int, default=DEFAULT_SINK_PORT)
    args = parser.parse_args(argv)

    filesystem = None
    if args.s3_endpoint:
        filesystem = s3_filesystem(args.s3_endpoint, region=args.s3_region, credentials_dir=args.s3_credentials_dir)
    typed = parse_features(args.features) if args.features else None
    names = [f.name for f in typed] if typed else parse_feature_names(args.feature_names)

    def factory(model_name: str, model_sha256: str) -> PayloadLogWriter:
        return PayloadLogWriter(
            args.log_dir,
            model_name=model_name,
            model_sha256=model_sha256,
            feature_names=names,
            features=typed,
            batch_size=args.batch_size,
            flush_interval_s=args.flush_interval_s,
            source=PAYLOAD_SOURCE_KSERVE_LOGGER,
            filesystem=filesystem,
        )

    logging.basicConfig(level=logging.INFO)
    categorical = [f.name for f in typed or () if f.kind == "categorical"]
    sink = PayloadEventSink(
        factory, mode=args.mode, default_model_sha256=args.model_sha256, feature_names=names, categorical=categorical
    )
    uvicorn.run(build_app(sink, max_body_bytes=args.max_body_bytes), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
