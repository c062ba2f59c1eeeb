"""Durable benchmark requests (a sqlite file under the store root) with a small status machine.

    pending -> accepted -> running -> done | failed
    pending -> rejected (with a reason)          accepted -> failed

The API creates requests; the Dagster sensor lists pending ones and moves them along.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from servecat.store import Conflict, LocalStore, StoreError, is_s3, open_store

DB_NAME = "benchmark_requests.sqlite"
STATUSES = ("pending", "accepted", "running", "done", "failed", "rejected")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "pending": ("accepted", "rejected"),
    "accepted": ("running", "failed"),
    "running": ("done", "failed"),
    "done": (), "failed": (), "rejected": (),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS benchmark_requests (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    matrix_overrides TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    details TEXT NOT NULL,
    requested_by TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class BenchmarkRequest:
    """A request to benchmark MODEL (HF id or local path), with optional matrix overrides."""

    id: str
    model: str
    status: str
    matrix_overrides: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    requested_by: str | None = None
    created_at: str = ""
    updated_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InvalidTransition(ValueError):
    """A status change the state machine does not allow."""


class BenchmarkRequests:
    """The store: create, get, list and set_status, each in its own short sqlite transaction.

    Under an s3:// store root it is an ObjectRequests instead (same methods, one JSON object
    per request), so the API and the Dagster sensor share requests wherever the store is.
    """

    def __new__(cls, path: str | Path):
        if cls is BenchmarkRequests and is_s3(path):
            return super().__new__(ObjectRequests)
        return super().__new__(cls)

    def __init__(self, path: str | Path | LocalStore):
        """PATH is the sqlite file, or a store root folder (the file is then ROOT/benchmark_requests.sqlite)."""
        path = Path(path.root if isinstance(path, LocalStore) else path)
        self.path = path / DB_NAME if path.is_dir() or not path.suffix else path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)
            db.execute("CREATE INDEX IF NOT EXISTS by_status ON benchmark_requests(status, created_at)")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def create(self, model: str, matrix_overrides: dict[str, Any] | None = None,
               requested_by: str | None = None) -> BenchmarkRequest:
        """Store a new pending request and return it."""
        req = _new_request(model, matrix_overrides, requested_by)
        now = req.created_at
        with self._connect() as db:
            db.execute("INSERT INTO benchmark_requests VALUES (?,?,?,?,?,?,?,?,?)",
                       (req.id, req.model, json.dumps(req.matrix_overrides), req.status, None,
                        "{}", requested_by, now, now))
        return req

    def get(self, request_id: str) -> BenchmarkRequest | None:
        """The request with REQUEST_ID, or None."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM benchmark_requests WHERE id = ?", (request_id,)).fetchone()
        return None if row is None else _from_row(row)

    def list(self, status: str | None = None) -> list[BenchmarkRequest]:
        """All requests (oldest first), or those with STATUS."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        with self._connect() as db:
            if status is None:
                rows = db.execute("SELECT * FROM benchmark_requests ORDER BY created_at, id").fetchall()
            else:
                rows = db.execute("SELECT * FROM benchmark_requests WHERE status = ? "
                                  "ORDER BY created_at, id", (status,)).fetchall()
        return [_from_row(r) for r in rows]

    def set_status(self, request_id: str, status: str, reason: str | None = None,
                   details: dict[str, Any] | None = None) -> BenchmarkRequest:
        """Move a request to STATUS (checked against TRANSITIONS); DETAILS merge into its details.

        `rejected` and `failed` need a REASON. Raises KeyError for an unknown id and
        InvalidTransition for a move the state machine does not allow.
        """
        if status not in STATUSES:
            raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        if status in ("rejected", "failed") and not reason:
            raise ValueError(f"status {status} needs a reason")
        with self._connect() as db:
            row = db.execute("SELECT * FROM benchmark_requests WHERE id = ?", (request_id,)).fetchone()
            if row is None:
                raise KeyError(f"benchmark request {request_id!r} not found")
            current = _from_row(row)
            if status not in TRANSITIONS[current.status]:
                allowed = ", ".join(TRANSITIONS[current.status]) or "none (final)"
                raise InvalidTransition(f"benchmark request {request_id}: cannot go from "
                                        f"{current.status} to {status} (allowed: {allowed})")
            merged = {**current.details, **(details or {})}
            db.execute("UPDATE benchmark_requests SET status = ?, reason = ?, details = ?, "
                       "updated_at = ? WHERE id = ?",
                       (status, reason if reason is not None else current.reason,
                        json.dumps(merged), _now(), request_id))
            row = db.execute("SELECT * FROM benchmark_requests WHERE id = ?", (request_id,)).fetchone()
        return _from_row(row)


class ObjectRequests(BenchmarkRequests):
    """Requests as objects `benchmark_requests/<id>.json` in the byte store (local or S3).

    A status change is a conditional write on the version read (S3 If-Match), retried on a
    conflict, so the API and the sensor never overwrite each other's change.
    """

    PREFIX = "benchmark_requests/"

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.store = open_store(path)

    def _key(self, request_id: str) -> str:
        if not re.fullmatch(r"br-[0-9a-f]{16}", request_id):
            raise KeyError(f"benchmark request {request_id!r} not found")
        return f"{self.PREFIX}{request_id}.json"

    def _put(self, req: BenchmarkRequest, **condition: Any) -> None:
        self.store.write(self._key(req.id), json.dumps(req.to_dict()).encode(), **condition)

    def create(self, model: str, matrix_overrides: dict[str, Any] | None = None,
               requested_by: str | None = None) -> BenchmarkRequest:
        req = _new_request(model, matrix_overrides, requested_by)
        self._put(req, if_absent=True)
        return req

    def _read(self, key: str) -> tuple[BenchmarkRequest, str]:
        data, version = self.store.read_versioned(key)
        doc = _loads(data.decode(errors="replace"))
        doc = doc if isinstance(doc, dict) else {}
        rid = key.removeprefix(self.PREFIX).removesuffix(".json")
        details = doc.get("details")
        return BenchmarkRequest(
            id=rid, model=str(doc.get("model", "")), status=str(doc.get("status", "pending")),
            matrix_overrides=doc.get("matrix_overrides", "not a mapping"),
            reason=doc.get("reason"), details=details if isinstance(details, dict) else {},
            requested_by=doc.get("requested_by"), created_at=str(doc.get("created_at", "")),
            updated_at=str(doc.get("updated_at", ""))), version

    def get(self, request_id: str) -> BenchmarkRequest | None:
        try:
            return self._read(self._key(request_id))[0]
        except (KeyError, FileNotFoundError):
            return None

    def list(self, status: str | None = None) -> list[BenchmarkRequest]:
        if status is not None and status not in STATUSES:
            raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        out = []
        for key in self.store.list(self.PREFIX, ".json"):
            with contextlib.suppress(FileNotFoundError):
                out.append(self._read(key)[0])
        out = [r for r in out if status is None or r.status == status]
        return sorted(out, key=lambda r: (r.created_at, r.id))

    def set_status(self, request_id: str, status: str, reason: str | None = None,
                   details: dict[str, Any] | None = None) -> BenchmarkRequest:
        if status not in STATUSES:
            raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        if status in ("rejected", "failed") and not reason:
            raise ValueError(f"status {status} needs a reason")
        for _ in range(20):  # a conflict means someone else moved it: read again and re-check
            try:
                current, version = self._read(self._key(request_id))
            except FileNotFoundError:
                raise KeyError(f"benchmark request {request_id!r} not found") from None
            if status not in TRANSITIONS.get(current.status, ()):
                allowed = ", ".join(TRANSITIONS.get(current.status, ())) or "none (final)"
                raise InvalidTransition(f"benchmark request {request_id}: cannot go from "
                                        f"{current.status} to {status} (allowed: {allowed})")
            updated = replace(current, status=status,
                              reason=reason if reason is not None else current.reason,
                              details={**current.details, **(details or {})}, updated_at=_now())
            try:
                self._put(updated, if_match=version)
                return updated
            except Conflict:
                continue
        raise StoreError(f"benchmark request {request_id}: kept changing under us; try again")


def _new_request(model: str, matrix_overrides: dict[str, Any] | None,
                 requested_by: str | None) -> BenchmarkRequest:
    """A new pending request (both stores create them the same way)."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError("model: must be a non-empty string (an HF id or a local path)")
    now = _now()
    return BenchmarkRequest(id=f"br-{uuid.uuid4().hex[:16]}", model=model.strip(),
                            status="pending", matrix_overrides=dict(matrix_overrides or {}),
                            requested_by=requested_by, created_at=now, updated_at=now)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _from_row(row: tuple) -> BenchmarkRequest:
    rid, model, overrides, status, reason, details, requested_by, created, updated = row
    details = _loads(details)
    return BenchmarkRequest(id=rid, model=model, status=status,
                            matrix_overrides=_loads(overrides), reason=reason,
                            details=details if isinstance(details, dict) else {},
                            requested_by=requested_by, created_at=created, updated_at=updated)


def _loads(text: str) -> Any:
    """Stored JSON, or the text itself when unreadable: one bad row must not break `list`
    (the sensor then rejects it: its overrides are not a mapping)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text
