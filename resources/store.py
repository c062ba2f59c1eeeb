"""The result store: one root (a local folder or s3://bucket/prefix) in DESIGN.md's layout.

Every file is written whole or not at all: locally a temp file + rename, on S3 one PUT (an
object appears whole or not at all). S3 calls retry with exponential backoff, then fail with
a message naming the object.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from dagster_aws.s3 import S3Resource

from servecat.atomic import parquet_bytes, write_bytes_atomic


class StoreError(RuntimeError):
    """The store could not be read or written (after retries)."""


def matrix_path(name: str) -> str:
    return f"matrix/{name}.parquet"


def requests_path(deployment: str, workload_id: str) -> str:
    return f"runs/requests/deployment={deployment}/workload={workload_id}.parquet"


def summary_path(deployment: str, workload_id: str) -> str:
    return f"runs/summary/deployment={deployment}/workload={workload_id}.parquet"


class ResultStore(dg.ConfigurableResource):
    """Parquet files under `root`: a local folder (default `.servecat/store`) or s3://bucket/prefix.

    S3 goes through dagster-aws's `S3Resource`, so `endpoint_url` points it at any
    S3-compatible store.
    """

    root: str = ".servecat/store"
    s3_endpoint_url: str = ""  # empty: AWS itself
    s3_region: str = "us-east-1"
    attempts: int = 4
    backoff_s: float = 0.25

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def _bucket_key(self, relpath: str) -> tuple[str, str]:
        bucket, _, prefix = self.root.removeprefix("s3://").partition("/")
        return bucket, f"{prefix.strip('/')}/{relpath}".lstrip("/")

    def uri(self, relpath: str) -> str:
        """Where RELPATH lives: an absolute local path or an s3:// URI (for DuckDB)."""
        if self.is_s3:
            return f"{self.root.rstrip('/')}/{relpath}"
        return str((Path(self.root) / relpath).resolve())

    def _s3_call(self, what: str, fn):
        """FN() with retries and exponential backoff on any S3/network error."""
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in ("NoSuchKey", "404", "NoSuchBucket", "AccessDenied", "403"):
                    raise StoreError(f"{what}: {code}") from exc
                last = exc
            except BotoCoreError as exc:
                last = exc
            if attempt < self.attempts:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise StoreError(f"{what}: failed after {self.attempts} attempts: {last}") from last

    def _client(self):
        # Retries are ours (with backoff and a clear failure), so botocore makes one attempt.
        return S3Resource(endpoint_url=self.s3_endpoint_url or None, region_name=self.s3_region,
                          max_attempts=1).get_client()

    def write_bytes(self, relpath: str, data: bytes) -> str:
        if not self.is_s3:
            return str(write_bytes_atomic(data, self.uri(relpath)))
        bucket, key = self._bucket_key(relpath)
        client = self._client()
        self._s3_call(f"write {self.uri(relpath)}",
                      lambda: client.put_object(Bucket=bucket, Key=key, Body=data))
        return self.uri(relpath)

    def read_bytes(self, relpath: str) -> bytes:
        if not self.is_s3:
            return Path(self.uri(relpath)).read_bytes()
        bucket, key = self._bucket_key(relpath)
        client = self._client()
        return self._s3_call(f"read {self.uri(relpath)}",
                             lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def write_parquet(self, relpath: str, table: pa.Table | object) -> str:
        """Write TABLE (pyarrow or pandas) at RELPATH, whole or not at all."""
        return self.write_bytes(relpath, parquet_bytes(table))

    def read_parquet(self, relpath: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(relpath)))

    def exists(self, relpath: str) -> bool:
        if not self.is_s3:
            return os.path.exists(self.uri(relpath))
        bucket, key = self._bucket_key(relpath)
        client = self._client()
        resp = self._s3_call(f"list {self.uri(relpath)}",
                             lambda: client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1))
        return any(o["Key"] == key for o in resp.get("Contents", []))

    def list(self, prefix: str) -> list[str]:
        """Relative paths of the Parquet files under PREFIX, sorted."""
        if not self.is_s3:
            base, root = Path(self.uri(prefix)), Path(self.uri(""))
            if not base.exists():
                return []
            return sorted(str(p.relative_to(root)) for p in base.rglob("*.parquet")
                          if not p.name.startswith("."))
        bucket, key = self._bucket_key(prefix)
        _, root_key = self._bucket_key("")
        client = self._client()
        out, token = [], None
        while True:
            kwargs = {"Bucket": bucket, "Prefix": key, **({"ContinuationToken": token} if token else {})}
            resp = self._s3_call(f"list {self.uri(prefix)}",
                                 lambda kw=kwargs: client.list_objects_v2(**kw))
            out += [o["Key"][len(root_key):] for o in resp.get("Contents", [])
                    if o["Key"].endswith(".parquet")]
            if not resp.get("IsTruncated"):
                return sorted(out)
            token = resp["NextContinuationToken"]


def catalog_root(store: ResultStore) -> str:
    """Local folder of catalog snapshots and benchmark requests: the store root when it is a
    folder; with an S3 store, SERVECAT_CATALOG_ROOT (default `.servecat/catalog`), because the
    API swaps snapshots with an atomic local rename."""
    if not store.is_s3:
        return store.root
    return os.environ.get("SERVECAT_CATALOG_ROOT", ".servecat/catalog")
