"""The catalog's file I/O under one store root (a local folder or s3://bucket/prefix), through
servecat.store: every write whole or nothing, so snapshots and LATEST.json work on S3 too."""

from __future__ import annotations

from pathlib import Path

from servecat.store import open_store


def write_atomic(root: str | Path, key: str, data: bytes) -> str:
    """Write DATA to ROOT/KEY whole or not at all; returns its path or s3:// URI."""
    backend = open_store(root)
    backend.write(key, data)
    return backend.uri(key)


def read_bytes(root: str | Path, key: str) -> bytes:
    """The bytes at ROOT/KEY (FileNotFoundError when absent)."""
    return open_store(root).read(key)


def exists(root: str | Path, key: str) -> bool:
    return open_store(root).exists(key)


def local_path(root: str | Path, key: str) -> str:
    """Where ROOT/KEY lives: a local path, or an s3:// URI that DuckDB reads with httpfs."""
    return open_store(root).uri(key)


def version(root: str | Path, key: str) -> str | None:
    """A tag that changes whenever ROOT/KEY is rewritten, without reading it (None when absent)."""
    return open_store(root).stat_tag(key)
