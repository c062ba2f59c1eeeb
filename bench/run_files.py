"""Reading a deployment's configs from the store and writing its workload outcomes."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from bench.deployment_run import DONE_STATUSES, Outcome
from bench.schema import summary_schema
from bench.server_metrics import SERVER_COLUMNS
from servecat.results import GPU_FIELDS
from servecat.store import requests_path, summary_path


class ParquetStore(Protocol):
    """What these functions need of the result store (resources.store.ResultStore has it)."""

    def read_parquet(self, relpath: str) -> pa.Table: ...
    def write_parquet(self, relpath: str, table: pa.Table) -> str: ...
    def list(self, prefix: str) -> list[str]: ...
    def exists(self, relpath: str) -> bool: ...


STATUS_FIELDS = [pa.field("status", pa.string()), pa.field("status_reason", pa.string()),
                 pa.field("measured_at", pa.string()), pa.field("wall_s", pa.float64())]
# What a target reports about itself (Target.info), kept beside every summary row.
TARGET_FIELDS = [pa.field("target_cold_start_s", pa.float64()),
                 pa.field("target_cost_usd_per_hour", pa.float64()),
                 pa.field("target_engine_version", pa.string()),
                 # What the host measured on (servecat.host_check.provenance).
                 pa.field("target_gpu_name", pa.string()),
                 pa.field("target_gpu_count", pa.int64()),
                 pa.field("target_gpu_memory_mib", pa.float64()),
                 pa.field("target_driver_version", pa.string()),
                 pa.field("target_cuda_version", pa.string())]
SERVER_FIELDS = [pa.field(name, pa.float64()) for name in SERVER_COLUMNS]


def deployment_configs(store: ParquetStore, deployment: str) -> tuple[list[dict], pa.Schema]:
    """The configs of DEPLOYMENT from every matrix in the store, in sweep order."""
    rows: dict[str, dict] = {}
    schema = None
    for path in store.list("matrix/"):
        table = store.read_parquet(path)
        table = table.filter(pc.equal(table["deployment"], deployment))
        if table.num_rows:
            schema = schema or table.schema
            for row in table.to_pylist():
                rows.setdefault(row["config_id"], row)
    if not rows:
        raise LookupError(f"deployment {deployment!r} is in no matrix under {store.uri('matrix/')}:"
                          f" materialize benchmark_matrix first")
    return sorted(rows.values(), key=lambda r: r["workload_index"]), _plain(schema)


def _plain(schema: pa.Schema) -> pa.Schema:
    """Dictionary-encoded matrix columns as plain strings, so every summary file agrees; a
    column null in every matrix row (`rate` when every load is a search) as float64, since a
    search's probes fill it."""
    return pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type)
                               else pa.float64() if pa.types.is_null(f.type)
                               else f.type) for f in schema])


def finished(store: ParquetStore, deployment: str, measured_since: str | None = None) -> set[str]:
    """config_ids of the deployment that are measured or skipped (a failed one runs again);
    with MEASURED_SINCE (an ISO time), only those measured at or after it."""
    since = datetime.fromisoformat(measured_since) if measured_since else None
    done = set()
    for path in store.list(f"runs/summary/deployment={deployment}/"):
        table = store.read_parquet(path).select(["config_id", "status", "measured_at"])
        done |= {r["config_id"] for r in table.to_pylist() if r["status"] in DONE_STATUSES
                 and (since is None or datetime.fromisoformat(r["measured_at"]) >= since)}
    return done


def outcome_schema(matrix_schema: pa.Schema, profile_names: list[str]) -> pa.Schema:
    metrics = summary_schema(profile_names)
    return pa.schema([*matrix_schema, *STATUS_FIELDS, *TARGET_FIELDS, *SERVER_FIELDS, *GPU_FIELDS,
                      *[f for f in metrics if f.name not in matrix_schema.names]])


def write_outcome(store: ParquetStore, outcome: Outcome, schema: pa.Schema) -> str:
    """Requests first, then the summary: a summary file means the workload is finished."""
    c = outcome.config
    if outcome.requests is not None:
        n = outcome.requests.num_rows
        ids = {k: pa.array([c[k]] * n, pa.string())
               for k in ("config_id", "deployment", "workload_id")}
        table = outcome.requests
        for i, (name, arr) in enumerate(ids.items()):
            table = table.add_column(i, name, arr)
        store.write_parquet(requests_path(c["deployment"], c["workload_id"]), table)
    row = outcome.summary_row()
    summary = pa.Table.from_pylist([{f.name: row.get(f.name) for f in schema}], schema=schema)
    return store.write_parquet(summary_path(c["deployment"], c["workload_id"]), summary)
