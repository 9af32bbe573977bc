"""components.object_store: pipeline parameters naming object-store locations become pyarrow filesystems."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs

from components.object_store import open_filesystem, s3_filesystem


def test_object_store_locations_resolve_to_an_s3_filesystem() -> None:
    fs, path = open_filesystem("minio://mlpipeline/payload-logs", s3_endpoint="http://seaweedfs.kubeflow:9000")
    assert isinstance(fs, pafs.S3FileSystem) and path == "mlpipeline/payload-logs"
    assert open_filesystem("/var/logs/payload") == (None, "/var/logs/payload")
    # without an endpoint an s3:// URI is left to pyarrow (AWS itself)
    assert open_filesystem("s3://bucket/key") == (None, "s3://bucket/key")


def test_credentials_come_from_a_mounted_secret_folder(tmp_path: Path) -> None:
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("minio\n")
    (tmp_path / "AWS_SECRET_ACCESS_KEY").write_text("minio123\n")
    fs = s3_filesystem("https://store.example:9000", region="eu-1", credentials_dir=str(tmp_path))
    assert isinstance(fs, pafs.S3FileSystem) and fs.region == "eu-1"
