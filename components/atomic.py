"""Durable file updates: the one helper every writer of pointers, cards and histories should use.

`os.replace` alone is atomic but not durable: after a crash the rename may be lost, or the new name may point at
a file whose data never reached the disk. Each helper here fsyncs the file, then its directory, before returning,
so whatever a caller reports as written survives a kill -9 or a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

DEFAULT_MODE = 0o644
"""`mkstemp` creates owner-only files; pointers and cards must be readable by a server running as another user."""


def fsync_directory(directory: Path) -> None:
    """Make the entries of `directory` (creations, renames, removals) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = DEFAULT_MODE) -> None:
    """Replace `path` with `data` so that readers see the old or the new content, never a mix, even after a crash.

    The temporary file is a hidden sibling (same directory, hence same filesystem, so the rename is atomic); it is
    removed if anything fails before the rename.
    """
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str, *, mode: int = DEFAULT_MODE) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode(), mode=mode)


def append_line(path: Path, line: str, *, mode: int = DEFAULT_MODE) -> None:
    """Append one line to `path` in a single `write(2)` and make it durable before returning.

    With `O_APPEND` each write lands at the end of the file as one piece, so concurrent appenders never interleave
    their lines on a local filesystem.
    """
    if "\n" in line:
        raise ValueError("append_line takes one line without a newline")
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        data = (line + "\n").encode()
        written = os.write(fd, data)
        if written != len(data):  # only a full disk or a signal does this; never leave half a line unreported
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_directory(path.parent)
