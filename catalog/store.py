"""File I/O for the catalog under one store root: the only module that touches the filesystem.

Every write is whole or nothing (temp file in the same folder, fsync, os.replace). A store root is
a local folder; an S3 backend needs these four functions and nothing else.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(root: str | Path, key: str, data: bytes) -> str:
    """Write DATA to ROOT/KEY whole or not at all; returns the full path."""
    path = Path(root) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(path)


def read_bytes(root: str | Path, key: str) -> bytes:
    """The bytes at ROOT/KEY (FileNotFoundError when absent)."""
    return (Path(root) / key).read_bytes()


def exists(root: str | Path, key: str) -> bool:
    return (Path(root) / key).exists()


def local_path(root: str | Path, key: str) -> str:
    """A path other local readers (DuckDB, pyarrow) can open."""
    return str(Path(root) / key)
