"""The atomic byte store every layer writes through: a local folder or s3://bucket/prefix.

A file is written whole or not at all: locally a temp file + fsync + rename, on S3 one PUT (an
object appears whole or not at all). Runs, catalog snapshots and benchmark requests all go
through here, so an S3 store root really holds everything. S3 calls retry with exponential
backoff, then fail with a StoreError naming the object. Conditional writes (`if_match`,
`if_absent`) let two processes update one object without losing either's change.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servecat.atomic import write_bytes_atomic


class StoreError(RuntimeError):
    """The store could not be read or written (after retries)."""


class Conflict(StoreError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


class Missing(StoreError, FileNotFoundError):
    """No object at that key."""


def is_s3(root: str | Path | LocalStore | S3Store) -> bool:
    return isinstance(root, S3Store) or str(root).startswith("s3://")


def open_store(root: str | Path | LocalStore | S3Store, s3_endpoint_url: str | None = None,
               s3_region: str | None = None, attempts: int = 4,
               backoff_s: float = 0.25) -> LocalStore | S3Store:
    """The store at ROOT (a store already opened is returned as it is). For S3 the endpoint and
    region default to SERVECAT_S3_ENDPOINT_URL / AWS_ENDPOINT_URL and AWS_DEFAULT_REGION."""
    if isinstance(root, LocalStore | S3Store):
        return root
    if not is_s3(root):
        return LocalStore(str(root))
    endpoint = (s3_endpoint_url or os.environ.get("SERVECAT_S3_ENDPOINT_URL")
                or os.environ.get("AWS_ENDPOINT_URL") or None)
    region = s3_region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return S3Store(str(root), endpoint, region, attempts, backoff_s)


def etag_of(data: bytes) -> str:
    """The version tag a local write gives DATA (S3 gives its own ETag)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class LocalStore:
    """Files under a local folder."""

    root: str

    def uri(self, key: str) -> str:
        return str((Path(self.root) / key).resolve())

    def write(self, key: str, data: bytes, *, if_match: str | None = None,
              if_absent: bool = False) -> str:
        """Write DATA at KEY whole; with IF_MATCH / IF_ABSENT only if the object is at that
        version / absent (else Conflict). Returns the new version tag."""
        path = Path(self.uri(key))
        if if_match is None and not if_absent:
            write_bytes_atomic(data, path)
            return etag_of(data)
        with self._lock(path):  # check-then-rename under one lock per object
            current = path.read_bytes() if path.exists() else None
            if if_absent and current is not None:
                raise Conflict(f"{self.uri(key)}: already exists")
            if if_match is not None and (current is None or etag_of(current) != if_match):
                raise Conflict(f"{self.uri(key)}: changed since it was read")
            write_bytes_atomic(data, path)
        return etag_of(data)

    def read(self, key: str) -> bytes:
        return self.read_versioned(key)[0]

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The bytes at KEY and their version tag (Missing when absent)."""
        try:
            data = Path(self.uri(key)).read_bytes()
        except FileNotFoundError:
            raise Missing(f"{self.uri(key)}: not found") from None
        return data, etag_of(data)

    def exists(self, key: str) -> bool:
        return os.path.exists(self.uri(key))

    def stat_tag(self, key: str) -> str | None:
        """A tag that changes whenever KEY is rewritten, without reading it (None when absent):
        inode, size and mtime (every write is a rename)."""
        try:
            st = os.stat(self.uri(key))
        except FileNotFoundError:
            return None
        return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"

    def list(self, prefix: str, suffix: str = "") -> list[str]:
        """Keys under PREFIX ending in SUFFIX, sorted; hidden temp files are left out."""
        base, root = Path(self.uri(prefix)), Path(self.uri(""))
        if not base.exists():
            return []
        return sorted(str(p.relative_to(root)) for p in base.rglob(f"*{suffix}")
                      if p.is_file() and not p.name.startswith("."))

    @contextlib.contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True, slots=True)
class S3Store:
    """Objects under s3://bucket/prefix (any S3-compatible endpoint)."""

    root: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    attempts: int = 4
    backoff_s: float = 0.25

    def uri(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}"

    def bucket_key(self, key: str) -> tuple[str, str]:
        bucket, _, prefix = self.root.removeprefix("s3://").partition("/")
        return bucket, f"{prefix.strip('/')}/{key}".lstrip("/")

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        # Retries are ours (with backoff and a clear failure), so botocore makes one attempt.
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            config=Config(retries={"max_attempts": 1, "mode": "standard"}))

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """FN() with retries and exponential backoff on any S3 or network error."""
        from botocore.exceptions import BotoCoreError, ClientError

        last: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("NoSuchKey", "404"):
                    raise Missing(f"{what}: not found") from exc
                if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                    raise Conflict(f"{what}: changed since it was read") from exc
                if code in ("NoSuchBucket", "AccessDenied", "403"):
                    raise StoreError(f"{what}: {code}") from exc
                last = exc
            except BotoCoreError as exc:
                last = exc
            if attempt < self.attempts:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise StoreError(f"{what}: failed after {self.attempts} attempts: {last}") from last

    def write(self, key: str, data: bytes, *, if_match: str | None = None,
              if_absent: bool = False) -> str:
        bucket, k = self.bucket_key(key)
        extra: dict[str, str] = {}
        if if_match is not None:
            extra["IfMatch"] = f'"{if_match}"'
        if if_absent:
            extra["IfNoneMatch"] = "*"
        client = self.client()
        resp = self.call(f"write {self.uri(key)}",
                         lambda: client.put_object(Bucket=bucket, Key=k, Body=data, **extra))
        return str(resp.get("ETag", "")).strip('"')

    def read(self, key: str) -> bytes:
        return self.read_versioned(key)[0]

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        bucket, k = self.bucket_key(key)
        client = self.client()

        def get() -> tuple[bytes, str]:
            resp = client.get_object(Bucket=bucket, Key=k)
            return resp["Body"].read(), str(resp.get("ETag", "")).strip('"')

        return self.call(f"read {self.uri(key)}", get)

    def exists(self, key: str) -> bool:
        bucket, k = self.bucket_key(key)
        client = self.client()
        resp = self.call(f"list {self.uri(key)}",
                         lambda: client.list_objects_v2(Bucket=bucket, Prefix=k, MaxKeys=1))
        return any(o["Key"] == k for o in resp.get("Contents", []))

    def stat_tag(self, key: str) -> str | None:
        """The object's ETag from a HEAD request, without reading it (None when absent)."""
        bucket, k = self.bucket_key(key)
        client = self.client()
        try:
            head = self.call(f"head {self.uri(key)}",
                             lambda: client.head_object(Bucket=bucket, Key=k))
        except Missing:
            return None
        return str(head.get("ETag", "")).strip('"')

    def list(self, prefix: str, suffix: str = "") -> list[str]:
        bucket, k = self.bucket_key(prefix)
        _, root_key = self.bucket_key("")
        client = self.client()
        out, token = [], None
        while True:
            kwargs = {"Bucket": bucket, "Prefix": k, **({"ContinuationToken": token} if token else {})}
            resp = self.call(f"list {self.uri(prefix)}",
                             lambda kw=kwargs: client.list_objects_v2(**kw))
            out += [o["Key"][len(root_key):] for o in resp.get("Contents", [])
                    if o["Key"].endswith(suffix)]
            if not resp.get("IsTruncated"):
                return sorted(out)
            token = resp["NextContinuationToken"]


# DESIGN.md's layout of the result store: where each kind of file lives.
def matrix_path(name: str) -> str:
    return f"matrix/{name}.parquet"


def requests_path(deployment: str, workload_id: str) -> str:
    return f"runs/requests/deployment={deployment}/workload={workload_id}.parquet"


def summary_path(deployment: str, workload_id: str) -> str:
    return f"runs/summary/deployment={deployment}/workload={workload_id}.parquet"


# The deployment_estimates asset's outputs (assets/estimates.py), read by the catalog API.
ESTIMATES_PATH = "estimates/estimates.parquet"
ESTIMATE_ERRORS_PATH = "estimates/errors.parquet"
