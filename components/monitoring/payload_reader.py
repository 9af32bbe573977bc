"""Read payload logs back (the writer and schema are the core's `components.payload_log`).

`read_payload_window` gives one model's rows in a time window (only the day folders the window touches are
listed, then `pyarrow.dataset` reads them with the time filter). `open_filesystem` and `s3_filesystem` live in the
core (`components.object_store`, champion reads models with them too) and are re-exported here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from components.constants import PAYLOAD_COLUMN_TIMESTAMP, PAYLOAD_LOG_DATE_PREFIX, PAYLOAD_LOG_SUFFIX
from components.object_store import open_filesystem, s3_filesystem
from components.payload_log import METADATA_COLUMNS, PayloadLogError, resolve_destination, to_utc

__all__ = ["list_payload_files", "open_filesystem", "read_payload_window", "s3_filesystem", "window_bounds"]

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.fs as pafs


def list_payload_files(
    log_dir: Path | str,
    *,
    model_name: str,
    start: datetime | None = None,
    end: datetime | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> list[str]:
    """Finished Parquet files of one model whose day partition overlaps `[start, end)`.

    Raises:
        FileNotFoundError: `log_dir` itself does not exist (a wrong path, not "no traffic yet").
    """
    import pyarrow.fs as pafs

    fs, base = resolve_destination(log_dir, filesystem)
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"payload log directory {log_dir} does not exist")
    model_root = f"{base}/{model_name}"
    if fs.get_file_info(model_root).type != pafs.FileType.Directory:
        return []
    first = to_utc(start).date() if start else date.min
    last = to_utc(end).date() if end else date.max
    files: list[str] = []
    for info in fs.get_file_info(pafs.FileSelector(model_root)):
        name = info.base_name
        if info.type != pafs.FileType.Directory or not name.startswith(PAYLOAD_LOG_DATE_PREFIX):
            continue
        try:
            day = date.fromisoformat(name.removeprefix(PAYLOAD_LOG_DATE_PREFIX))
        except ValueError:
            continue
        if not first <= day <= last:
            continue
        for entry in fs.get_file_info(pafs.FileSelector(info.path)):
            if entry.base_name.startswith((".", "_")) or not entry.base_name.endswith(PAYLOAD_LOG_SUFFIX):
                continue
            files.append(entry.path)
    return sorted(files)


def read_payload_window(
    log_dir: Path | str,
    *,
    model_name: str,
    start: datetime | None,
    end: datetime | None,
    filesystem: pafs.FileSystem | None = None,
) -> pd.DataFrame:
    """Read one model's logged rows with `start <= timestamp < end`, oldest first.

    Args:
        log_dir: Log root given to the writer or sink (directory or URI).
        model_name: Which model's records.
        start: Inclusive lower bound (naive = UTC); None for no bound.
        end: Exclusive upper bound (naive = UTC); None for no bound.
        filesystem: A ready pyarrow filesystem for `log_dir` (S3 endpoint and credentials).

    Returns:
        A frame with the payload columns; empty (with the metadata columns) when no record falls in the window.

    Raises:
        FileNotFoundError: `log_dir` does not exist.
        PayloadLogError: `start` is not before `end`.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    if start is not None and end is not None and to_utc(start) >= to_utc(end):
        raise PayloadLogError(f"window start {start} is not before end {end}")
    fs, _ = resolve_destination(log_dir, filesystem)
    paths = list_payload_files(log_dir, model_name=model_name, start=start, end=end, filesystem=filesystem)
    if not paths:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in METADATA_COLUMNS})
    in_window = ds.scalar(True)
    moment = pa.timestamp("us", tz="UTC")
    if start is not None:
        in_window &= ds.field(PAYLOAD_COLUMN_TIMESTAMP) >= pa.scalar(to_utc(start), moment)
    if end is not None:
        in_window &= ds.field(PAYLOAD_COLUMN_TIMESTAMP) < pa.scalar(to_utc(end), moment)
    # Files of one model differ in schema only if its features changed: every file is inspected and the schemas
    # promoted (a dataset otherwise takes the first file's schema and drops the columns that came later).
    factory = ds.FileSystemDatasetFactory(fs, paths, ds.ParquetFileFormat())
    try:
        logs = factory.finish(factory.inspect(promote_options="permissive", fragments=None))
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        # A feature changed kind (float64 before, categorical strings now): no common Arrow type, so each file is
        # read alone and pandas joins the columns as objects.
        parts = [
            ds.dataset(path, filesystem=fs, format="parquet").to_table(filter=in_window).to_pandas() for path in paths
        ]
        frame = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
        return frame.sort_values(PAYLOAD_COLUMN_TIMESTAMP, kind="stable", ignore_index=True)
    return logs.to_table(filter=in_window).sort_by(PAYLOAD_COLUMN_TIMESTAMP).to_pandas()


def window_bounds(end: datetime | None, hours: float) -> tuple[datetime, datetime]:
    """The `[end - hours, end)` window a scheduled check reads (end defaults to now, UTC)."""
    if hours <= 0:
        raise PayloadLogError(f"window hours must be > 0, got {hours}")
    stop = to_utc(end) if end is not None else datetime.now(UTC)
    return stop - timedelta(hours=hours), stop
