"""Immutable catalog snapshots under a store root, and a pointer to the newest one.

    catalog/snapshots/<id>.parquet          one per write, never modified: the per-config rows
    catalog/snapshots/<id>.<table>.parquet  its side tables (deployments, levels), same id
    catalog/model_catalog.parquet           a copy of the newest (what DESIGN.md's layout names)
    catalog/model_catalog.<table>.parquet   copies of the newest side tables
    catalog/LATEST.json                     {"snapshot": id, "key": ..., "tables": {...}, ...}

Side tables are written before the file that names them, and the pointer is replaced last and
atomically, so a reader following it always finds a complete snapshot. A snapshot written before
side tables existed loads with none (`Snapshot.tables` empty).
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from catalog import store

SNAPSHOT_DIR = "catalog/snapshots"
CATALOG_KEY = "catalog/model_catalog.parquet"
POINTER_KEY = "catalog/LATEST.json"
META_KEY = b"servecat"

HOW_TO_BUILD = ("build one: materialize the `model_catalog` Dagster asset (`make demo` does), "
                "or call catalog.snapshots.write_snapshot(catalog.build_catalog(...), STORE)")
REBUILD = ("rebuild it: `dagster asset materialize --select model_catalog` (or `make demo`)")


class NoCatalogError(FileNotFoundError):
    """The store root holds no catalog snapshot yet."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One loaded snapshot: its id, the catalog rows, its side tables by name, and the profiles
    and hardware it was built with."""

    id: str
    created_at: str
    frame: pd.DataFrame
    profiles: list[dict[str, Any]] = field(default_factory=list)
    hardware: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def new_snapshot_id() -> str:
    """Sortable by time: 20261123T175221123456Z-1a2b3c4d."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"


def to_parquet_bytes(df: pd.DataFrame, meta: dict[str, Any]) -> bytes:
    """DF as Parquet, with META as JSON under the `servecat` schema metadata key."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           META_KEY: json.dumps(meta).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def write_snapshot(df: pd.DataFrame, root: str | Path,
                   tables: Mapping[str, pd.DataFrame] | None = None) -> str:
    """Write DF (and TABLES beside it) as a new immutable snapshot, refresh the model_catalog
    copies, then move the pointer. Returns the snapshot's path.

    Profiles and hardware in df.attrs (set by build_catalog) travel in the file's metadata.
    """
    tables = dict(tables or {})
    for name in tables:
        if not name.isidentifier():
            raise ValueError(f"snapshot table name {name!r} is not an identifier")
    snapshot_id = new_snapshot_id()
    created_at = datetime.now(UTC).isoformat()
    key = f"{SNAPSHOT_DIR}/{snapshot_id}.parquet"
    side = {name: table_key(key, name) for name in tables}
    for name, table in tables.items():  # before the file that names them
        data = to_parquet_bytes(table, {"snapshot": snapshot_id, "table": name})
        store.write_atomic(root, side[name], data)
        store.write_atomic(root, table_key(CATALOG_KEY, name), data)
    meta = {"snapshot": snapshot_id, "created_at": created_at, "rows": len(df),
            "profiles": df.attrs.get("profiles", []), "hardware": df.attrs.get("hardware", []),
            "tables": sorted(tables)}
    data = to_parquet_bytes(df, meta)
    path = store.write_atomic(root, key, data)
    store.write_atomic(root, CATALOG_KEY, data)
    pointer = {"snapshot": snapshot_id, "key": key, "created_at": created_at, "rows": len(df),
               "tables": side}
    store.write_atomic(root, POINTER_KEY, json.dumps(pointer).encode())
    return path


def table_key(key: str, name: str) -> str:
    """Where side table NAME of the snapshot file at KEY lives: `<stem>.<name>.parquet`."""
    return f"{key.removesuffix('.parquet')}.{name}.parquet"


def read_pointer(root: str | Path) -> dict[str, Any] | None:
    """The pointer's content, or None when no snapshot was written yet."""
    try:
        return json.loads(store.read_bytes(root, POINTER_KEY))
    except FileNotFoundError:
        return None


def latest_id(root: str | Path) -> str | None:
    """The newest snapshot's id (a cheap read of the pointer), or None."""
    pointer = read_pointer(root)
    return None if pointer is None else pointer["snapshot"]


def load_snapshot(root: str | Path, key: str) -> Snapshot:
    """Load the snapshot stored at KEY under ROOT, with the side tables its metadata names."""
    table = pq.read_table(io.BytesIO(store.read_bytes(root, key)))
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    tables = {name: pq.read_table(io.BytesIO(store.read_bytes(root, table_key(key, name))))
              .to_pandas() for name in meta.get("tables", [])}
    return Snapshot(id=meta.get("snapshot", Path(key).stem), created_at=meta.get("created_at", ""),
                    frame=table.to_pandas(), profiles=meta.get("profiles", []),
                    hardware=meta.get("hardware", []), tables=tables)


def load_latest(root: str | Path) -> Snapshot:
    """The newest snapshot under ROOT; NoCatalogError (saying how to build one) when there is none."""
    pointer = read_pointer(root)
    if pointer is None:
        raise NoCatalogError(f"no catalog snapshot under {store.local_path(root, 'catalog')}; {HOW_TO_BUILD}")
    return load_snapshot(root, pointer["key"])
