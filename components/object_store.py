"""Object-store locations as pyarrow filesystems: the one S3 builder of the project.

Pipeline parameters name models and logs as paths, `s3://` or `minio://` URIs (KFP's artifact URIs);
`open_filesystem` turns one into a pyarrow filesystem and a path on it. The monitoring pipeline reads payload logs
and reference profiles with it, the champion step the live model's directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow.fs as pafs


def s3_filesystem(endpoint: str, *, region: str = "", credentials_dir: str = "") -> pafs.S3FileSystem:
    """An S3-compatible filesystem for `endpoint` (e.g. `http://seaweedfs.kubeflow:9000`; no scheme = http).

    Args:
        endpoint: The store's URL.
        region: The S3 region (pyarrow's default when empty).
        credentials_dir: A folder with files `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (a mounted Secret);
            without it pyarrow reads the `AWS_*` environment variables.
    """
    import pyarrow.fs as pafs

    scheme, _, host = endpoint.partition("://")
    options: dict[str, str] = {"region": region} if region else {}
    if credentials_dir:
        folder = Path(credentials_dir)
        options["access_key"] = (folder / "AWS_ACCESS_KEY_ID").read_text(encoding="utf-8").strip()
        options["secret_key"] = (folder / "AWS_SECRET_ACCESS_KEY").read_text(encoding="utf-8").strip()
    return pafs.S3FileSystem(endpoint_override=host or scheme, scheme=scheme if host else "http", **options)


def open_filesystem(uri: str, *, s3_endpoint: str = "") -> tuple[pafs.FileSystem | None, str]:
    """A filesystem for a log or model location given as a pipeline parameter.

    `minio://bucket/key` (KFP artifact URIs) is read as `s3://bucket/key`. With `s3_endpoint` (e.g.
    `http://seaweedfs.kubeflow:9000`) an S3-compatible store is used; pyarrow takes the credentials from
    `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`. Local paths return `(None, uri)`.
    """
    text = uri.strip()
    if text.startswith("minio://"):
        text = "s3://" + text.removeprefix("minio://")
    if text.startswith("s3://") and s3_endpoint:
        return s3_filesystem(s3_endpoint), text.removeprefix("s3://")
    return None, text
