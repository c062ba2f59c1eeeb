"""File I/O for the catalog under one store root: the only module that touches the filesystem.

Every write is whole or nothing (temp file in the same folder, fsync, os.replace). A store root is
a local folder; an S3 backend needs these four functions and nothing else.
"""

from __future__ import annotations

from pathlib import Path

from servecat.atomic import write_bytes_atomic


def write_atomic(root: str | Path, key: str, data: bytes) -> str:
    """Write DATA to ROOT/KEY whole or not at all; returns the full path."""
    return str(write_bytes_atomic(data, Path(root) / key))


def read_bytes(root: str | Path, key: str) -> bytes:
    """The bytes at ROOT/KEY (FileNotFoundError when absent)."""
    return (Path(root) / key).read_bytes()


def exists(root: str | Path, key: str) -> bool:
    return (Path(root) / key).exists()


def local_path(root: str | Path, key: str) -> str:
    """A path other local readers (DuckDB, pyarrow) can open."""
    return str(Path(root) / key)
