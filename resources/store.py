"""The result store: one root (a local folder or s3://bucket/prefix) in DESIGN.md's layout.

Every file is written whole or not at all: locally a temp file + rename, on S3 one PUT.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from servecat.atomic import parquet_bytes, write_bytes_atomic


def matrix_path(name: str) -> str:
    return f"matrix/{name}.parquet"


def requests_path(deployment: str, workload_id: str) -> str:
    return f"runs/requests/deployment={deployment}/workload={workload_id}.parquet"


def summary_path(deployment: str, workload_id: str) -> str:
    return f"runs/summary/deployment={deployment}/workload={workload_id}.parquet"


class ResultStore(dg.ConfigurableResource):
    """Parquet files under `root`: a local folder (default `.servecat/store`) or S3."""

    root: str = ".servecat/store"

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def uri(self, relpath: str) -> str:
        """Where RELPATH lives: an absolute local path or an s3:// URI (for DuckDB)."""
        if self.is_s3:
            return f"{self.root.rstrip('/')}/{relpath}"
        return str((Path(self.root) / relpath).resolve())

    def write_parquet(self, relpath: str, table: pa.Table | object) -> str:
        """Write TABLE (pyarrow or pandas) at RELPATH, whole or not at all."""
        data = parquet_bytes(table)
        write_bytes_atomic(data, self.uri(relpath))
        return self.uri(relpath)

    def exists(self, relpath: str) -> bool:
        return os.path.exists(self.uri(relpath))

    def read_parquet(self, relpath: str) -> pa.Table:
        return pq.read_table(self.uri(relpath))

    def list(self, prefix: str) -> list[str]:
        """Relative paths of the files under PREFIX, sorted."""
        base = Path(self.uri(prefix))
        if not base.exists():
            return []
        root = Path(self.uri(""))
        return sorted(str(p.relative_to(root)) for p in base.rglob("*.parquet")
                      if not p.name.startswith("."))
