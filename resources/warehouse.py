"""DuckDB over the store's Parquet: views `matrix`, `summary`, `requests`, local or on S3.

S3 reads use the httpfs extension shipped on PyPI (`duckdb-extension-httpfs`), loaded from its
file, so nothing is downloaded at run time.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import duckdb

from resources.store import ResultStore
from servecat.results import KEY_COLUMNS

GLOBS = {
    "matrix": "matrix/*.parquet",
    "summary": "runs/summary/*/*.parquet",
    "requests": "runs/requests/*/*.parquet",
}


def load_httpfs(con: duckdb.DuckDBPyConnection) -> None:
    import duckdb_extension_httpfs

    ext = next(Path(duckdb_extension_httpfs.__file__).parent.glob("extensions/*/httpfs.duckdb_extension"))
    con.execute(f"LOAD '{ext}'")


def configure_s3(con: duckdb.DuckDBPyConnection, store: ResultStore) -> None:
    """A temporary (never persisted) S3 secret from the store's S3 settings and the environment."""
    load_httpfs(con)
    opts = {"TYPE": "s3", "REGION": store.s3_region}
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        opts |= {"KEY_ID": key, "SECRET": secret}
    if store.s3_endpoint_url:
        url = urlparse(store.s3_endpoint_url)
        opts |= {"ENDPOINT": url.netloc, "URL_STYLE": "path",
                 "USE_SSL": "true" if url.scheme == "https" else "false"}
    body = ", ".join(f"{k} {v}" if k in ("TYPE", "USE_SSL") else f"{k} '{v}'"
                     for k, v in opts.items())
    con.execute(f"CREATE OR REPLACE TEMPORARY SECRET servecat_s3 ({body})")


class Warehouse(dg.ConfigurableResource):
    """A DuckDB database file holding views over the result store."""

    database: str = ".servecat/results.duckdb"

    def connect(self, store: ResultStore, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(self.database, read_only=read_only)
        if store.is_s3:
            configure_s3(con, store)
        return con


def refresh_views(con: duckdb.DuckDBPyConnection, store: ResultStore) -> dict[str, int]:
    """(Re)create one view per table over all its Parquet files; row counts by table.

    A table with no files yet becomes an empty table, so queries still run."""
    counts = {}
    for name, glob in GLOBS.items():
        # DuckDB refuses `DROP VIEW` of a table (and the reverse): drop what is there.
        for kind in con.execute("SELECT 'VIEW' FROM duckdb_views() WHERE view_name = ? UNION ALL "
                                "SELECT 'TABLE' FROM duckdb_tables() WHERE table_name = ?",
                                [name, name]).fetchall():
            con.execute(f"DROP {kind[0]} {name}")
        if store.list(glob.split("*")[0]):
            source = (f"read_parquet('{store.uri(glob)}', union_by_name = true, "
                      f"hive_partitioning = false)")
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM {source}")
        else:
            columns = ", ".join(f"{c} VARCHAR" for c in KEY_COLUMNS)
            con.execute(f"CREATE TABLE {name} ({columns})")
        counts[name] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    return counts
