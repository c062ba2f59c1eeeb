"""The result store as a Dagster resource: one root (a local folder or s3://bucket/prefix) in
DESIGN.md's layout; servecat.store does the reading and writing."""

from __future__ import annotations

import io

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from servecat.atomic import parquet_bytes
from servecat.store import LocalStore, S3Store, StoreError, is_s3, open_store

__all__ = ["ResultStore", "StoreError", "catalog_root"]


class ResultStore(dg.ConfigurableResource):
    """The store as a Dagster resource: `root` is a local folder (default `.servecat/store`) or
    s3://bucket/prefix, and `s3_endpoint_url` points S3 at any S3-compatible store.

    A thin wrapper: reads and writes go through servecat.store (below the Dagster line), the
    same code the catalog API and its benchmark requests use.
    """

    root: str = ".servecat/store"
    s3_endpoint_url: str = ""  # empty: AWS itself (or SERVECAT_S3_ENDPOINT_URL)
    s3_region: str = "us-east-1"
    attempts: int = 4
    backoff_s: float = 0.25

    @property
    def is_s3(self) -> bool:
        return is_s3(self.root)

    def backend(self) -> LocalStore | S3Store:
        return open_store(self.root, self.s3_endpoint_url or None, self.s3_region,
                          self.attempts, self.backoff_s)

    def uri(self, relpath: str) -> str:
        """Where RELPATH lives: an absolute local path or an s3:// URI (for DuckDB)."""
        return self.backend().uri(relpath)

    def write_bytes(self, relpath: str, data: bytes) -> str:
        self.backend().write(relpath, data)
        return self.uri(relpath)

    def read_bytes(self, relpath: str) -> bytes:
        return self.backend().read(relpath)

    def write_parquet(self, relpath: str, table: pa.Table | object) -> str:
        """Write TABLE (pyarrow or pandas) at RELPATH, whole or not at all."""
        return self.write_bytes(relpath, parquet_bytes(table))

    def read_parquet(self, relpath: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(relpath)))

    def exists(self, relpath: str) -> bool:
        return self.backend().exists(relpath)

    def list(self, prefix: str) -> list[str]:
        """Relative paths of the Parquet files under PREFIX, sorted."""
        return self.backend().list(prefix, ".parquet")


def catalog_root(store: ResultStore) -> LocalStore | S3Store:
    """Where catalog snapshots and benchmark requests live: the store itself, local or S3
    (opened with the resource's endpoint, so they land beside the runs)."""
    return store.backend()
