"""`servecat results sql|shell`: DuckDB over the result store, local or S3.

The views are made afresh in an in-memory database on every call (resources/warehouse.py's
`refresh_views`, with `configure_s3` for an s3:// store), so a query works wherever the store
is and never waits on the lock of `.servecat/results.duckdb` that a Dagster run may hold.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

import click

from cli.commands.results_output import FORMATS, render

if TYPE_CHECKING:
    import duckdb

PROMPT, MORE = "servecat> ", "      ...> "


def _store_default() -> str:
    return os.environ.get("SERVECAT_STORE") or ".servecat/store"


STORE = click.option("--store", default=_store_default, show_default="SERVECAT_STORE or .servecat/store",
                     help="Store root: a folder or s3://bucket/prefix (endpoint from "
                          "SERVECAT_S3_ENDPOINT_URL or AWS_ENDPOINT_URL, keys from AWS_*).")
FORMAT = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
                      show_default=True)


@click.group()
def results() -> None:
    """Query the results with DuckDB: views `matrix`, `summary`, `requests` over the store."""


@results.command("sql")
@click.argument("query")
@STORE
@FORMAT
def sql(query: str, store: str, fmt: str) -> None:
    """Run QUERY (e.g. "SELECT deployment, count(*) FROM summary GROUP BY 1") and print its rows."""
    import duckdb

    con, _ = _connect(store)
    try:
        click.echo(_run(con, query, fmt))
    except duckdb.Error as exc:
        raise click.ClickException(f"query failed: {_one_line(exc)}") from None


@results.command("shell")
@STORE
@FORMAT
def shell(store: str, fmt: str) -> None:
    """An interactive SQL prompt over the views; end a query with `;`, `.tables` lists the
    views, `.quit` (or end of input) leaves."""
    import duckdb

    con, counts = _connect(store)
    tty = sys.stdin.isatty()
    if tty:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing and history for input()
        click.echo(f"store {store}: " + ", ".join(f"{k} ({n} rows)" for k, n in counts.items())
                   + ". End a query with ';'; .tables, .quit.")
    buf: list[str] = []
    while True:
        try:
            line = input((MORE if buf else PROMPT) if tty else "")
        except EOFError:
            break
        if not buf and line.strip() in (".quit", ".exit"):
            break
        if not buf and line.strip() == ".tables":
            click.echo("  ".join(counts))
            continue
        buf.append(line)
        if not line.rstrip().endswith(";"):
            continue
        query, buf = "\n".join(buf), []
        try:
            text = _run(con, query, fmt)
        except duckdb.Error as exc:
            click.echo(f"Error: {_one_line(exc)}", err=True)
            continue
        if text:
            click.echo(text)
    if "".join(buf).strip():
        click.echo("Error: the last query has no closing ';' and was not run", err=True)


def _connect(root: str) -> tuple[duckdb.DuckDBPyConnection, dict[str, int]]:
    """An in-memory DuckDB with the store's views, and their row counts."""
    import duckdb

    from resources.store import ResultStore, StoreError
    from resources.warehouse import configure_s3, refresh_views

    store = ResultStore(root=root, s3_endpoint_url=os.environ.get("SERVECAT_S3_ENDPOINT_URL")
                        or os.environ.get("AWS_ENDPOINT_URL") or "",
                        s3_region=os.environ.get("AWS_REGION")
                        or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    if not store.is_s3 and not os.path.isdir(root):
        raise click.BadParameter(f"no store at {root!r} (a folder with runs/ and matrix/; "
                                 "`make demo` writes .servecat/store)", param_hint="'--store'")
    con = duckdb.connect(":memory:")
    try:
        if store.is_s3:
            configure_s3(con, store)
        return con, refresh_views(con, store)
    except (StoreError, duckdb.Error, OSError) as exc:
        raise click.ClickException(f"cannot read the store {root}: {_one_line(exc)}") from None


def _run(con: duckdb.DuckDBPyConnection, query: str, fmt: str) -> str:
    """QUERY's rows rendered in FMT; '' for a statement that returns none."""
    rel = con.sql(query)
    if rel is None:
        return ""
    return render(rel.columns, rel.fetchall(), fmt)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
