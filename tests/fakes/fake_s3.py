"""A read-only S3-compatible server over real HTTP, serving a local folder as buckets (`<root>/<bucket>/<key>`).

Enough of the S3 REST API for pyarrow's `S3FileSystem` (the AWS SDK for C++) to list a "directory" and read its
objects, path-style as with an `endpoint_override`: HEAD bucket, ListObjectsV2 (`list-type=2`, `prefix`,
`delimiter`), HEAD and GET object (with `Range`). Every request must be signed with the expected access key (the
`Credential=` of AWS Signature V4; the signature itself is not checked), otherwise 403 `InvalidAccessKeyId`, so a
test shows which credentials the client used. Requests are recorded for assertions.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from xml.sax.saxutils import escape

from tests.fakes.loopback_http import LoopbackServer, QuietHandler

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class FakeS3:
    """Serve `root` as S3 to clients signing with `access_key`; `start()` returns the endpoint URL."""

    def __init__(self, root: Path, *, access_key: str) -> None:
        self.root = root
        self.access_key = access_key
        self.requests: list[tuple[str, str]] = []
        """(method, path with query) of every request."""
        self._http = LoopbackServer()
        self.endpoint = ""

    def start(self) -> str:
        """Serve on an ephemeral loopback port; returns `http://127.0.0.1:<port>`."""
        fake = self

        class Handler(QuietHandler):
            def do_HEAD(self) -> None:
                fake.handle(self, head=True)

            def do_GET(self) -> None:
                fake.handle(self, head=False)

        self.endpoint = self._http.serve(Handler)
        return self.endpoint

    def stop(self) -> None:
        """Shut the server down."""
        self._http.stop()

    def handle(self, request: QuietHandler, *, head: bool) -> None:
        """Answer one HEAD or GET."""
        self.requests.append((request.command, request.path))
        match = _CREDENTIAL.search(request.headers.get("Authorization") or "")
        if not match or match.group(1) != self.access_key:
            return self._error(request, 403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist")
        parsed = urllib.parse.urlsplit(request.path)
        bucket, _, key = urllib.parse.unquote(parsed.path).lstrip("/").partition("/")
        query = urllib.parse.parse_qs(parsed.query)
        bucket_dir = self.root / bucket
        if not bucket or not bucket_dir.is_dir():
            return self._error(request, 404, "NoSuchBucket", "The specified bucket does not exist")
        if not key:
            if head:
                return self._send(request, 200, b"", "application/xml", head=True)
            return self._list(request, bucket, bucket_dir, query)
        path = bucket_dir / key
        if ".." in Path(key).parts or not path.is_file():
            return self._error(request, 404, "NoSuchKey", "The specified key does not exist.", head=head)
        data = path.read_bytes()
        status, headers = 200, {}
        wanted = _RANGE.fullmatch(request.headers.get("Range") or "")
        if wanted and not head:
            start = int(wanted.group(1))
            end = int(wanted.group(2)) if wanted.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{min(end, len(data) - 1)}/{len(data)}"
            data, status = data[start : end + 1], 206
        headers["ETag"] = f'"{hashlib.md5(path.read_bytes()).hexdigest()}"'  # S3's ETag is an MD5
        headers["Last-Modified"] = formatdate(path.stat().st_mtime, usegmt=True)
        return self._send(request, status, data, "application/octet-stream", head=head, headers=headers)

    def _list(self, request: QuietHandler, bucket: str, bucket_dir: Path, query: dict[str, list[str]]) -> None:
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        keys = sorted(p.relative_to(bucket_dir).as_posix() for p in bucket_dir.rglob("*") if p.is_file())
        contents, prefixes = [], set()
        for key in keys:
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                continue
            stat = (bucket_dir / key).stat()
            modified = datetime.fromtimestamp(stat.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            contents.append(
                f"<Contents><Key>{escape(key)}</Key><LastModified>{modified}</LastModified>"
                f"<ETag>&quot;0&quot;</ETag><Size>{stat.st_size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            )
        common = "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in sorted(prefixes))
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>1000</MaxKeys>"
            f"<Delimiter>{escape(delimiter)}</Delimiter><IsTruncated>false</IsTruncated>"
            f"{''.join(contents)}{common}</ListBucketResult>"
        )
        self._send(request, 200, body.encode(), "application/xml")

    def _error(self, request: QuietHandler, status: int, code: str, message: str, *, head: bool = False) -> None:
        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
        self._send(request, status, body.encode(), "application/xml", head=head)

    @staticmethod
    def _send(
        request: QuietHandler,
        status: int,
        data: bytes,
        content_type: str,
        *,
        head: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        if not head:
            request.wfile.write(data)
